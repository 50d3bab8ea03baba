"""Reading sequence data files (numpy only: the device reads them too, for replay).

Two formats (docs/DESIGN.md, "Data files"):

- ``.npz``: ``X`` float ``[m, T, F]``; optionally ``y`` ``[m]`` (class indexes, or class
  names as strings), ``lengths`` int ``[m]`` (recording i is ``X[i, :lengths[i]]``, the
  rest padding), ``feature_names`` ``[F]`` and ``class_names`` (the name of each class
  index). Never pickled object arrays.
- ``.csv``: one sample per row (``runtime.datacsv``: dialect, header, which columns are
  features), an optional sequence column (a new value starts a new sequence) and an
  optional label column (integers or class names; a sequence's label is that of its
  last row). Without a header row the columns are features ``f0..fN``.

Class names are sorted, and a name's index is its class. Errors name the file and the
problem (``DataError``), in one line; nothing is half-read.
"""
from __future__ import annotations

import io
import logging
import math
import struct
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from runtime.datacsv import Columns, Table, find_column, found, read_capped, read_table
from runtime.errors import DataError

__all__ = ["Columns", "Sequences", "read_sequences", "MAX_CLASSES", "MAX_NPZ_BYTES"]

log = logging.getLogger(__name__)

SEQUENCE_COLUMN = "sequence"
LABEL_COLUMN = "label"
MAX_CLASSES = 4096  # class indexes are 0..MAX_CLASSES - 1
MAX_NPZ_BYTES = 1 << 30  # the file, and its arrays uncompressed


@dataclass(frozen=True)
class Sequences:
    """``X[i]`` is sequence i, ``[T_i, F]`` float32 (lengths may differ); ``y`` ``[m]``
    int64 or None; ``class_names`` the name of each class index (text labels) or None;
    ``step_labels[i]`` ``[T_i]`` int64 the label of each sample where the file has one
    per sample (a CSV label column), else None."""

    X: tuple[np.ndarray, ...]
    y: np.ndarray | None
    feature_names: tuple[str, ...]
    source: str = ""
    class_names: tuple[str, ...] | None = None
    step_labels: tuple[np.ndarray, ...] | None = None

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


def read_sequences(path, *, require_labels: bool = False, columns: Columns | None = None,
                   labels: bool = True) -> Sequences:
    """The sequences of a ``.npz`` or ``.csv`` file; ``columns`` says which are the
    features (by name, case-insensitive) and the label and sequence columns. Without
    ``labels`` the labels are left unread (``y`` None): a file streamed through a model
    needs none, so a label it cannot read does not stop it."""
    path = Path(path)
    columns = columns or Columns()
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".csv"):
        if not path.exists():
            raise DataError(f"data file {path} does not exist")
        raise DataError(f"{path}: unsupported data file type {suffix!r} (use .npz or .csv)")
    if suffix == ".npz":
        seqs = _read_npz(path, columns, labels)
        if require_labels and seqs.y is None:
            raise DataError(f"{path}: no labels (an .npz needs 'y', class indexes or names)")
        return seqs
    table = read_table(path, columns)
    if require_labels and table.labels is None:
        raise DataError(f"{path}: no label column {columns.label!r} ({found(table.names)}); "
                        f"name it with [data] label_column")
    return _from_table(path, table if labels else replace(table, labels=None))


# -- .csv ----------------------------------------------------------------------------------
def _from_table(path: Path, t: Table) -> Sequences:
    bounds = _sequence_bounds(t.sequence, len(t.lines))
    X = tuple(t.values[a:b] for a, b in bounds)
    if t.labels is None:
        return Sequences(X=X, y=None, feature_names=t.feature_names, source=str(path))
    codes, names = _label_codes(path, t.labels, t.lines, t.label_name or LABEL_COLUMN)
    steps = tuple(codes[a:b] for a, b in bounds)
    y = np.array([s[-1] for s in steps], np.int64)
    return Sequences(X=X, y=y, feature_names=t.feature_names, source=str(path), class_names=names,
                     step_labels=steps)


def _sequence_bounds(seq_ids: list[str] | None, n: int) -> list[tuple[int, int]]:
    if not seq_ids:
        return [(0, n)]
    starts = [0] + [i for i in range(1, n) if seq_ids[i] != seq_ids[i - 1]]
    return list(zip(starts, starts[1:] + [n]))


