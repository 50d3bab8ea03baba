"""``stepwise replay``: stream a data file through the device engine, offline.

The same engine the daemon runs, fed from a file instead of a serial port, so its
figures are the device's figures: ``stepwise verify`` steps through ``replay()`` too.

Columns: a file's columns are the model's features by name (``runtime.datafile``,
case-insensitive; any order, other columns ignored), a feature the file lacks is an
error naming it; a file without names (no CSV header, an ``.npz`` without
``feature_names``) or a model whose features are unnamed (``f0..fN``) is taken in order.

State and sequences: without ``--reset`` the manifest's default policy applies and the
state is also reset at the start of every sequence of the file (every sequence of an
``.npz``; every new value of a ``.csv``'s ``sequence`` column). With ``--reset P`` the
file is one continuous stream and only ``P`` resets it (``--reset never``: no resets).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence, TextIO

import numpy as np

from runtime.datafile import Columns, Sequences, read_sequences
from runtime.errors import DataError
from runtime.records import prediction_record
from runtime.reset import parse_reset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayResult:
    """Per sequence i: ``y[i]`` ``[T_i, units]`` float32 and ``steps[i]`` ``[T_i]`` (steps
    since reset behind each output)."""

    y: tuple[np.ndarray, ...]
    steps: tuple[np.ndarray, ...]

    def as_array(self) -> np.ndarray:
        """``[m, T, units]``; all sequences must have the same length."""
        if len({len(v) for v in self.y}) > 1:
            raise DataError("sequences have different lengths: use .y per sequence")
        return np.stack(self.y)


def _as_sequences(data: Sequences | np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    if isinstance(data, Sequences):
        return tuple(data.X)
    if isinstance(data, np.ndarray) and data.ndim == 2:
        return (data,)
    return tuple(np.asarray(x, np.float32) for x in data)


def check_features(engine, X: tuple[np.ndarray, ...], names: tuple[str, ...] = (),
                   source: str = "input") -> tuple[np.ndarray, ...]:
    """Every sequence ``[T, F]`` with the engine's F; columns named like the manifest's
    features (case-insensitively) but in another order are put in the manifest's order;
    other names are an error naming the missing features. Unnamed columns (``f0..fN``),
    or a model with unnamed features, go in order."""
    want = tuple(engine.contract.input.feature_names)
    for i, x in enumerate(X):
        if x.ndim != 2 or x.shape[1] != engine.features:
            got = x.shape[1] if x.ndim == 2 else f"shape {list(x.shape)}"
            raise DataError(f"{source}: sequence {i} has {got} features per sample, the model "
                            f"expects {engine.features} ({', '.join(want)})")
    if not names or tuple(names) == want or _unnamed(names) or _unnamed(want):
        return X
    folded = [n.casefold() for n in names]
    if sorted(folded) == sorted(n.casefold() for n in want):
        order = [folded.index(n.casefold()) for n in want]
        if order != list(range(len(order))):
            log.info("%s: columns reordered to the manifest's feature order %s", source, list(want))
        return tuple(x[:, order] for x in X)
    missing = [n for n in want if n.casefold() not in folded]
    raise DataError(f"{source}: no column for the model's feature(s) {', '.join(missing)} (columns: "
                    f"{', '.join(names)}; the model takes {', '.join(want)})")


def _unnamed(names: Sequence[str]) -> bool:
    return tuple(names) == tuple(f"f{i}" for i in range(len(names)))


def read_for_model(path, contract) -> Sequences:
    """``path`` read with the model's features as its columns (by name, in the
    manifest's order), or in file order where the model's features are unnamed."""
    want = tuple(contract.input.feature_names)
    return read_sequences(path, columns=Columns(features=() if _unnamed(want) else want), labels=False)


def iter_replay(engine, data: Sequences | np.ndarray | Sequence[np.ndarray],
                reset_between: bool = True) -> Iterator[tuple[int, int, object]]:
    """Step ``engine`` through every sample: yields ``(sample index, sequence index,
    Prediction)``. ``reset_between`` resets the state before each sequence."""
    names = data.feature_names if isinstance(data, Sequences) else ()
    source = data.source if isinstance(data, Sequences) and data.source else "input"
    X = check_features(engine, _as_sequences(data), names, source)
    i = 0
    for s, x in enumerate(X):
        if reset_between:
            engine.reset(reason="sequence")
        for row in x:
            yield i, s, engine.step(row)
            i += 1


def replay(engine, data: Sequences | np.ndarray | Sequence[np.ndarray],
           reset_between: bool = True) -> ReplayResult:
    """All outputs of ``iter_replay`` as arrays, one per sequence."""
    X = _as_sequences(data)
    units = engine.output.units
    ys = [np.empty((len(x), units), np.float32) for x in X]
    steps = [np.empty(len(x), np.int64) for x in X]
    offsets = np.cumsum([0] + [len(x) for x in X])
    for i, s, pred in iter_replay(engine, data, reset_between):
        t = i - offsets[s]
        ys[s][t] = pred.y
        steps[s][t] = pred.step
    return ReplayResult(tuple(ys), tuple(steps))


@dataclass(frozen=True)
class ReplayOptions:
    """One ``stepwise replay`` run. ``reset``: the policy; given, the file is one stream
    reset only by it, else the manifest's policy plus a reset at every sequence."""

    artifacts: Path
    input_file: Path
    variant: str | None = None
    reset: str | None = None
    backend: str | None = None
    warmup: bool = True  # False: warm-up outputs (zero-padded windows) are left out


def run_replay(opts: ReplayOptions, out: TextIO) -> int:
    """Stream ``opts.input_file`` through the engine, one JSON record line per sample to
    ``out``; returns the sample count."""
    from runtime.engine import Engine

    if opts.reset is not None:
        parse_reset(opts.reset)  # a bad policy fails before anything is loaded
    engine = Engine.load(opts.artifacts, variant=opts.variant, reset=opts.reset, backend=opts.backend)
    data = read_for_model(opts.input_file, engine.contract)
    for i, seq, pred in iter_replay(engine, data, reset_between=opts.reset is None):
        if pred.warmup and not opts.warmup:
            continue
        out.write(json.dumps(prediction_record(i, seq, pred)) + "\n")
    out.flush()
    log.info("replayed %d samples in %d sequence(s) from %s", engine.samples_seen, len(data),
             opts.input_file)
    return engine.samples_seen
