"""CSV data files: the dialect, the header and which columns are what (numpy only).

``read_table(path, columns)`` reads a ``.csv`` into a ``Table``: the feature values
``[rows, F]``, and the raw text of the sequence and label columns, with each row's line
in the file (docs/DESIGN.md, "Data files"):

- the file is UTF-8 (a byte-order mark is dropped), at most ``MAX_CSV_BYTES``, a regular
  file (not a device or FIFO); a field longer than the ``csv`` module's limit is an error;
- the delimiter is sniffed: tab or semicolon when one occurs the same number of times on
  each of the first lines (outside quotes), else comma; in a semicolon or tab file a
  decimal comma (``0,5``) reads as ``0.5``;
- a first row of numbers only is data (the columns are then ``f0..fN``), else a header;
  names are trimmed, quotes removed, and matched case-insensitively;
- features: the ``Columns.features`` named, in that order; by default every numeric
  column except the sequence and label columns and the time-like ones (named
  ``TIME_NAMES``, or strictly increasing within every sequence), which are dropped with a
  log line naming them. A column is numeric when its first row holds a number.

Every problem is one ``DataError`` line naming the file, the line or column and what to
change; the columns found are listed where a column is missing.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.errors import DataError

log = logging.getLogger(__name__)

MAX_CSV_BYTES = 256 << 20
DELIMITERS = ("\t", ";", ",")  # in order of preference when several fit
TIME_NAMES = frozenset({"time", "timestamp", "millis", "ms", "t"})
MIN_RISING_PAIRS = 4  # a strictly increasing column must rise at least this often to be time-like
_SNIFF_LINES = 5
_NAMES = {"\t": "tab", ";": "semicolon", ",": "comma"}


@dataclass(frozen=True)
class Columns:
    """Which columns are what. ``features`` empty: every numeric column but the sequence,
    label and time-like ones. A ``sequence`` other than the default must exist."""

    features: tuple[str, ...] = ()
    label: str = "label"
    sequence: str = "sequence"


@dataclass(frozen=True)
class Table:
    """``values`` ``[rows, F]`` float32 of the ``feature_names`` columns; ``sequence`` and
    ``labels`` the raw text of those columns per row (None without the column);
    ``lines[r]`` the file line of row r; ``names`` every column of the file."""

    names: tuple[str, ...]
    feature_names: tuple[str, ...]
    values: np.ndarray
    sequence: list[str] | None
    labels: list[str] | None
    lines: list[int]
    label_name: str | None


def read_capped(path: Path, limit: int) -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes (``DataError``
    for a missing file, a folder, a device such as ``/dev/zero``, a FIFO, a larger file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block
    except FileNotFoundError:
        raise DataError(f"data file {path} does not exist") from None
    except OSError as e:
        raise DataError(f"cannot read data file {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise DataError(f"{path} is a folder, not a data file")
        if not stat.S_ISREG(st.st_mode):
            raise DataError(f"{path} is not a regular file (a device, FIFO or socket): give a .csv or .npz file")
        if st.st_size > limit:
            raise DataError(f"{path} is {st.st_size} bytes, more than the {limit} a data file may have")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise DataError(f"{path} grew past the {limit} bytes a data file may have while being read")
    return data


def find_column(names: tuple[str, ...], wanted: str) -> int | None:
    """Index of ``wanted`` in ``names``, case-insensitively; None if absent."""
    key = wanted.strip().casefold()
    for i, n in enumerate(names):
        if n.casefold() == key:
            return i
    return None


def found(names: tuple[str, ...]) -> str:
    return f"columns found: {', '.join(names) or 'none'}"


def read_table(path: Path, columns: Columns) -> Table:
    text = _decode(path, read_capped(path, MAX_CSV_BYTES))
    delimiter = sniff_delimiter(text)
    number = _number_reader(delimiter)
    names, rows, headerless = _names_and_rows(path, text, delimiter, number, columns)
    seq_col = _role(path, names, columns.sequence, "sequence", default="sequence")
    lab_col = _role(path, names, columns.label, "label", default="label")
    if headerless and columns.features:  # no names: the features in order
        feat_cols, feature_names = list(range(len(names))), tuple(columns.features)
    else:
        feat_cols = _feature_columns(path, names, columns, (seq_col, lab_col), rows[0][1], number)
        feature_names = ()
    where = f"{_NAMES[delimiter]}-separated, like the {'first row' if headerless else 'header'}"
    values = _values(path, rows, names, feat_cols, number, where)
    lines = [line for line, _ in rows]
    _check_finite(path, values, lines, [names[c] for c in feat_cols])
    seq = [row[seq_col].strip() for _, row in rows] if seq_col is not None else None
    if not columns.features:
        keep = _not_rising(path, names, feat_cols, values, seq)
        feat_cols, values = [feat_cols[k] for k in keep], values[:, keep]
    return Table(names=names, feature_names=feature_names or tuple(names[c] for c in feat_cols), values=values,
                 sequence=seq, labels=[row[lab_col].strip() for _, row in rows] if lab_col is not None else None,
                 lines=lines, label_name=names[lab_col] if lab_col is not None else None)


def _names_and_rows(path: Path, text: str, delimiter: str, number, columns: Columns):
    """``(column names, [(line, fields)] of the data rows, headerless)``."""
    rows = _rows(path, text, delimiter)
    if not rows:
        raise DataError(f"{path}: empty CSV file")
    first_line, first = rows[0]
    if all(number(c) is not None for c in first):
        names = tuple(f"f{i}" for i in range(len(first)))
        if columns.features and len(columns.features) != len(names):
            raise DataError(f"{path}: {len(names)} columns and no header row, for {len(columns.features)} "
                            f"features ({', '.join(columns.features)}); add a header row naming the columns")
        return names, rows, True
    if len(rows) == 1:
        raise DataError(f"{path}: CSV has a header but no rows")
    return _header(path, first_line, first), rows[1:], False


def _values(path: Path, rows: list, names: tuple[str, ...], cols: list[int], number, where: str) -> np.ndarray:
    """``[rows, len(cols)]`` float32 of those columns; a short row or a non-number names its line."""
    for line, row in rows:
        if len(row) != len(names):
            raise DataError(f"{path}:{line}: {len(row)} fields, expected {len(names)} ({where})")
    values = np.empty((len(rows), len(cols)), np.float32)
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused by _check_finite
        for k, c in enumerate(cols):
            _column(path, rows, names, c, number, values[:, k])
    return values


def _column(path: Path, rows: list, names: tuple[str, ...], c: int, number, out: np.ndarray) -> None:
    """Column ``c`` of every row into ``out`` ``[rows]``."""
    column = [row[c] for _, row in rows]
    try:  # numpy parses a column in one call; a value it refuses is found below, by line
        out[:] = np.array(column if number("0,5") is None else [_point(v) for v in column], np.float64)
        return
    except ValueError:
        pass
    for r, v in enumerate(column):
        x = number(v)
        if x is None:
            raise DataError(f"{path}:{rows[r][0]}: non-numeric value {_shown(v)} in column {names[c]!r} "
                            f"(features must be numbers; choose the columns with [data] features)")
        out[r] = x


def _point(v: str) -> str:
    """A decimal comma as a point (``"0,5"`` -> ``"0.5"``), as ``_number_reader`` reads it."""
    return v.replace(",", ".", 1) if "," in v and "." not in v else v


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}); save the file as UTF-8 CSV") from None


def sniff_delimiter(text: str) -> str:
    """The first of tab, semicolon, comma that occurs (outside quotes) on the first
    non-blank line as often as on most of the next few; else the most frequent there;
    else comma."""
    lines = [ln for ln in text.splitlines()[:50] if ln.strip()][:_SNIFF_LINES]
    if not lines:
        return ","
    counts = [{d: _count_outside_quotes(ln, d) for d in DELIMITERS} for ln in lines]
    for d in DELIMITERS:
        first = counts[0][d]
        if first and 2 * sum(c[d] == first for c in counts) > len(counts):
            return d
    best = max(DELIMITERS, key=lambda d: counts[0][d])
    return best if counts[0][best] else ","


def _count_outside_quotes(line: str, ch: str) -> int:
    n, quoted = 0, False
    for c in line:
        if c == '"':
            quoted = not quoted
        elif c == ch and not quoted:
            n += 1
    return n


def _number_reader(delimiter: str):
    def number(s: str) -> float | None:
        s = s.strip()
        if delimiter != ",":
            s = _point(s)
        try:
            return float(s)
        except ValueError:
            return None
    return number


def _rows(path: Path, text: str, delimiter: str) -> list[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows = []
    try:
        for row in reader:
            if row and (len(row) > 1 or row[0].strip()) and "".join(row).strip():
                rows.append((reader.line_num, row))
    except csv.Error as e:
        line = reader.line_num
        if "field larger" in str(e):
            raise DataError(f"{path}:{line}: a field is longer than {csv.field_size_limit()} characters "
                            f"(each field must be one value)") from None
        raise DataError(f"{path}:{line}: not a readable CSV row ({e})") from None
    return rows


def _header(path: Path, line: int, row: list[str]) -> tuple[str, ...]:
    names = tuple(c.strip() or f"column{i + 1}" for i, c in enumerate(row))
    seen: dict[str, str] = {}
    for i, n in enumerate(names):
        if not n.isprintable():
            raise DataError(f"{path}:{line}: the name of column {i + 1}, {n!r}, holds a control character; "
                            f"a column name is one printable line")
        if n.casefold() in seen:
            raise DataError(f"{path}:{line}: columns {seen[n.casefold()]!r} and {n!r} have the same name "
                            f"(names are case-insensitive); rename one")
        seen[n.casefold()] = n
    return names


def _role(path: Path, names: tuple[str, ...], wanted: str, role: str, default: str) -> int | None:
    """The column of the sequence or label role; a name other than the default must exist."""
    i = find_column(names, wanted)
    if i is None and wanted.casefold() != default:
        raise DataError(f"{path}: no {role} column {wanted!r} ({found(names)}); "
                        f"name it with [data] {role}_column")
    return i


def _feature_columns(path: Path, names: tuple[str, ...], columns: Columns, roles: tuple,
                     first: list[str], number) -> list[int]:
    if columns.features:
        cols = []
        for want in columns.features:
            i = find_column(names, want)
            if i is None:
                raise DataError(f"{path}: no column {want!r} for the feature {want!r} ({found(names)}); "
                                f"fix [data] features or --features")
            if i in roles:
                raise DataError(f"{path}: column {names[i]!r} is the sequence or label column, not a feature")
            cols.append(i)
        return cols
    others = [i for i in range(len(names)) if i not in roles]
    timed = [i for i in others if names[i].casefold() in TIME_NAMES]
    if timed:
        log.info("%s: column(s) %s look like time and are not features (list the features in "
                 "[data] features to keep them)", path, ", ".join(names[i] for i in timed))
    text = [i for i in others if i not in timed and number(first[i]) is None] if len(first) == len(names) else []
    if text:
        log.warning("%s: column(s) %s are not numeric and are not features", path,
                    ", ".join(names[i] for i in text))
    cols = [i for i in others if i not in timed and i not in text]
    if not cols:
        raise DataError(f"{path}: no feature columns ({found(names)}); name them with [data] features")
    return cols


def _not_rising(path: Path, names: tuple[str, ...], cols: list[int], values: np.ndarray,
               seq: list[str] | None) -> list[int]:
    """Positions k of ``cols`` (``values[:, k]``) that do not rise strictly within every
    sequence (a clock or a counter does)."""
    everything = list(range(len(cols)))
    if seq is None:
        same = np.ones(len(values) - 1, bool)
    else:
        ids = np.asarray(seq, dtype=object)
        same = ids[1:] == ids[:-1]
    if int(same.sum()) < MIN_RISING_PAIRS:
        return everything
    rising = [k for k in everything if np.all(np.diff(values[:, k])[same] > 0)]
    if not rising:
        return everything
    if len(rising) == len(cols):  # nothing else to learn from: they must be the features
        return everything
    log.info("%s: column(s) %s rise at every row, like a clock, and are not features (list the "
             "features in [data] features to keep them)", path, ", ".join(names[cols[k]] for k in rising))
    return [k for k in everything if k not in rising]


def _check_finite(path: Path, values: np.ndarray, lines: list[int], names: list[str]) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        r, k = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{path}:{lines[r]}: column {names[k]!r} is {values[r, k]} "
                        f"({int(bad.sum())} NaN/Inf value(s) in all); every feature value must be finite")


def _shown(s: str) -> str:
    s = s.strip()
    return repr(s if len(s) <= 40 else s[:40] + "...")