def _label_codes(path: Path, labels: list[str], lines: list[int],
                 column: str) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Per row: the class index (integer labels), or the index of the name among the
    sorted names (text labels); a mix, an empty label or a huge index is refused."""
    index_of = {s: _as_index(s) for s in set(labels)}  # a log has few distinct labels
    ints = [index_of[s] for s in labels]
    numeric = [v is not None for v in ints]
    if all(numeric):
        codes = np.array(ints, np.int64)
        bad = np.flatnonzero((codes < 0) | (codes >= MAX_CLASSES))
        if len(bad):
            r = int(bad[0])
            raise DataError(f"{path}:{lines[r]}: label {_shown(labels[r])[1:-1]} in column {column!r} is not a class index "
                            f"0..{MAX_CLASSES - 1}; use class indexes 0..N-1 or class names")
        return codes, None
    for r, s in enumerate(labels):
        if not s:
            raise DataError(f"{path}:{lines[r]}: empty label in column {column!r}; every row needs its class")
    if any(numeric):
        r = numeric.index(True) if numeric.count(True) <= numeric.count(False) else numeric.index(False)
        raise DataError(f"{path}:{lines[r]}: label {_shown(labels[r])} in column {column!r} mixes numbers and "
                        f"class names; use one or the other")
    names = tuple(sorted(set(labels)))
    if len(names) > MAX_CLASSES:
        raise DataError(f"{path}: column {column!r} holds {len(names)} class names, more than {MAX_CLASSES}")
    bad = next((n for n in names if not n.isprintable()), None)
    if bad is not None:
        r = labels.index(bad)
        raise DataError(f"{path}:{lines[r]}: label {_shown(bad)} in column {column!r} holds a control character; "
                        f"class names are one printable line")
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[s] for s in labels], np.int64), names


def _shown(s: str) -> str:
    """``repr(s)``, cut to 40 characters."""
    return repr(s if len(s) <= 40 else s[:40] + "...")


def _as_index(s: str) -> int | None:
    """``"3"`` or ``"3.0"`` -> 3; None for anything that is not an integral number."""
    try:
        v = int(s)
        return v if abs(v) < 2 ** 62 else -1
    except ValueError:
        pass
    try:
        v = float(s)
    except ValueError:
        return None
    if not math.isfinite(v) or v != round(v) or abs(v) >= 2 ** 62:
        return -1  # a number, but no class index: refused by the range check
    return int(v)


# -- .npz ----------------------------------------------------------------------------------
def _read_npz(path: Path, columns: Columns, labels: bool = True) -> Sequences:
    arrays = _npz_arrays(path)
    if "X" not in arrays:
        raise DataError(f"{path}: missing key 'X' (found: {', '.join(sorted(arrays)) or 'none'})")
    X = arrays["X"]
    if X.ndim != 3:
        raise DataError(f"{path}: X must have rank 3 [sequences, steps, features], got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number):
        raise DataError(f"{path}: X must be numeric, got dtype {X.dtype}")
    m, T, F = X.shape
    if m == 0 or T == 0 or F == 0:
        raise DataError(f"{path}: X is empty (shape {X.shape})")
    names = tuple(str(n) for n in arrays["feature_names"].reshape(-1)) if "feature_names" in arrays else None
    if names is not None and len(names) != F:
        raise DataError(f"{path}: {len(names)} feature_names for {F} features")
    names = names or tuple(f"f{i}" for i in range(F))
    X, names = _choose_npz_features(path, X, names, columns.features)
    lengths = _lengths(path, arrays.get("lengths"), m, T)
    seqs = tuple(X[i, :n].astype(np.float32) for i, n in enumerate(lengths))
    for i, x in enumerate(seqs):
        _check_finite(x, path, i)
    y, class_names = None, None
    if "y" in arrays and labels:
        y, class_names = _npz_labels(path, arrays["y"], m, arrays.get("class_names"))
    return Sequences(X=seqs, y=y, feature_names=names, source=str(path), class_names=class_names)


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    data = read_capped(path, MAX_NPZ_BYTES)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            inflated = sum(info.file_size for info in z.zip.infolist())
            if inflated > MAX_NPZ_BYTES:
                raise DataError(f"{path}: its arrays take {inflated} bytes uncompressed, more than the "
                                f"{MAX_NPZ_BYTES} allowed")
            return {k: z[k] for k in z.files}
    except DataError:
        raise
    except ValueError as e:  # object arrays need pickle: refused; or a malformed array header
        raise DataError(f"{path}: cannot read without pickle ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, AttributeError, NotImplementedError,
            RuntimeError, struct.error) as e:  # what a damaged archive raises (found by fuzzing)
        raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {e}); "
                        f"write it again with numpy.savez") from None


def _choose_npz_features(path: Path, X: np.ndarray, names: tuple[str, ...],
                         wanted: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    if not wanted:
        return X, names
    unnamed = names == tuple(f"f{i}" for i in range(len(names)))
    if unnamed and all(find_column(names, w) is None for w in wanted):  # no names in the file: positional
        if len(wanted) != len(names):
            raise DataError(f"{path}: X has {len(names)} features without names, for {len(wanted)} features "
                            f"({', '.join(wanted)}); add feature_names to the file, or give X "
                            f"{len(wanted)} features")
        return X, tuple(wanted)
    order = []
    for w in wanted:
        i = find_column(names, w)
        if i is None:
            raise DataError(f"{path}: no feature {w!r} in feature_names ({', '.join(names)})")
        order.append(i)
    return X[:, :, order], tuple(names[i] for i in order)


def _lengths(path: Path, lengths: np.ndarray | None, m: int, T: int) -> list[int]:
    if lengths is None:
        return [T] * m
    if not np.issubdtype(lengths.dtype, np.integer) or lengths.shape != (m,):
        raise DataError(f"{path}: lengths must be integers [{m}] (one per sequence of X), "
                        f"got {lengths.dtype} {list(lengths.shape)}")
    bad = np.flatnonzero((lengths < 1) | (lengths > T))
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{path}: lengths[{i}] is {int(lengths[i])}; each length must be 1..{T} (X's steps)")
    return [int(n) for n in lengths]


def _npz_labels(path: Path, y: np.ndarray, m: int,
                class_names: np.ndarray | None) -> tuple[np.ndarray, tuple[str, ...] | None]:
    if y.ndim != 1:
        raise DataError(f"{path}: y must have rank 1 [sequences], got shape {y.shape}")
    if y.shape[0] != m:
        raise DataError(f"{path}: {y.shape[0]} labels for {m} sequences in X")
    if y.dtype.kind in "US":
        text = [str(v) for v in y.astype(str)]
        names = tuple(sorted(set(text)))
        if len(names) > MAX_CLASSES:
            raise DataError(f"{path}: y holds {len(names)} class names, more than {MAX_CLASSES}")
        if not all(n.strip() and n.isprintable() for n in names):
            bad = next(n for n in names if not (n.strip() and n.isprintable()))
            raise DataError(f"{path}: class name {bad!r} in y is empty or holds a control character")
        index = {n: i for i, n in enumerate(names)}
        return np.array([index[v] for v in text], np.int64), names
    y = _check_labels(y, m, path)
    if class_names is None:
        return y, None
    names = tuple(str(n) for n in class_names.reshape(-1))
    if len(names) <= int(y.max()) or len(set(names)) != len(names) \
            or not all(n.strip() and n.isprintable() for n in names):
        raise DataError(f"{path}: class_names must be {int(y.max()) + 1} or more distinct names "
                        f"(one per class index in y), got {len(names)}")
    return y, names


def _check_finite(X: np.ndarray, path: Path, sequence: int) -> None:
    bad = ~np.isfinite(X)
    if bad.any():
        where = (sequence, *(int(i) for i in np.argwhere(bad)[0]))
        raise DataError(f"{path}: {int(bad.sum())} NaN/Inf value(s) in X, first at index {where}")


def _check_labels(y: np.ndarray, m: int, path: Path) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.number) or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
        raise DataError(f"{path}: y must hold integer class indexes (or class names)")
    if np.any(y < 0):
        raise DataError(f"{path}: y has negative class indexes")
    top = y.max() if len(y) else 0
    if top >= MAX_CLASSES:
        raise DataError(f"{path}: y has class index {int(top)}; class indexes must be "
                        f"0..N-1 (at most {MAX_CLASSES} classes)")
    return y.astype(np.int64)


def used_classes(seqs: Sequences) -> Sequences:
    """``seqs`` with only the class names that label a sequence, ``y`` renumbered to
    match (a name that labels only samples inside sequences would be a class no
    sequence has); integer labels unchanged."""
    if seqs.class_names is None or seqs.y is None:
        return seqs
    used = np.unique(seqs.y)
    if len(used) == len(seqs.class_names):
        return seqs
    unused = [n for i, n in enumerate(seqs.class_names) if i not in set(used.tolist())]
    log.warning("%s: class(es) %s label no sequence and are left out", seqs.source, ", ".join(unused))
    remap = np.full(len(seqs.class_names), -1, np.int64)
    remap[used] = np.arange(len(used))
    steps = None if seqs.step_labels is None else tuple(remap[s] for s in seqs.step_labels)
    return replace(seqs, y=remap[seqs.y], class_names=tuple(seqs.class_names[i] for i in used),
                   step_labels=steps)
