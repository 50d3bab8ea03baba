"""Reading sequence data files (numpy only: the device reads them too, for replay).

Two formats (docs/DESIGN.md, "Data files"):

- ``.npz``: ``X`` float ``[m, T, F]`` and optionally ``y`` int ``[m]`` (class index).
- ``.csv``: one sample per row, feature columns, an optional ``sequence`` column (a new
  value starts a new sequence) and an optional ``label`` column (a sequence's label is
  that of its last row). Without a header row the columns are features ``f0..fN``.

Errors name the file and the problem (``DataError``); nothing is half-read.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from runtime.errors import DataError

SEQUENCE_COLUMN = "sequence"
LABEL_COLUMN = "label"


@dataclass(frozen=True)
class Sequences:
    """``X[i]`` is sequence i, ``[T_i, F]`` float32; ``y`` ``[m]`` int64 or None."""

    X: tuple[np.ndarray, ...]
    y: np.ndarray | None
    feature_names: tuple[str, ...]
    source: str = ""

    @property
    def features(self) -> int:
        return len(self.feature_names)

    def __len__(self) -> int:
        return len(self.X)

    def lengths(self) -> set[int]:
        return {int(x.shape[0]) for x in self.X}

    def as_array(self) -> np.ndarray:
        """``[m, T, F]``; all sequences must have the same length."""
        lengths = self.lengths()
        if len(lengths) != 1:
            raise DataError(
                f"{self.source}: sequences have different lengths "
                f"({min(lengths)}..{max(lengths)}); training needs one window length"
            )
        return np.stack(self.X).astype(np.float32)

    def samples(self) -> Iterator[tuple[int, np.ndarray]]:
        """Every sample in order, as ``(sequence index, [F] float32)``."""
        for s, x in enumerate(self.X):
            for row in x:
                yield s, row


def read_sequences(path: str | os.PathLike, *, require_labels: bool = False) -> Sequences:
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        seqs = _read_npz(path)
    elif suffix == ".csv":
        seqs = _read_csv(path)
    else:
        raise DataError(f"{path}: unsupported data file type {suffix!r} (use .npz or .csv)")
    if require_labels and seqs.y is None:
        raise DataError(f"{path}: no labels (an .npz needs 'y', a .csv a 'label' column)")
    return seqs


def _read_npz(path: Path) -> Sequences:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if "X" not in keys:
                raise DataError(f"{path}: missing key 'X' (found: {', '.join(sorted(keys)) or 'none'})")
            X = z["X"]
            y = z["y"] if "y" in keys else None
            names = tuple(str(n) for n in z["feature_names"]) if "feature_names" in keys else None
    except DataError:
        raise
    except ValueError as e:  # object arrays need pickle: refused
        raise DataError(f"{path}: cannot read without pickle ({e})") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    if X.ndim != 3:
        raise DataError(f"{path}: X must have rank 3 [sequences, steps, features], got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number):
        raise DataError(f"{path}: X must be numeric, got dtype {X.dtype}")
    m, T, F = X.shape
    if m == 0 or T == 0 or F == 0:
        raise DataError(f"{path}: X is empty (shape {X.shape})")
    X = X.astype(np.float32)
    _check_finite(X, path)
    if y is not None:
        y = _check_labels(np.asarray(y), m, path)
    names = names or tuple(f"f{i}" for i in range(F))
    if len(names) != F:
        raise DataError(f"{path}: {len(names)} feature_names for {F} features")
    return Sequences(X=tuple(X), y=y, feature_names=names, source=str(path))


def _read_csv(path: Path) -> Sequences:
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text CSV file ({e})") from None
    if not rows:
        raise DataError(f"{path}: empty CSV file")
    header = [c.strip() for c in rows[0]]
    if all(_is_number(c) for c in header):
        header = [f"f{i}" for i in range(len(header))]
    else:
        rows = rows[1:]
    if not rows:
        raise DataError(f"{path}: CSV has a header but no rows")
    seq_col = header.index(SEQUENCE_COLUMN) if SEQUENCE_COLUMN in header else None
    lab_col = header.index(LABEL_COLUMN) if LABEL_COLUMN in header else None
    feat_cols = [i for i in range(len(header)) if i not in (seq_col, lab_col)]
    if not feat_cols:
        raise DataError(f"{path}: no feature columns")
    values = np.empty((len(rows), len(feat_cols)), dtype=np.float32)
    seq_ids: list[str] = []
    labels: list[str] = []
    for n, row in enumerate(rows):
        line = n + 2 if header[0] != "f0" else n + 1
        if len(row) != len(header):
            raise DataError(f"{path}:{line}: {len(row)} fields, expected {len(header)}")
        try:
            values[n] = [float(row[i]) for i in feat_cols]
        except ValueError:
            raise DataError(f"{path}:{line}: non-numeric feature value in {row!r}") from None
        if seq_col is not None:
            seq_ids.append(row[seq_col].strip())
        if lab_col is not None:
            labels.append(row[lab_col].strip())
    _check_finite(values, path)
    bounds = _sequence_bounds(seq_ids, len(rows))
    X = tuple(values[a:b] for a, b in bounds)
    y = None
    if lab_col is not None:
        try:
            last = np.array([int(float(labels[b - 1])) for _, b in bounds])
        except ValueError:
            raise DataError(f"{path}: label column must hold integer class indexes") from None
        y = _check_labels(last, len(X), path)
    return Sequences(X=X, y=y, feature_names=tuple(header[i] for i in feat_cols), source=str(path))


def _sequence_bounds(seq_ids: list[str], n: int) -> list[tuple[int, int]]:
    if not seq_ids:
        return [(0, n)]
    starts = [0] + [i for i in range(1, n) if seq_ids[i] != seq_ids[i - 1]]
    return list(zip(starts, starts[1:] + [n]))


def _check_finite(X: np.ndarray, path: Path) -> None:
    bad = ~np.isfinite(X)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{path}: {int(bad.sum())} NaN/Inf value(s) in X, first at index {where}")


def _check_labels(y: np.ndarray, m: int, path: Path) -> np.ndarray:
    if y.ndim != 1:
        raise DataError(f"{path}: y must have rank 1 [sequences], got shape {y.shape}")
    if y.shape[0] != m:
        raise DataError(f"{path}: {y.shape[0]} labels for {m} sequences in X")
    if not np.issubdtype(y.dtype, np.number) or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
        raise DataError(f"{path}: y must hold integer class indexes")
    if np.any(y < 0):
        raise DataError(f"{path}: y has negative class indexes")
    return y.astype(np.int64)


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False
