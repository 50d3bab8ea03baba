"""Training data: the built-in synthetic set, user files, windows, splits and normalisation.

``load_training_data`` reads a file with the ``[data]`` column choice
(``runtime.datafile``), cuts it into windows when ``[data] window`` is set
(``windows``), and keeps the class names that label a sequence; the manifest's window
(length, stride, default reset policy) follows from the same settings
(``manifest_window``).

The synthetic set has the shape people have in practice (7 samples x 3 features, label
0/1) and a label that depends on the *order* of the samples: feature 0 and feature 1
each get one bump at a random step, and the label says whether the bump in feature 0
came first. Every sequence of either class holds the same multiset of bump values, so a
model that ignores order is at chance on it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from pipeline.config import DataConfig
from runtime.contract import WindowSpec
from runtime.datafile import Columns, Sequences, read_sequences, used_classes
from runtime.errors import DataError
from runtime.reset import MAX_SLIDING

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Normalised splits. ``X_*`` ``[m, T, F]`` float32 (already normalised; a recording
    shorter than ``T`` is zero-padded after its end), ``y_*`` ``[m]``, ``len_*`` ``[m]``
    int64: each recording's true length (None: every one is ``T`` long)."""

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
    len_train: np.ndarray | None = None
    len_val: np.ndarray | None = None
    len_test: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None  # text labels, index = class (None: the indexes)

    def __post_init__(self) -> None:
        for part in ("train", "val", "test"):
            X, n = getattr(self, f"X_{part}"), getattr(self, f"len_{part}")
            full = np.full(len(X), X.shape[1], np.int64)
            object.__setattr__(self, f"len_{part}", full if n is None else np.asarray(n, np.int64))

    @property
    def steps(self) -> int:
        """``T``: the longest recording's length (what the full-window model takes)."""
        return int(self.X_train.shape[1])

    @property
    def features(self) -> int:
        return int(self.X_train.shape[2])

    @property
    def variable_length(self) -> bool:
        """Whether any recording is shorter than ``steps`` (padded)."""
        return any(int(n.min()) < self.steps for n in (self.len_train, self.len_val, self.len_test) if len(n))

    def raw(self, X: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        """Undo the normalisation: what the device receives from the sensor. With
        ``lengths`` ``[m]``, the padding after each recording's end stays 0."""
        out = (X * self.std + self.mean).astype(np.float32)
        if lengths is not None:
            out[~step_mask(lengths, X.shape[1])] = 0.0
        return out


def step_mask(lengths: np.ndarray, steps: int) -> np.ndarray:
    """``[m, steps]`` bool: True where step t is inside recording i (t < lengths[i])."""
    return np.arange(steps)[None, :] < np.asarray(lengths)[:, None]


def pad(X: list[np.ndarray] | tuple[np.ndarray, ...], steps: int | None = None) -> np.ndarray:
    """Recordings ``[T_i, F]`` -> ``[m, steps, F]`` float32, zeros after each end (post-padding)."""
    steps = max(len(x) for x in X) if steps is None else steps
    out = np.zeros((len(X), steps, X[0].shape[1]), np.float32)
    for i, x in enumerate(X):
        out[i, : len(x)] = x
    return out


def synthetic(cfg: DataConfig) -> Sequences:
    """``cfg.sequences`` order-dependent sequences ``[T, F]`` with labels 0/1."""
    if cfg.steps < 2 or cfg.synthetic_features < 2:
        raise DataError("the synthetic set needs at least 2 steps and 2 features")
    rng = np.random.default_rng(cfg.seed)
    m, T, F = cfg.sequences, cfg.steps, cfg.synthetic_features
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


def columns(cfg: DataConfig) -> Columns:
    """The ``[data]`` column choice, as the reader takes it."""
    return Columns(features=tuple(cfg.features), label=cfg.label_column, sequence=cfg.sequence_column)


def load_training_data(path: str | None, cfg: DataConfig) -> Sequences:
    """The labelled sequences to train on: ``path`` (or the synthetic set), cut into
    windows when ``cfg.window`` is set; refuses too few sequences, telling how to cut a
    continuous log."""
    seqs = synthetic(cfg) if path is None else read_sequences(path, require_labels=True, columns=columns(cfg))
    if cfg.window:
        seqs = windows(seqs, cfg.window, cfg.stride or cfg.window, cfg.window_label)
        if len(seqs) < cfg.min_sequences:
            raise DataError(f"{seqs.source}: [data] window = {cfg.window} and stride = {cfg.stride or cfg.window} "
                            f"cut it into {len(seqs)} windows, too few to train and verify (need at least "
                            f"{cfg.min_sequences}); a smaller stride or window gives more")
    elif len(seqs) < cfg.min_sequences:
        if len(seqs) == 1 and seqs.source.lower().endswith(".csv"):
            raise DataError(f"{seqs.source}: one continuous log of {len(seqs.X[0])} samples (no "
                            f"{cfg.sequence_column!r} column, or one value in it): set [data] window = N (and "
                            f"stride) to cut it into training windows of N samples, or add a "
                            f"{cfg.sequence_column!r} column")
        raise DataError(f"{seqs.source}: {len(seqs)} sequences is too few to train and verify (need at least "
                        f"{cfg.min_sequences}); cut longer recordings into windows with [data] window = N")
    seqs = used_classes(seqs)
    lengths = seqs.lengths()
    classes = seqs.class_names or tuple(str(c) for c in np.unique(seqs.y))
    log.info("%s: %d sequences of %s samples, features %s, classes %s", seqs.source, len(seqs),
             min(lengths) if len(lengths) == 1 else f"{min(lengths)}..{max(lengths)}",
             _listed(seqs.feature_names), _listed(classes))
    return seqs


def _listed(names, most: int = 12) -> str:
    return ", ".join(names) if len(names) <= most else ", ".join(names[:most]) + f", ... ({len(names)} in all)"


def windows(seqs: Sequences, window: int, stride: int, label: str = "last") -> Sequences:
    """Each sequence ``[T_i, F]`` cut into windows ``[window, F]``, one starting every
    ``stride`` samples (from sample 0; a tail shorter than ``window`` is left out).
    A window's label is its last sample's (``"last"``) or its most frequent one
    (``"majority"``; a tie goes to the class seen latest in the window); without a
    label per sample, the sequence's. Sequences shorter than ``window`` are left out
    (logged); none long enough is an error."""
    X, y, steps = [], [], []
    short = 0
    for i, x in enumerate(seqs.X):
        starts = range(0, len(x) - window + 1, stride)
        short += not starts
        for a in starts:
            X.append(x[a:a + window])
            if seqs.step_labels is not None:
                steps.append(seqs.step_labels[i][a:a + window])
                y.append(_window_label(steps[-1], label))
            elif seqs.y is not None:
                y.append(int(seqs.y[i]))
    if not X:
        longest = max(len(x) for x in seqs.X)
        raise DataError(f"{seqs.source}: no sequence is as long as [data] window = {window} (the longest has "
                        f"{longest} samples); use a smaller window")
    if short:
        log.warning("%s: %d of %d sequence(s) are shorter than the window of %d samples and are left out",
                    seqs.source, short, len(seqs), window)
    log.info("%s: %d window(s) of %d samples, stride %d, window label: %s", seqs.source, len(X), window,
             stride, label)
    return replace(seqs, X=tuple(X), y=np.array(y, np.int64) if seqs.y is not None else None,
                   step_labels=tuple(steps) if seqs.step_labels is not None else None)


def _window_label(labels: np.ndarray, rule: str) -> int:
    """``labels`` ``[window]`` -> the window's class by ``rule``."""
    if rule == "last":
        return int(labels[-1])
    counts = np.bincount(labels)
    tied = np.flatnonzero(counts == counts.max())
    if len(tied) == 1:
        return int(tied[0])
    last_seen = {int(c): int(np.flatnonzero(labels == c)[-1]) for c in tied}
    return max(last_seen, key=last_seen.get)


def manifest_window(spec: WindowSpec, cfg: DataConfig) -> WindowSpec:
    """The manifest's window for data cut by ``cfg``: its length and stride, and the
    default reset policy: ``sliding:N`` when windows overlap (stride < N: the model
    learnt to answer from any N consecutive samples, so each sample gets the decision of
    the window that ends there), ``window:N`` when they do not (the stream is cut into
    back-to-back windows of N as the log was; one lane instead of N). A window head
    keeps its own ``sliding:T``."""
    if not cfg.window:
        return spec
    stride = cfg.stride or cfg.window
    if spec.mode != "stream":
        return replace(spec, stride=stride)
    overlap = stride < cfg.window and cfg.window <= MAX_SLIDING
    reset = f"sliding:{cfg.window}" if overlap else f"window:{cfg.window}"
    return replace(spec, length=cfg.window, stride=stride, reset=reset)


def split(seqs: Sequences, cfg: DataConfig, *, normalise: bool = True) -> Split:
    """Stratified split (``_stratified``), normalisation from the training split's true
    samples, then every recording zero-padded after its end to the longest one's length.

    The padding is added *after* normalisation, so a padded step is 0 in the model's
    input space; training gives padded steps no weight (``pipeline.fit``) and verification
    and the report stop each recording at its true length."""
    y = seqs.y
    assert y is not None
    m = len(seqs)
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
    test, val, train = _stratified(y, cfg)
    if not len(val):
        raise DataError(f"{seqs.source}: no class has the 3 recordings a training, validation and test "
                        "split each need; add recordings")
    F = seqs.features
    if normalise:
        flat = np.concatenate([seqs.X[i] for i in train]).astype(np.float64)  # true samples only
        mean = flat.mean(axis=0)
        std = flat.std(axis=0)
        std = np.where(std < 1e-6, 1.0, std)
    else:
        mean, std = np.zeros(F), np.ones(F)
    mean = mean.astype(np.float32)
    std = std.astype(np.float32)
    lengths = np.array([len(x) for x in seqs.X], np.int64)
    Xn = pad([((x - mean) / std).astype(np.float32) for x in seqs.X], int(lengths.max()))
    if len(set(lengths.tolist())) > 1:
        log.info("recordings of %d..%d samples: zero-padded after their end to %d; padded steps are "
                 "masked in training and skipped in verification", lengths.min(), lengths.max(), lengths.max())
    names = getattr(seqs, "class_names", None)
    return Split(
        X_train=Xn[train], y_train=y[train], X_val=Xn[val], y_val=y[val],
        X_test=Xn[test], y_test=y[test], mean=mean, std=std,
        feature_names=seqs.feature_names, classes=classes, source=seqs.source,
        len_train=lengths[train], len_val=lengths[val], len_test=lengths[test],
        class_names=tuple(names) if names is not None else None,
    )


def _stratified(y: np.ndarray, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(test, val, train) indexes: each class split on its own by ``cfg.test_fraction`` and
    ``cfg.val_fraction`` (shuffled with ``cfg.seed``), so every split holds every class in
    its share even when classes are few or lopsided. A class of 3 or more recordings has
    at least one in each split; of 2, one in training and one in test; of 1, training only.

    The validation split is what early stopping, the learning-rate schedule and the
    quantization recipe search judge by, so it needs enough recordings to mean something:
    ``val_fraction`` is 0.2 by default, stratified, so even 40 recordings of 4 classes give
    2 of each class. A single held-out validation split rather than k-fold selection of
    the epoch count: the weights kept are those of the best validation loss, so no refit
    (whose last epoch nothing would check) is needed, and the quantized variants' recipe
    search needs a held-out split of its own anyway."""
    rng = np.random.default_rng(cfg.seed)
    parts: list[list[int]] = [[], [], []]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n = len(idx)
        n_test = max(1, int(round(n * cfg.test_fraction))) if n >= 2 else 0
        n_val = max(1, int(round(n * cfg.val_fraction))) if n >= 3 else 0
        n_test, n_val = min(n_test, n - 1), min(n_val, max(0, n - 1 - n_test))
        parts[0] += idx[:n_test].tolist()
        parts[1] += idx[n_test:n_test + n_val].tolist()
        parts[2] += idx[n_test + n_val:].tolist()
    test, val, train = (np.array(rng.permutation(p), np.int64) for p in parts)
    return test, val, train
