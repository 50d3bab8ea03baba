"""The ``text`` wire protocol (docs/PROTOCOL.md): one line in, one event out, no I/O.

What an Arduino ``Serial.println`` sketch sends: one sample per line, values separated
by any run of commas, spaces or tabs (``0.1,0.2,0.3``), or ``name:value`` pairs in any
order (``ax:0.1 ay:0.2 az:0.3``). A header line naming every feature once
(``az,ax,ay``) sets the column order of the plain lines that follow; other names in it
(``millis,ax,ay,az``) are numeric columns those lines carry and the parser skips. Lines
starting with ``#`` are comments, except ``#reset``, which starts a new sequence. Blank lines
are ignored.

``TextParser.parse_line(line)`` takes one line without its ``\\n`` (a trailing ``\\r``
is dropped) and returns a ``Sample``, ``Reset``, ``Header``, ``Comment`` or ``None``
(blank), or raises ``FrameError`` with one of the reasons in ``REASONS``.

``Sample`` and ``Reset`` are the protocol-neutral events of ``runtime.events``; the
``cobs`` protocol delivers the same ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from runtime.errors import FrameError
from runtime.events import Reset, Sample

MAX_LINE = 1024  # bytes of one line, its "\n" / "\r\n" excluded
REASONS = ("not_numeric", "field_count", "non_finite", "line_too_long", "unknown_name", "bad_encoding")

# No regular expression touches a line: every step below is one pass over it (linear
# time, whatever the bytes). A number is a token made only of these characters that
# Python's float() accepts, i.e. [+-](digits[.digits]|.digits)[(e|E)[+-]digits].
_NUMBER_CHARS = "0123456789+-.eE"
_NOT_NUMBER = str.maketrans("", "", _NUMBER_CHARS)
_NUMERIC_ROW_BYTES = (_NUMBER_CHARS + ", \t").encode()  # what the shortcut's lines are made of
_TO_SPACE = str.maketrans(",\t", "  ")
_NON_FINITE_WORDS = frozenset(("nan", "inf", "infinity"))
FLOAT32_OVERFLOW = 3.4028235677973366e38  # FLT_MAX + half an ulp: |v| >= this rounds to inf


@dataclass(frozen=True)
class Header:
    """A header line: the feature names in the order the following lines use."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class Comment:
    """A ``#`` line other than ``#reset`` (text after the ``#``)."""

    text: str


Event = Union[Sample, Reset, Header, Comment]


