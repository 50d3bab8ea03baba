"""What an int8 variant with a 16-bit cell path would reach, in the simulation.

TFLite's own integer LSTM kernel keeps its gates and cell state on 16-bit grids between
int8 inputs, hidden states and kernels. This experiment measures, in the simulated step
graph (``pipeline.quantsim``), the output error of stepwise's int8 step graph over no-reset
test streams (8 lanes of 1,000 samples) with everything rounded to int8, with the gate and
cell tensors kept off the int8 grid (everything but the input, the hidden states, the
kernels and the head), and with the FULLY_CONNECTED outputs on int8 as well (the
elementwise cell ops in float). With ``--matmul-inputs``: only what the matmuls read and
write (their inputs, requantized from the states, their outputs and kernels) on int8, the
states and the elementwise update off it. Kept tensors are
held in float here: a 16-bit grid is finer than the remaining int8 error by two orders.

    python -m bench.hybrid_sim --only lstm-mission gru-v1
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import tensorflow as tf

from bench import zoo
from pipeline.attribution import stream_windows
from pipeline.convert import calibration_set
from pipeline.qat import calibrator, unroll
from pipeline.quantsim import SIGMOID_RANGE, TANH_RANGE, StepSim


class MatmulInputs(StepSim):
    """The step graph with the inputs of every recurrent layer's matmuls recorded apart
    (``n.xin``, ``n.hin``) from the states themselves, so that the matmuls can be held on
    int8 while the states and the elementwise update are not."""

    @staticmethod
    def _lstm(q, n, x, states, w):
        return StepSim._lstm(q, n, q(f"{n}.xin", x), [q(f"{n}.hin", states[0]), states[1]], w)

    @staticmethod
    def _simple(q, n, x, states, w):
        return StepSim._simple(q, n, q(f"{n}.xin", x), [q(f"{n}.hin", states[0])], w)

    @staticmethod
    def _gru(q, n, layer, x, states, w):
        W, U, b = q.weights(f"{n}.W", next(w)), q.weights(f"{n}.W", next(w)), next(w)
        h, u = states[0], layer.units
        x, hin = q(f"{n}.xin", x), q(f"{n}.hin", h)
        if layer.reset_after:
            xz, xr, xh = tf.split(q(f"{n}.xw", x @ W + b[0], 3), 3, axis=1)
            hz, hr, hh = tf.split(q(f"{n}.hu", hin @ U + b[1], 3), 3, axis=1)
            z = q.fixed(f"{n}.zg", tf.sigmoid(q(f"{n}.z", xz + hz)), SIGMOID_RANGE)
            r = q.fixed(f"{n}.r", tf.sigmoid(q(f"{n}.rz", xr + hr)), SIGMOID_RANGE)
            pre = xh + q(f"{n}.rh", r * hh)
        else:
            xz, xr, xh = tf.split(q(f"{n}.xw", x @ W + b, 3), 3, axis=1)
            hz, hr = tf.split(q(f"{n}.hu", hin @ U[:, :2 * u], 2), 2, axis=1)
            z = q.fixed(f"{n}.zg", tf.sigmoid(q(f"{n}.z", xz + hz)), SIGMOID_RANGE)
            r = q.fixed(f"{n}.r", tf.sigmoid(q(f"{n}.rz", xr + hr)), SIGMOID_RANGE)
            pre = xh + q(f"{n}.rhu", q(f"{n}.rhin", q(f"{n}.rh", r * h)) @ U[:, 2 * u:])
        cand = q.fixed(f"{n}.cand", tf.tanh(q(f"{n}.pre", pre)), TANH_RANGE)
        h = q(f"{n}.h", q(f"{n}.zh", z * h) + q(f"{n}.zc", q(f"{n}.1-z", 1.0 - z) * cand))
        return h, [h]


def int8_points(points: list[str], scheme: str) -> set[str]:
    """The tensors left on the int8 grid under ``scheme``."""
    if scheme == "all int8":
        return set(points)
    if scheme == "int8 matmuls, 16-bit states":  # MatmulInputs: matmul inputs, outputs and kernels
        return {p for p in points if p in ("x", "logits", "y") or p.startswith("head.") or p.endswith(
            (".W", ".xin", ".hin", ".rhin", ".xw", ".hu", ".rhu", ".zx", ".zh"))
            and not (p.endswith(".zh") and p.split(".")[0] + ".zc" in points)}  # GRU's z*h is not a matmul
    edge = {p for p in points if p in ("x", "logits", "y") or p.endswith((".h", ".W")) or p.startswith("head.")}
    if scheme == "int8 edges, 16-bit cell":
        return edge
    # "int8 matmuls, float cell": also the FULLY_CONNECTED outputs on int8 (what an int8 graph
    # with its elementwise cell ops left in float holds)
    return edge | {p for p in points if p.endswith((".zx", ".zh", ".xw", ".hu", ".rhu"))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path("build/quantbench"))
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--matmul-inputs", action="store_true",
                    help="the matmuls on int8 (inputs, outputs, kernels), states and the rest off it")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print("| model | scheme | p99 dy | max dy | decision flips % |\n|---|---|---|---|---|")
    for entry in zoo.entries():
        if (args.only and entry.name not in args.only) or entry.default_build_seed is not None:
            continue
        model, sp = zoo.trained(entry, args.cache)
        if not StepSim.supports(model):
            continue
        sim = MatmulInputs(model, 8) if args.matmul_inputs else StepSim(model, 8)
        ranges = calibrator(sim)(calibration_set(sp.X_train, zoo.build_config(entry).quantize))
        points = list(dict.fromkeys(sim.points))
        data = tf.constant(stream_windows(sp.X_test, 8, 1000).astype(np.float32))

        @tf.function(jit_compile=True)
        def run(masks):
            return unroll(sim, data, ranges, keep=masks)[0]

        def outputs(rounded: set[str]) -> np.ndarray:
            return run({p: tf.constant(float(p not in rounded)) for p in points}).numpy().astype(np.float64)

        ref = outputs(set())
        schemes = ("all int8", "int8 matmuls, 16-bit states") if args.matmul_inputs else (
            "all int8", "int8 edges, 16-bit cell", "int8 matmuls, float cell")
        for scheme in schemes:
            y = outputs(int8_points(points, scheme))
            d = np.abs(y - ref)
            k = ref.shape[-1]
            flips = np.mean((ref[..., 0] >= 0.5) != (y[..., 0] >= 0.5)) if k == 1 else \
                np.mean(ref.argmax(-1) != y.argmax(-1))
            print(f"| {entry.name} | {scheme} | {np.percentile(d, 99):.4f} | {d.max():.4f} | {flips * 100:.2f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
