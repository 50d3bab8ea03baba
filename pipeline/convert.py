"""SavedModel -> TFLite variants (float32, int16x8, int8), and what each one holds.

Calibration of the quantized variants feeds the step model the states it really sees:
the state trajectories of float rollouts over real sequences (reset per sequence) and a
long rollout without resets, never zeros or random states.
"""
from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import tensorflow as tf

from pipeline.config import QuantizeConfig
from pipeline.stepmodel import INPUT_NAME, SIGNATURE_KEY, StepModel
from runtime import native_log
from runtime.contract import TensorSpec
from runtime.errors import StepwiseError

log = logging.getLogger(__name__)

_QUANT_DTYPES = {"int8", "int16", "uint8"}


@dataclass(frozen=True)
class Calibration:
    """What the quantized variants calibrate on (``calibration_set``): ``windows``
    ``[m, T, F]`` rolled out from zero states, one no-reset ``stream`` ``[1, steps, F]``,
    and the continuations of ``continue_until_closed`` (``seed``). All of it is fixed by
    the data and the configuration, so quantization-aware fine-tuning can simulate the
    very ranges the converter will calibrate (``pipeline.qat``)."""

    windows: np.ndarray
    stream: np.ndarray
    seed: int
    lengths: np.ndarray | None = None  # [m] true length of each window (None: all T); padding is never fed

    def rollouts(self) -> list[np.ndarray]:
        return [X for X in (self.windows, self.stream) if X.shape[1] > 0]

    def true_lengths(self, X: np.ndarray) -> np.ndarray:
        """``[m]`` the true length of each sequence of ``X`` (one of ``rollouts()``)."""
        if X is self.windows and self.lengths is not None:
            return np.asarray(self.lengths)
        return np.full(X.shape[0], X.shape[1])

    def samples(self) -> np.ndarray:
        """``[n, F]`` every true sample of the rollouts (no padding)."""
        return np.concatenate([X[np.arange(X.shape[1])[None] < self.true_lengths(X)[:, None]]
                               for X in self.rollouts()])

    def continue_until_closed(self, next_states, pending: list[np.ndarray], lo: list[float],
                              hi: list[float], rounds: int = 20) -> list[tuple[np.ndarray, list]]:
        """Rows ``(x [n, F], states)`` that feed ``pending`` states (the states the rollouts
        end in), and the states they lead to while those leave the range ``lo``/``hi`` of
        each state fed so far, with consecutive samples of the rollouts from random
        offsets: each continuation is an ordinary stream. ``next_states(x, states)`` is
        one float step; the same ``seed`` gives the same continuations."""
        samples = self.samples()
        rng = np.random.default_rng(self.seed)
        lo, hi, rows = list(lo), list(hi), []
        at = rng.integers(0, max(1, len(samples) - rounds), size=len(pending[0]))
        for r in range(rounds):
            x = samples[(at + r) % len(samples)]
            rows.append((x, pending))
            lo = [min(a, float(s.min())) for a, s in zip(lo, pending)]
            hi = [max(a, float(s.max())) for a, s in zip(hi, pending)]
            nxt = next_states(x, pending)
            outside = np.zeros(len(x), bool)
            for a, b, s in zip(lo, hi, nxt):
                outside |= ((s < a) | (s > b)).reshape(len(x), -1).any(axis=1)
            if not outside.any():
                return rows
            pending, at = [s[outside] for s in nxt], at[outside]
        log.warning("calibration: states still leave the fed range after %d continued steps; a "
                    "state input may get a slightly different grid than its output", rounds)
        return rows


