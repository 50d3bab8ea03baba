"""The JSON prediction record: one line per sample, from ``serve`` and ``replay`` alike.

``{"i": 0, "seq": 0, "step": 1, "y": [0.93], "label": "walk"}`` (docs/DESIGN.md,
"Outputs"): ``i`` the sample index since start, ``seq`` the sequence index, ``step``
the steps since the state's last reset, ``y`` the outputs (9 significant digits,
``null`` where not finite), ``label`` the class decision. The daemon adds ``t`` (wall
time) and, for COBS, ``frame`` (the frame sequence number). An output from a
zero-left-padded window (a window head or a valid convolution still filling) carries
``"warmup": true``.
"""
from __future__ import annotations

import json
import math


def prediction_record(i: int, seq: int, pred) -> dict:
    """The JSON object of one output line."""
    y = [float(f"{v:.9g}") if math.isfinite(v) else None for v in pred.y.tolist()]
    record = {"i": i, "seq": seq, "step": pred.step, "y": y, "label": pred.label}
    if getattr(pred, "warmup", False):
        record["warmup"] = True
    return record


def record_line(i: int, seq: int, pred, extra: str = "") -> str:
    """``json.dumps(prediction_record(i, seq, pred))`` with ``extra`` (``', "key": value'``
    pairs, already JSON) before the closing brace, and a newline: the same text, written
    directly (the daemon's per-sample path)."""
    y = ", ".join(repr(float(f"{v:.9g}")) if math.isfinite(v) else "null" for v in pred.y.tolist())
    label = _LABELS.get(pred.label) or _LABELS.setdefault(pred.label, json.dumps(pred.label))
    if getattr(pred, "warmup", False):
        extra = ', "warmup": true' + extra
    return f'{{"i": {i}, "seq": {seq}, "step": {pred.step}, "y": [{y}], "label": {label}{extra}}}\n'


_LABELS: dict[str, str] = {}  # label -> its JSON string
