"""Many streams' samples as one block: columns in, columns out, for the many-stream hot path.

A source that reads many messages at once (``firmware_bridge.mqtt_bulk``) hands the
daemon a ``runtime.events.SampleBlock``: the stream id of every sample and their values
as one ``[n, F]`` array, instead of one ``(stream, Sample)`` pair each. The lane manager steps
it (``LaneManager.step_block``) into a ``BlockResult`` of arrays, and ``prediction_lines``
writes every prediction's JSON line with one string format for the whole block; the text
is exactly ``runtime.records.record_line``'s (a test holds the two together).
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

import numpy as np

from runtime.contract import OutputSpec, classes
from runtime.records import record_line

# '%.9g' switches to an exponent from 1e9 on, repr only from 1e16: such values (never
# probabilities) take record_line's own path, as do non-finite ones
_PLAIN_LIMIT = 1e9


@dataclass(slots=True)
class BlockResult:
    """One output per sample of a block, in the block's order: ``i`` (the stream's sample
    index; -1 where ``rejected``: NaN/Inf, state unchanged), ``seq``, ``step`` ``[n]``
    int, ``y`` ``[n, units]`` float32, ``rejected`` ``[n]`` bool."""

    streams: list
    i: list
    seq: np.ndarray
    step: np.ndarray
    y: np.ndarray
    rejected: np.ndarray


class _Row:
    """What ``record_line`` reads of one prediction."""

    __slots__ = ("y", "step", "label")

    def __init__(self, y, step: int, label: str):
        self.y, self.step, self.label = y, step, label


def y_texts(y: np.ndarray) -> list[str]:
    """``[m, units]`` -> the JSON array bodies ``record_line`` writes, one per row:
    ``repr(float(f"{v:.9g}"))`` per value, joined by ", " (one format call for all)."""
    m, units = y.shape
    flat = y.astype(np.float64).ravel()
    parts = (("%.9g," * flat.size) % tuple(flat.tolist())).split(",")
    for j in np.flatnonzero(flat == np.floor(flat)).tolist():
        parts[j] += ".0"  # repr of an integral float
    if units == 1:
        return parts[:m]
    return [", ".join(parts[k * units:(k + 1) * units]) for k in range(m)]


class LineWriter:
    """JSON lines of a ``BlockResult``: ``{"stream": ..., <record_line fields>, "t": ...}``."""

    def __init__(self, output: OutputSpec):
        self.output = output
        self._labels = [json.dumps(label) for label in output.labels]
        self._streams: dict[str, str] = {}  # stream id -> its JSON string

    def _stream(self, stream: str) -> str:
        text = self._streams.get(stream)
        if text is None:
            if len(self._streams) > 100_000:
                self._streams.clear()
            text = self._streams[stream] = json.dumps(stream)
        return text

    def _label(self, c: int) -> str:
        return self._labels[c] if c < len(self._labels) else json.dumps(str(c))

    def lines(self, res: BlockResult, t: float) -> tuple[list[str], list[str]]:
        """The accepted samples' ``(streams, lines)`` (no newline), in the block's order."""
        keep = np.flatnonzero(~res.rejected)
        if keep.size == 0:
            return [], []
        y = res.y[keep]
        streams = [res.streams[k] for k in keep.tolist()] if keep.size < len(res.streams) \
            else list(res.streams)
        i = [res.i[k] for k in keep.tolist()]
        seq, step = res.seq[keep].tolist(), res.step[keep].tolist()
        tail = f', "t": {round(t, 6)!r}}}'
        if not (np.isfinite(y).all() and (np.abs(y) < _PLAIN_LIMIT).all()):
            return streams, [self._slow(s, *row, tail) for s, row in zip(streams, zip(i, seq, step, y))]
        labels = [self._label(c) for c in classes(y, self.output.kind).tolist()]
        names = [self._stream(s) for s in streams]
        template = '{"stream": %s, "i": %d, "seq": %d, "step": %d, "y": [%s], "label": %s' + \
            tail.replace("%", "%%")
        text = "\n".join([template] * len(streams)) % tuple(
            itertools.chain.from_iterable(zip(names, i, seq, step, y_texts(y), labels)))
        return streams, text.split("\n")

    def _slow(self, stream, i, seq, step, y, tail) -> str:
        row = _Row(y, step, self.output.label_of(y))
        return f'{{"stream": {self._stream(stream)}, ' + record_line(i, seq, row)[1:-2] + tail
