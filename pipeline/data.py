"""Training data: the built-in synthetic set, user files, splits and normalisation.

The synthetic set has the shape people have in practice (7 samples x 3 features, label
0/1) and a label that depends on the *order* of the samples: feature 0 and feature 1
each get one bump at a random step, and the label says whether the bump in feature 0
came first. Every sequence of either class holds the same multiset of bump values, so a
model that ignores order is at chance on it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config import DataConfig
from runtime.datafile import Sequences, read_sequences
from runtime.errors import DataError


@dataclass(frozen=True)
class Split:
    """Normalised splits. ``X_*`` ``[m, T, F]`` float32 (already normalised), ``y_*`` ``[m]``."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    mean: np.ndarray  # [F] applied as (x - mean) / std by the runtime
    std: np.ndarray  # [F]
    feature_names: tuple[str, ...]
    classes: int
    source: str

    @property
    def steps(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def features(self) -> int:
        return int(self.X_train.shape[2])

    def raw(self, X: np.ndarray) -> np.ndarray:
        """Undo the normalisation: what the device receives from the sensor."""
        return (X * self.std + self.mean).astype(np.float32)


def synthetic(cfg: DataConfig) -> Sequences:
    """``cfg.sequences`` order-dependent sequences ``[T, F]`` with labels 0/1."""
    if cfg.steps < 2 or cfg.features < 2:
        raise DataError("the synthetic set needs at least 2 steps and 2 features")
    rng = np.random.default_rng(cfg.seed)
    m, T, F = cfg.sequences, cfg.steps, cfg.features
    X = rng.normal(0.0, cfg.noise, size=(m, T, F)).astype(np.float32)
    X += np.linspace(-0.2, 0.2, F, dtype=np.float32)  # per-feature offsets: normalisation matters
    first = rng.integers(0, T, size=m)
    second = (first + rng.integers(1, T, size=m)) % T  # a different step
    rows = np.arange(m)
    X[rows, first, 0] += 2.0
    X[rows, second, 1] += 2.0
    y = (first < second).astype(np.int64)
    names = tuple(["ax", "ay", "az"][:F] if F <= 3 else [f"f{i}" for i in range(F)])
    return Sequences(X=tuple(X), y=y, feature_names=names, source="synthetic")


def load_training_data(path: str | None, cfg: DataConfig) -> Sequences:
    if path is None:
        return synthetic(cfg)
    return read_sequences(path, require_labels=True)


def split(seqs: Sequences, cfg: DataConfig, *, normalise: bool = True) -> Split:
    """Shuffle with ``cfg.seed``, split, and compute normalisation from the train split."""
    X = seqs.as_array()
    y = seqs.y
    assert y is not None
    m = X.shape[0]
    if m < cfg.min_sequences:
        raise DataError(
            f"{seqs.source}: {m} sequences is too few to train and verify "
            f"(need at least {cfg.min_sequences})"
        )
    classes = int(y.max()) + 1
    if classes < 2:
        raise DataError(f"{seqs.source}: labels hold a single class ({int(y.max())}); need at least 2")
    missing = sorted(set(range(classes)) - set(int(c) for c in np.unique(y)))
    if missing:
        raise DataError(f"{seqs.source}: class indexes {missing} never occur in y (labels must be 0..{classes - 1})")
    order = np.random.default_rng(cfg.seed).permutation(m)
    n_test = max(1, int(round(m * cfg.test_fraction)))
    n_val = max(1, int(round(m * cfg.val_fraction)))
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    F = X.shape[2]
    if normalise:
        flat = X[train].reshape(-1, F)
        mean = flat.mean(axis=0)
        std = flat.std(axis=0)
        std = np.where(std < 1e-6, 1.0, std)
    else:
        mean, std = np.zeros(F), np.ones(F)
    mean = mean.astype(np.float32)
    std = std.astype(np.float32)
    Xn = ((X - mean) / std).astype(np.float32)
    return Split(
        X_train=Xn[train], y_train=y[train], X_val=Xn[val], y_val=y[val],
        X_test=Xn[test], y_test=y[test], mean=mean, std=std,
        feature_names=seqs.feature_names, classes=classes, source=seqs.source,
    )
