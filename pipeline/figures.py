"""The data behind each report figure, as plain arrays (no plotting here).

``pipeline.report`` draws exactly what these functions return, so the tests check the
figures' content (every step counted, the right label and threshold) without images.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.contract import decision_threshold

ERROR_FLOOR = 1e-9  # |dy| below this (an exact match included) is counted in the first bin
ERROR_BINS = np.logspace(-9, 0, 55)  # [bins + 1] edges, log spaced, 1e-9 .. 1


@dataclass(frozen=True)
class ErrorHistogram:
    """|y_variant - y_keras| of one variant, one value per step (largest over the outputs).

    ``counts`` ``[bins]`` sums to ``steps``: every step of every sequence, values below
    ``ERROR_FLOOR`` (``exact`` of them exactly 0) in the first bin, none above 1 possible
    for probabilities but clipped into the last bin all the same.
    """

    variant: str
    counts: np.ndarray
    edges: np.ndarray
    steps: int
    exact: int
    p99: float
    max: float


def error_histograms(ref: np.ndarray, outputs: dict[str, np.ndarray],
                     edges: np.ndarray = ERROR_BINS, lengths: np.ndarray | None = None) -> list[ErrorHistogram]:
    """One histogram per variant of ``outputs`` (``[m, T, units]`` like ``ref``); with
    ``lengths`` ``[m]``, over each sequence's true steps only."""
    hists = []
    inside = np.ones(ref.shape[:2], bool) if lengths is None else \
        np.arange(ref.shape[1])[None] < np.asarray(lengths)[:, None]
    for name, ys in outputs.items():
        if ys.shape != ref.shape:
            raise ValueError(f"{name} outputs {ys.shape} do not match the reference {ref.shape}")
        d = np.abs(ys.astype(np.float64) - ref.astype(np.float64)).max(axis=-1)[inside]
        clipped = np.clip(d, edges[0], edges[-1])
        counts, _ = np.histogram(clipped, bins=edges)
        hists.append(ErrorHistogram(name, counts, edges, int(d.size), int(np.count_nonzero(d == 0)),
                                    float(np.percentile(d, 99)), float(d.max())))
    return hists


@dataclass(frozen=True)
class SequencePanel:
    """One test sequence: the plotted output unit per step for Keras and every variant
    (``y`` name -> ``[T]``) and each variant's difference from Keras (``diff`` ``[T]``)."""

    index: int
    label: int
    label_name: str
    unit: int
    unit_name: str
    steps: np.ndarray
    keras: np.ndarray
    y: dict[str, np.ndarray]
    diff: dict[str, np.ndarray]
    threshold: float | None


def plotted_unit(kind: str, units: int, label: int) -> int:
    """The output unit a sequence's panel shows: the only one for a single sigmoid, the
    positive class for two-way softmax, else the true class's probability."""
    if units == 1:
        return 0
    return 1 if (kind == "softmax" and units == 2) else int(label)


def pick_sequences(ref: np.ndarray, outputs: dict[str, np.ndarray], labels: np.ndarray,
                   count: int) -> list[int]:
    """Up to ``count`` test sequences: the first of each class, then those with the
    largest difference from Keras of any variant (where a quantized variant shows)."""
    chosen: list[int] = []
    for c in np.unique(labels):
        chosen.append(int(np.flatnonzero(labels == c)[0]))
    worst = np.zeros(ref.shape[0])
    for ys in outputs.values():
        worst = np.maximum(worst, np.abs(ys - ref).max(axis=(1, 2)))
    for i in np.argsort(-worst, kind="stable"):
        if len(chosen) >= count:
            break
        if int(i) not in chosen:
            chosen.append(int(i))
    return sorted(chosen[:count])


def sequence_panels(ref: np.ndarray, outputs: dict[str, np.ndarray], labels: np.ndarray,
                    kind: str, class_names: list[str], count: int = 4,
                    lengths: np.ndarray | None = None) -> list[SequencePanel]:
    """Panels for ``pick_sequences``; ``ref``/``outputs`` ``[m, T, units]``, ``labels`` ``[m]``;
    ``lengths`` ``[m]``: each sequence's true length (its panel ends there)."""
    units = ref.shape[-1]
    panels = []
    for i in pick_sequences(ref, outputs, labels, count):
        label = int(labels[i])
        n = ref.shape[1] if lengths is None else int(lengths[i])
        unit = plotted_unit(kind, units, label)
        unit_name = f"P({class_names[1]})" if units == 1 else f"P({class_names[unit]})"
        keras = ref[i, :n, unit].astype(np.float64)
        ys = {name: out[i, :n, unit].astype(np.float64) for name, out in outputs.items()}
        panels.append(SequencePanel(i, label, class_names[label], unit, unit_name,
                                    np.arange(1, n + 1), keras, ys,
                                    {name: y - keras for name, y in ys.items()},
                                    decision_threshold(kind, units)))
    return panels


@dataclass(frozen=True)
class Curve:
    name: str
    epochs: np.ndarray  # 1-based epoch numbers on one axis shared by training and fine-tuning
    values: np.ndarray


@dataclass(frozen=True)
class TrainingPanel:
    title: str
    ylabel: str
    curves: list[Curve]
    log_y: bool = False
    finetune_from: float | None = None  # x where the fine-tuning epochs start (a marker line)


def training_panels(history: dict[str, list[float]]) -> list[TrainingPanel]:
    """Loss and accuracy per training epoch; the quantization-aware fine-tuning epochs
    (``qat_*`` keys) follow on the same epoch axis: its task loss in the loss panel and
    the int8 drift it minimises in a panel of its own."""
    n = max((len(history.get(k) or []) for k in ("loss", "val_loss", "accuracy", "val_accuracy")), default=0)
    task, drift = history.get("qat_task_loss") or [], history.get("qat_drift") or []
    marker = n + 0.5 if (task or drift) else None
    qat_epochs = lambda v: np.arange(n + 1, n + 1 + len(v))  # noqa: E731
    panels = []
    for key, title, ylabel, scale in (("loss", "loss", "cross-entropy (nats)", 1.0),
                                      ("accuracy", "accuracy", "accuracy (%)", 100.0)):
        curves = [Curve(label, np.arange(1, len(history[k]) + 1), np.asarray(history[k], float) * scale)
                  for k, label in ((key, "train"), (f"val_{key}", "validation")) if history.get(k)]
        tuned = key == "loss" and bool(task)
        if tuned:
            curves.append(Curve("fine-tuning task loss", qat_epochs(task), np.asarray(task, float)))
        if curves:
            panels.append(TrainingPanel(title, ylabel, curves, finetune_from=marker if tuned else None))
    if drift:
        panels.append(TrainingPanel("int8 drift during fine-tuning", "mean squared |y_int8 - y_float| (log)",
                                    [Curve("simulated int8 vs float", qat_epochs(drift), np.asarray(drift, float))],
                                    log_y=True, finetune_from=marker))
    return panels
