"""Where a quantized variant's error comes from: every tensor against its float twin.

The float32 and the quantized model come from one SavedModel, so their tensors share
names (each layer's ops are named under the layer, ``lstm_0/...``). Both run the same
windows from zero states, each carrying its own state, with every intermediate tensor
kept; each quantized tensor is dequantized and compared with the float one at every
step. Per tensor: the RMS error relative to the float tensor's RMS (``rel_error``), the
error in steps of its own grid (``lsb``: about 0.3 for plain rounding, far more where
the error was carried in or values were clamped), and the share of float values outside
the range the grid holds (``clamped``: the calibration did not cover them). Per layer:
its worst tensor. The tensor whose relative error first jumps is where the variant loses
precision; a large ``clamped`` names a range the recipe should widen.
"""
from __future__ import annotations

import numpy as np

from pipeline.stepmodel import INPUT_NAME, SIGNATURE_KEY


class _Run:
    """One model stepped through windows with every tensor kept."""

    def __init__(self, blob: bytes):
        from ai_edge_litert.interpreter import Interpreter

        self.it = Interpreter(model_content=blob, experimental_preserve_all_tensors=True)
        self.runner = self.it.get_signature_runner(SIGNATURE_KEY)

    def step(self, feeds: dict[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
        out = self.runner(**feeds)
        values = {}
        for d in self.it.get_tensor_details():
            name = d["name"]
            if name.startswith("tfl.") or not d["shape"].size:
                continue
            try:
                v = self.it.get_tensor(d["index"])
            except ValueError:  # constants without data, or freed buffers
                continue
            scale, zero = d["quantization"]
            if v.dtype in (np.int8, np.int16) and scale > 0:
                info = np.iinfo(v.dtype)
                values[name] = ((v.astype(np.float64) - zero) * scale, scale,
                                ((info.min - zero) * scale, (info.max - zero) * scale))
            elif v.dtype == np.float32:
                values[name] = (v.astype(np.float64), 0.0, None)
        return out, values


def attribute(float_blob: bytes, quant_blob: bytes, state_names: list[tuple[str, str, tuple]],
              X: np.ndarray, top: int = 8) -> dict:
    """Per-tensor and per-layer error of ``quant_blob`` against ``float_blob`` over ``X``
    ``[m, T, F]`` (``state_names``: (input, output, shape) of each state)."""
    runs = {"f": _Run(float_blob), "q": _Run(quant_blob)}
    states = {k: {i: np.zeros((len(X), *shape), np.float32) for i, _, shape in state_names} for k in runs}
    acc: dict[str, np.ndarray] = {}
    meta: dict[str, tuple] = {}
    for t in range(X.shape[1]):
        seen = {}
        for k, run in runs.items():
            out, seen[k] = run.step({INPUT_NAME: np.ascontiguousarray(X[:, t], np.float32), **states[k]})
            states[k] = {i: out[o] for i, o, _ in state_names}
        for name, (q, scale, grid) in seen["q"].items():
            f = seen["f"].get(name)
            if grid is None or f is None or f[0].shape != q.shape:
                continue
            d, fv = q - f[0], f[0]
            outside = float(np.mean((fv < grid[0] - scale) | (fv > grid[1] + scale)))
            acc[name] = acc.get(name, 0) + np.array([np.sum(d * d), np.sum(fv * fv), d.size, outside * d.size])
            meta[name] = (scale,)
    return _summarise(acc, meta, top)


def _summarise(acc: dict[str, np.ndarray], meta: dict[str, tuple], top: int) -> dict:
    rows = []
    for name, (se, sf, n, out) in acc.items():
        rms = np.sqrt(se / n)
        rows.append({"tensor": name, "layer": name.split("/")[0] if "/" in name else "(io)",
                     "rel_error": float(rms / max(np.sqrt(sf / n), 1e-12)), "lsb": float(rms / meta[name][0]),
                     "clamped": float(out / n)})
    rows.sort(key=lambda r: -r["rel_error"])
    layers: dict[str, dict] = {}
    for r in rows:
        layers.setdefault(r["layer"], r)
    return {"tensors": rows[:top], "layers": list(layers.values())}


def one_at_a_time(model, calibration, streams: np.ndarray, bits: int = 8, top: int = 8,
                  split: bool = False) -> dict | None:
    """How much of the simulated variant's output error each layer and each tensor causes:
    the step graph (``pipeline.quantsim.StepSim``; ``bits`` 8 for int8, 16 for int16x8)
    runs ``streams [k, S, F]`` from zero states with no reset (``stream_windows``: the
    steps just after a reset and the states a long stream drifts into) with everything
    rounded, then with one layer, then one tensor (or kernel, ``0.W``) kept in float while
    the rest is rounded. Per item: the RMS and p99 |dy| against float with it kept, and
    ``removed``: the share of the all-rounded RMS error that goes away (1: it causes all
    of it; about 0: it does not matter; negative: its rounding happened to cancel other
    errors). Ranges: the ones the converter calibrates on ``calibration``
    (``pipeline.qat.calibrator``); ``split``: kernels split as ``split_weights`` converts
    them. None for a model the simulation does not cover."""
    import tensorflow as tf

    from pipeline.qat import calibrator, unroll
    from pipeline.quantsim import StepSim, layer_of

    if not StepSim.supports(model):
        return None
    sim = StepSim(model, bits, split)
    ranges = calibrator(sim)(calibration)
    points = list(dict.fromkeys(sim.points))
    data = tf.constant(np.asarray(streams, np.float32))

    @tf.function(jit_compile=True)
    def run(masks):
        return unroll(sim, data, ranges, keep=masks)[0]

    def outputs(kept: set[str]) -> np.ndarray:
        return run({p: tf.constant(float(p in kept)) for p in points}).numpy().astype(np.float64)

    ref = outputs(set(points))  # every rounding undone: the float step graph

    def error(kept: set[str]) -> dict[str, float]:
        d = np.abs(outputs(kept) - ref)
        return {"rms": float(np.sqrt(np.mean(d * d))), "p99": float(np.percentile(d, 99))}

    base = error(set())

    def rows(groups: dict[str, set[str]]) -> list[dict]:
        out = [{"name": name, **(e := error(kept)), "removed": 1.0 - e["rms"] / max(base["rms"], 1e-12)}
               for name, kept in groups.items()]
        return sorted(out, key=lambda r: -r["removed"])

    layers = list(dict.fromkeys(layer_of(p) for p in points))
    return {"bits": bits, "steps": int(data.shape[0] * data.shape[1]), "all_rounded": base,
            "layers": rows({la: {p for p in points if layer_of(p) == la} for la in layers}),
            "tensors": rows({p: {p} for p in points})[:top]}


def stream_windows(X: np.ndarray, lanes: int, steps: int, seed: int = 0) -> np.ndarray:
    """``[lanes, steps, F]``: windows of ``X [m, T, F]`` back to back, no resets."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(X), size=(lanes, steps // X.shape[1] + 1))
    return X[pick].reshape(lanes, -1, X.shape[2])[:, :steps]