def calibration_set(X: np.ndarray, qc: QuantizeConfig, lengths: np.ndarray | None = None) -> Calibration:
    """Up to ``qc.calibration_sequences`` of the training windows ``X`` ``[m, T, F]``, and a
    no-reset stream of ``qc.calibration_stream_steps`` samples of them back to back.
    ``lengths`` ``[m]``: each window's true length (the padding after it is not calibrated
    on, nor streamed)."""
    rng = np.random.default_rng(qc.seed)
    pick = rng.permutation(len(X))[: qc.calibration_sequences]
    windows = X[pick].astype(np.float32)
    lens = np.full(len(windows), X.shape[1]) if lengths is None else np.asarray(lengths)[pick]
    order = rng.integers(0, len(windows), size=qc.calibration_stream_steps // int(lens.min()) + 1)
    stream = np.concatenate([windows[i, : lens[i]] for i in order])[None, : qc.calibration_stream_steps]
    return Calibration(windows, stream, qc.seed + 1, None if lengths is None else lens)


def calibration_inputs(step: StepModel, cal: Calibration) -> list[dict[str, np.ndarray]]:
    """Step-model input dicts ``{x, state...}`` (batch 1) from float rollouts of ``cal``.

    Every step of every rollout is fed, and so is every state a rollout ends in, continued
    as a stream until no step produces a state outside the states already fed. Each state
    input then spans exactly the range of its output twin (the converter calibrates
    min/max), so both land on one integer grid and carrying a state to the next step is
    exact instead of rounding it again, every step, onto a slightly different grid.
    """
    rows: list[tuple[np.ndarray, list[np.ndarray]]] = []  # (x [n, F], states [n, ...])
    finals = []
    for X in cal.rollouts():
        _, fed, last = step.rollout(X)
        n = cal.true_lengths(X)
        for t in range(X.shape[1]):
            keep = n > t  # padding after a window's end is not fed
            if keep.any():
                rows.append((X[keep, t], [s[keep] for s in fed[t]]))
        finals.append(last if n.min() == X.shape[1] else _at_end(fed, last, n))
    pending = [np.concatenate(parts) for parts in zip(*finals)]
    lo = [min(float(r[1][k].min()) for r in rows) for k in range(len(pending))]
    hi = [max(float(r[1][k].max()) for r in rows) for k in range(len(pending))]

    def next_states(x, states):
        out = step.step(tf.constant(x), *[tf.constant(s) for s in states])
        return [out[spec.output].numpy() for spec in step.states]

    rows += cal.continue_until_closed(next_states, pending, lo, hi)
    log.info("calibration: %d samples with their states (%d windows, a %d-sample stream, continuations)",
             sum(len(x) for x, _ in rows), len(cal.windows), cal.stream.shape[1])
    return [_one(step, x[i], [s[i] for s in states]) for x, states in rows for i in range(len(x))]


def _at_end(fed: list[list[np.ndarray]], last: list[np.ndarray], lengths: np.ndarray) -> list[np.ndarray]:
    """The states each sequence holds after its last true step (``fed[t]``: the states fed
    at step t, ``last``: after the final step)."""
    T = len(fed)
    return [np.stack([last[k][i] if n == T else fed[n][k][i] for i, n in enumerate(lengths)])
            for k in range(len(last))]


def _one(step: StepModel, x: np.ndarray, states: list[np.ndarray]) -> dict[str, np.ndarray]:
    d = {INPUT_NAME: x[None].astype(np.float32)}
    for spec, s in zip(step.states, states):
        d[spec.input] = s[None].astype(np.float32)
    return d


def convert(saved_model: Path, variant: str, calibration: list[dict[str, np.ndarray]],
            per_channel: bool = True) -> bytes:
    """One variant's flatbuffer. Only TFLite builtin ops are allowed (no Flex).
    ``per_channel``: one weight scale per output channel of each FULLY_CONNECTED (else one
    per tensor)."""
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=[SIGNATURE_KEY])
    conv._experimental_disable_per_channel_quantization_for_dense_layers = not per_channel
    if variant == "float32":
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    else:
        def representative() -> Iterator[dict[str, np.ndarray]]:
            yield from calibration

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            if variant == "int16x8" else tf.lite.OpsSet.TFLITE_BUILTINS_INT8
        ]
    try:
        with native_log.filtered():  # the converter's C++ log lines
            return conv.convert()
    except Exception as e:  # the converter raises many types; keep its message
        raise StepwiseError(f"TFLite conversion of the {variant} variant failed: {e}") from e