@dataclass
class TextParser:
    """Parses text lines for a model whose input features are ``feature_names``.

    Stateful only in the columns, which a header line changes; until then they are the
    features in manifest order. ``order``: per column, the feature it holds (-1: a
    column the header named that is no feature, skipped).
    """

    feature_names: Sequence[str]
    max_line: int = MAX_LINE
    order: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.feature_names = tuple(self.feature_names)
        if not self.feature_names:
            raise ValueError("the text protocol needs at least one feature name")
        if len(set(self.feature_names)) != len(self.feature_names):
            raise ValueError(f"duplicate feature names: {self.feature_names}")
        self._index = {name: i for i, name in enumerate(self.feature_names)}
        self.order = tuple(range(len(self.feature_names)))
        self._permutation: list[int] | None = None  # per feature its column, when a header changed them

    @property
    def features(self) -> int:
        return len(self.feature_names)

    def parse_line(self, line: bytes, received: float = 0.0) -> Optional[Event]:
        """One line (no ``\\n``) -> event, ``None`` for a blank line; raises ``FrameError``.
        ``received`` goes into a ``Sample`` or ``Reset``."""
        body = line[:-1] if line.endswith(b"\r") else line
        if len(line) <= self.max_line and not body.translate(None, _NUMERIC_ROW_BYTES):
            values = self._numeric_row(body)
            if values is not None:
                return Sample(values, None, received)
        return self.parse_text(line, received)

    def _numeric_row(self, body: bytes) -> Optional[np.ndarray]:
        """A line of number characters and separators only -> its values; ``None``
        where the general path must decide (no number, another field count, a value
        beyond float32)."""
        tokens = body.replace(b",", b" ").split()
        if len(tokens) != len(self.order):
            return None
        try:
            values = [float(t) for t in tokens]
        except ValueError:
            return None
        for v in values:
            if v >= FLOAT32_OVERFLOW or v <= -FLOAT32_OVERFLOW:
                return None
        if self._permutation is None:
            return np.array(values, np.float32)
        return np.array([values[c] for c in self._permutation], np.float32)

    def parse_text(self, line: bytes, received: float = 0.0) -> Optional[Event]:
        """``parse_line`` without its shortcut for plain numeric lines (same results)."""
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.max_line:
            raise FrameError("line_too_long", f"{len(line)} bytes, at most {self.max_line}")
        try:
            text = line.decode("utf-8").strip(" \t")
        except UnicodeDecodeError as e:
            raise FrameError("bad_encoding", f"not UTF-8 at byte {e.start}") from None
        if not text:
            return None
        if text.startswith("#"):
            body = text[1:].strip()
            return Reset(None, received) if body.lower() == "reset" else Comment(body)
        if ":" in text:  # "ax : 1" -> "ax:1"; text has no blanks at either end
            text = ":".join(part.strip(" \t") for part in text.split(":"))
        tokens = [t for t in text.translate(_TO_SPACE).split(" ") if t]
        if any(":" in t for t in tokens):
            return Sample(self._pairs(tokens), None, received)
        if all(_as_number(t) is not None for t in tokens):
            return Sample(self._columns(tokens), None, received)
        return self._header_or_reject(tokens)

    def _columns(self, tokens: list[str]) -> np.ndarray:
        if len(tokens) != len(self.order):
            raise FrameError("field_count", f"{len(tokens)} values, expected {len(self.order)}")
        values = np.empty(self.features, dtype=np.float64)
        for feature, token in zip(self.order, tokens):
            if feature >= 0:
                values[feature] = float(token)
        return _finite32(values)

    def _pairs(self, tokens: list[str]) -> np.ndarray:
        values = np.empty(self.features, dtype=np.float64)
        seen: set[str] = set()
        for token in tokens:
            name, sep, value = token.partition(":")
            if not sep or not name:
                raise FrameError("field_count", f"{token!r} is not a name:value pair")
            if name not in self._index:
                raise FrameError("unknown_name", f"{name!r} is not one of {', '.join(self.feature_names)}")
            if name in seen:
                raise FrameError("field_count", f"{name!r} given twice")
            values[self._index[name]] = _number(value)
            seen.add(name)
        if len(seen) != self.features:
            missing = [n for n in self.feature_names if n not in seen]
            raise FrameError("field_count", f"missing {', '.join(missing)}")
        return _finite32(values)

    def _header_or_reject(self, tokens: list[str]) -> Header:
        """Tokens that are not all numbers: a header (every token a name, at least one of
        them a feature), or the reason they are rejected."""
        if any(t in self._index for t in tokens) and not any(
                _as_number(t) is not None or _is_non_finite(t) for t in tokens):
            missing = [n for n in self.feature_names if n not in tokens]
            twice = sorted({t for t in tokens if tokens.count(t) > 1})
            if missing or twice:
                raise FrameError("field_count", f"header lacks {', '.join(missing)}" if missing
                                 else f"header names {', '.join(twice)} twice")
            self.order = tuple(self._index.get(t, -1) for t in tokens)
            plain = self.order == tuple(range(self.features))
            self._permutation = None if plain else [tokens.index(n) for n in self.feature_names]
            return Header(tuple(tokens))
        finite_or_not = [t for t in tokens if not _is_non_finite(t)]
        for token in finite_or_not:
            _number(token)  # raises not_numeric for the first token that is no number at all
        if len(tokens) != self.features:
            raise FrameError("field_count", f"{len(tokens)} values, expected {self.features}")
        bad = next(t for t in tokens if _is_non_finite(t))
        raise FrameError("non_finite", f"value {bad!r}")


def parse_lines(parser: TextParser, lines: Iterable[bytes]) -> list[Union[Event, FrameError]]:
    """Convenience for tests and replays: parse many lines, errors returned in place."""
    out: list[Union[Event, FrameError]] = []
    for line in lines:
        try:
            event = parser.parse_line(line)
        except FrameError as e:
            out.append(e)
        else:
            if event is not None:
                out.append(event)
    return out


def format_sample(values: Iterable[float]) -> bytes:
    """A sample line (``\\n`` included) whose values parse back to the same float32."""
    return (",".join(str(np.float32(v)) for v in values) + "\n").encode("ascii")


def format_prediction(outputs: Iterable[float], label: str) -> bytes:
    """The optional daemon -> device reply line: ``p=<y0>[,<y1>...] c=<label>\\n``."""
    values = ",".join(f"{float(v):.6g}" for v in outputs)
    return f"p={values} c={label}\n".encode("utf-8")


def _as_number(token: str) -> Optional[float]:
    """The value of a number token, ``None`` if ``token`` is not one."""
    if not token or token.translate(_NOT_NUMBER):
        return None
    try:
        return float(token)
    except ValueError:  # e.g. "1e", "+-1", "1.2.3"
        return None


def _is_non_finite(token: str) -> bool:
    """``nan``, ``inf`` or ``infinity``, any case, with an optional sign."""
    word = token[1:] if token[:1] in ("+", "-") else token
    return len(word) <= 8 and word.lower() in _NON_FINITE_WORDS


def _number(token: str) -> float:
    value = _as_number(token)
    if value is not None:
        return value
    if _is_non_finite(token):
        raise FrameError("non_finite", f"value {token!r}")
    shown = token if len(token) <= 20 else token[:20] + "..."
    raise FrameError("not_numeric", f"{shown!r} is not a number")


def _finite32(values: np.ndarray) -> np.ndarray:
    """``[F]`` float64 -> float32; a value beyond float32 (``1e39``) is rejected like ``inf``."""
    with np.errstate(over="ignore"):
        out = values.astype(np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        where = int(np.flatnonzero(bad)[0])
        raise FrameError("non_finite", f"feature {where} ({values[where]:g}) is not a finite float32")
    return out
