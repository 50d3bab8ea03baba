"""SavedModel -> TFLite variants (float32, int16x8, int8), and what each one holds.

Calibration of the quantized variants feeds the step model the states it really sees:
the state trajectories of float rollouts over real sequences (reset per sequence) and a
long rollout without resets, never zeros or random states.
"""
from __future__ import annotations

import collections
from pathlib import Path
from typing import Iterator

import numpy as np
import tensorflow as tf

from pipeline.stepmodel import INPUT_NAME, SIGNATURE_KEY, StepModel
from runtime.contract import TensorSpec
from runtime.errors import StepwiseError

_QUANT_DTYPES = {"int8", "int16", "uint8"}


def calibration_inputs(step: StepModel, X: np.ndarray, stream_steps: int,
                       rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    """Step-model input dicts ``{x, state...}`` (batch 1) from float rollouts of ``X`` ``[m, T, F]``."""
    samples: list[dict[str, np.ndarray]] = []
    _, fed, _ = step.rollout(X)
    for t, states in enumerate(fed):
        for i in range(X.shape[0]):
            samples.append(_one(step, X[i, t], [s[i] for s in states]))
    if stream_steps > 0:
        order = rng.integers(0, X.shape[0], size=stream_steps // X.shape[1] + 1)
        stream = X[order].reshape(1, -1, X.shape[2])[:, :stream_steps]
        _, fed, _ = step.rollout(stream)
        for t in range(0, stream.shape[1], 2):  # every other step: enough coverage
            samples.append(_one(step, stream[0, t], [s[0] for s in fed[t]]))
    return samples


def _one(step: StepModel, x: np.ndarray, states: list[np.ndarray]) -> dict[str, np.ndarray]:
    d = {INPUT_NAME: x[None].astype(np.float32)}
    for spec, s in zip(step.states, states):
        d[spec.input] = s[None].astype(np.float32)
    return d


def convert(saved_model: Path, variant: str, calibration: list[dict[str, np.ndarray]]) -> bytes:
    """One variant's flatbuffer. Only TFLite builtin ops are allowed (no Flex)."""
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=[SIGNATURE_KEY])
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
        return conv.convert()
    except Exception as e:  # the converter raises many types; keep its message
        raise StepwiseError(f"TFLite conversion of the {variant} variant failed: {e}") from e


def _interpreter(model: bytes):
    from ai_edge_litert.interpreter import Interpreter

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
    """Exactly what a model file quantizes: op counts by compute dtype, I/O dtypes, weights."""
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
        "constant_dtypes": dict(constants),
    }