def _interpreter(model: bytes):
    from ai_edge_litert.interpreter import Interpreter

    with native_log.filtered():
        return Interpreter(model_content=model)


def tensor_map(model: bytes) -> dict[str, TensorSpec]:
    """Signature name -> tensor index, shape, dtype and quantization of a model file."""
    it = _interpreter(model)
    runner = it.get_signature_runner(SIGNATURE_KEY)
    out: dict[str, TensorSpec] = {}
    for details in (runner.get_input_details(), runner.get_output_details()):
        for name, d in details.items():
            scale, zero = d["quantization"]
            out[name] = TensorSpec(index=int(d["index"]), shape=tuple(int(v) for v in d["shape"]),
                                   dtype=np.dtype(d["dtype"]).name, scale=float(scale),
                                   zero_point=int(zero))
    return out


def quantization_summary(model: bytes, variant: str) -> dict:
    """Exactly what a model file quantizes: op counts by compute dtype, I/O dtypes, the
    integer grid of each float input/output inside the model, constant (weight) dtypes."""
    it = _interpreter(model)
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    ops: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    float_ops = collections.Counter()
    for op in it._get_ops_details():
        outs = [tensors[i] for i in op["outputs"] if i >= 0]
        dtype = np.dtype(outs[0]["dtype"]).name if outs else "none"
        ops[op["op_name"]][dtype] += 1
        if dtype == "float32" and op["op_name"] not in ("DEQUANTIZE", "QUANTIZE"):
            float_ops[op["op_name"]] += 1
    produced = {i for op in it._get_ops_details() for i in op["outputs"]}
    consumed = {i for op in it._get_ops_details() for i in op["inputs"] if i >= 0}
    signature_inputs = {d["index"] for d in it.get_input_details()}
    constants = collections.Counter(
        np.dtype(tensors[i]["dtype"]).name for i in consumed - produced - signature_inputs
    )
    runner = it.get_signature_runner(SIGNATURE_KEY)
    io = {n: np.dtype(d["dtype"]).name
          for det in (runner.get_input_details(), runner.get_output_details()) for n, d in det.items()}
    return {
        "scheme": {"float32": "none", "int16x8": "int16 activations, int8 weights, int64 bias",
                   "int8": "int8 activations, int8 weights, int32 bias"}[variant],
        "ops": {name: dict(c) for name, c in sorted(ops.items())},
        "float_ops": dict(float_ops),
        "io": io,
        "io_grids": io_grids(it),
        "constant_dtypes": dict(constants),
    }


def io_grids(it) -> dict[str, dict]:
    """Signature name -> the integer grid the model converts that float input/output to/from
    (``scale``, ``zero_point``, ``dtype``, and the ``range`` it can hold). A state's input
    and output twin on the same grid are carried from step to step without rounding."""
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    runner = it.get_signature_runner(SIGNATURE_KEY)
    ops = it._get_ops_details()
    grids = {}
    for details, kind, side in ((runner.get_input_details(), "QUANTIZE", "outputs"),
                                (runner.get_output_details(), "DEQUANTIZE", "inputs")):
        for name, d in details.items():
            for op in ops:
                ends = op["inputs"] if side == "outputs" else op["outputs"]
                if op["op_name"] == kind and d["index"] in ends:
                    t = tensors[op[side][0]]
                    scale, zero = t["quantization"]
                    info = np.iinfo(t["dtype"])
                    grids[name] = {"dtype": np.dtype(t["dtype"]).name, "scale": float(scale),
                                   "zero_point": int(zero),
                                   "range": [float((info.min - zero) * scale), float((info.max - zero) * scale)]}
    return grids
