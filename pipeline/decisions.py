"""Figures that judge the decisions a variant changes, not only its distance from float.

A step is *decisive* when the reference (float) output's decision margin is at least
``margin``: for one sigmoid unit the distance from 0.5, otherwise the top-1 minus the
top-2 output. Class agreement on the ambiguous rest says little (a model hovering at 0.5
flips class on tiny errors), so agreement is counted on decisive steps and the share of
ambiguous steps is reported next to it. A reference with (almost) no decisive step gives
a variant nothing to be judged on: it is *not judgeable*, never a pass by exemption.
"""
from __future__ import annotations

import numpy as np

from runtime.contract import classes


def margins(y: np.ndarray, kind: str) -> np.ndarray:
    """Decision margin per output vector ``[..., units]`` -> ``[...]``: |y - 0.5| for one
    sigmoid unit, top-1 minus top-2 for several units, +inf for a single non-sigmoid unit
    (one class: every step is decisive)."""
    y = np.asarray(y, np.float64)
    if y.shape[-1] == 1:
        return np.abs(y[..., 0] - 0.5) if kind == "sigmoid" else np.full(y.shape[:-1], np.inf)
    top = np.sort(y, axis=-1)
    return top[..., -1] - top[..., -2]


def decision_figures(ref: np.ndarray, got: np.ndarray, kind: str, margin: float,
                     prefix: str = "") -> dict[str, float]:
    """Agreement of ``got`` with ``ref`` (both ``[..., units]``) over all steps and over the
    decisive ones, and the share of ambiguous steps. With no decisive step the decisive
    agreement is NaN (nothing to judge), never 1."""
    same = classes(ref, kind) == classes(got, kind)
    decisive = margins(ref, kind) >= margin
    n = int(decisive.sum())
    return {
        f"{prefix}agreement": float(np.mean(same)),
        f"{prefix}decisive_agreement": float(np.mean(same[decisive])) if n else float("nan"),
        f"{prefix}decisive_steps": n,
        f"{prefix}ambiguous_share": float(1.0 - n / same.size) if same.size else 1.0,
    }


def accuracy_figures(ref_last: np.ndarray, got_last: np.ndarray, y_true: np.ndarray,
                     kind: str) -> dict[str, float]:
    """Accuracy at each sequence's last step ``[m, units]`` against the labels ``[m]``, for
    the variant and the reference; ``accuracy_delta`` = variant - reference (points as a
    fraction; negative: the variant is less accurate), ``accuracy_drop`` = -delta."""
    acc = float(np.mean(classes(got_last, kind) == y_true))
    ref_acc = float(np.mean(classes(ref_last, kind) == y_true))
    return {"accuracy": acc, "keras_accuracy": ref_acc, "accuracy_delta": acc - ref_acc,
            "accuracy_drop": ref_acc - acc}


def judgeable(figures: dict, min_decisive_share: float) -> bool:
    """Whether enough steps are decisive (share >= ``min_decisive_share``, at least one)."""
    share = 1.0 - figures["ambiguous_share"]
    return figures["decisive_steps"] > 0 and share >= min_decisive_share
