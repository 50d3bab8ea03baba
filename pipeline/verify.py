"""Verification: every variant against Keras, through the device's own runtime engine.

Figures per variant (docs/DESIGN.md, "Quality bars"):
- ``parity``: |y_variant - y_keras| over every prefix of every test sequence (max, p99);
- ``agreement``: share of those steps where the variant's class equals Keras's class, and
  ``decisive_agreement`` over the steps where Keras's decision margin is at least
  ``VerifyConfig.decisive_margin`` (``ambiguous_share``: the rest; ``pipeline.decisions``);
- ``accuracy``: final-step class against the labels, Keras's own, and the delta;
- ``drift``: the same over one long stream with no reset (``drift_steps`` samples);
  ``drift_roundoff``: how far Keras in float32 is from the same model in float64 on that
  stream (a recurrent model can amplify rounding over thousands of unreset steps; then
  the float32 step model, whose ops round differently, may be that far from Keras without
  any error in it: its drift bar is the larger of ``10 * float_max_abs`` and
  ``drift_roundoff_factor`` times this figure);
- ``latency_us``: median engine step time (informational).

Pass rule of a quantized variant: decisive agreement (windows and the drift stream), p99
(and for int8 max) |dy| and the accuracy drop within their bars. A variant whose Keras
reference has too few decisive steps (``min_decisive_share``) is *not judgeable*: it does
not pass. ``status`` is ``pass``, ``fail`` or ``not judgeable``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.artifacts import MODEL_FILE, TEST_DATA, load_keras_model
from pipeline.config import VerifyConfig
from pipeline.decisions import accuracy_figures, decision_figures, judgeable
from pipeline.report import write_report
from pipeline.stepmodel import float64_twin, keras_sequence_outputs
from runtime.contract import load_contract
from runtime.engine import Engine
from runtime.replay import replay

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bar:
    name: str  # e.g. "int8 agreement"
    figure: str  # key in the figures dict
    limit: float
    higher_is_better: bool

    def passes(self, value: float) -> bool:
        """NaN never passes; a figure equal to the limit does (to within float rounding)."""
        slack = 1e-9 * max(1.0, abs(self.limit))
        return value >= self.limit - slack if self.higher_is_better else value <= self.limit + slack

    def describe(self) -> str:
        return f"{self.figure} {'>=' if self.higher_is_better else '<='} {self.limit:g}"


def bars_for(variant: str, cfg: VerifyConfig, drift_roundoff: float = 0.0) -> list[Bar]:
    if variant == "float32":
        drift = max(cfg.float_max_abs * 10, cfg.drift_roundoff_factor * drift_roundoff)
        return [Bar("float32 parity", "max_abs", cfg.float_max_abs, False),
                Bar("float32 drift parity", "drift_max_abs", drift, False)]
    agree, p99 = (cfg.int16x8_agreement, cfg.int16x8_p99) if variant == "int16x8" else \
        (cfg.int8_agreement, cfg.int8_p99)
    bars = [Bar(f"{variant} decisive agreement", "decisive_agreement", agree, True),
            Bar(f"{variant} p99", "p99_abs", p99, False),
            Bar(f"{variant} accuracy drop", "accuracy_drop", cfg.accuracy_drop, False),
            Bar(f"{variant} drift decisive agreement", "drift_decisive_agreement", agree, True),
            Bar(f"{variant} drift p99", "drift_p99_abs", p99, False)]
    if variant == "int8":
        bars += [Bar("int8 max", "max_abs", cfg.int8_max, False),
                 Bar("int8 drift max", "drift_max_abs", cfg.int8_max, False)]
    return bars


def compare(ref: np.ndarray, got: np.ndarray, kind: str, margin: float, prefix: str = "") -> dict[str, float]:
    """Distance and decision figures of ``got`` against ``ref`` (both ``[..., units]``)."""
    d = np.abs(got.astype(np.float64) - ref.astype(np.float64)).reshape(-1)
    return {
        f"{prefix}max_abs": float(d.max()),
        f"{prefix}p99_abs": float(np.percentile(d, 99)),
        f"{prefix}mean_abs": float(d.mean()),
        f"{prefix}steps": int(np.prod(ref.shape[:-1])),
    } | decision_figures(ref, got, kind, margin, prefix)


def long_stream(X: np.ndarray, steps: int, seed: int, lengths: np.ndarray | None = None) -> np.ndarray:
    """``[1, steps, F]``: test sequences back to back in a random order, no resets (each
    up to its true length ``lengths[i]``, when given: the padding is not streamed)."""
    rng = np.random.default_rng(seed)
    lengths = np.full(X.shape[0], X.shape[1]) if lengths is None else np.asarray(lengths)
    order = rng.integers(0, X.shape[0], size=steps // int(lengths.min()) + 1)
    return np.concatenate([X[i, : lengths[i]] for i in order])[None, :steps].astype(np.float32)


def true_steps(lengths: np.ndarray | None, m: int, T: int) -> np.ndarray:
    """``[m, T]`` bool: the steps inside each sequence (all, without ``lengths``)."""
    return np.ones((m, T), bool) if lengths is None else np.arange(T)[None] < np.asarray(lengths)[:, None]


def last_steps(y: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
    """``[m, units]``: each sequence's output at its true last step, from ``y`` ``[m, T, units]``."""
    return y[:, -1] if lengths is None else y[np.arange(len(y)), np.asarray(lengths) - 1]


def engine_outputs(artifacts: Path, variant: str, X_raw: np.ndarray,
                   lengths: np.ndarray | None = None) -> tuple[np.ndarray, float, str]:
    """Run raw (un-normalised) sequences ``[m, T, F]`` through the runtime engine; with
    ``lengths`` ``[m]``, each only up to its true length (the outputs after it are 0).

    Each sequence from a reset state through a single-stream engine, one sample at a time
    (``runtime.replay.replay``, what the device does): ``[m, T, units]``. A window-head
    model runs under its ``sliding:T``, each sequence from a full reset (zero-padded
    warm-up first). Also returns the median per-step time (microseconds) and the backend
    name.
    """
    reset = None if load_contract(artifacts).window.mode == "window_head" else "never"
    engine = Engine.load(artifacts, variant=variant, lanes=1, reset=reset)
    if lengths is None:
        ys = replay(engine, X_raw).as_array()
    else:
        ys = np.zeros((*X_raw.shape[:2], engine.contract.output.units), np.float32)
        for i, y in enumerate(replay(engine, [x[:n] for x, n in zip(X_raw, lengths)]).y):
            ys[i, : len(y)] = y
    samples = X_raw[true_steps(lengths, *X_raw.shape[:2])]
    return ys, _latency_us(artifacts, variant, samples[None], reset=reset), engine.backend


def _latency_us(artifacts: Path, variant: str, X_raw: np.ndarray, steps: int = 2000,
                reset: str | None = "never") -> float:
    engine = Engine.load(artifacts, variant=variant, lanes=1, reset=reset)
    flat = X_raw.reshape(-1, X_raw.shape[-1])
    times = np.empty(steps)
    for i in range(steps):
        t0 = time.perf_counter()
        engine.step(flat[i % len(flat)])
        times[i] = time.perf_counter() - t0
    return float(np.median(times) * 1e6)


def verify_variant(artifacts: Path, variant: str, kind: str, X_raw: np.ndarray, ref: np.ndarray,
                   stream_raw: np.ndarray, stream_ref: np.ndarray, y_true: np.ndarray,
                   cfg: VerifyConfig, lengths: np.ndarray | None = None,
                   drift_roundoff: float = 0.0) -> dict:
    ys, latency, backend = engine_outputs(artifacts, variant, X_raw, lengths)
    stream_ys, _, _ = engine_outputs(artifacts, variant, stream_raw)
    figures = judge(variant, kind, ref, ys, stream_ref, stream_ys, y_true, cfg, lengths, drift_roundoff)
    return figures | {"latency_us": latency, "backend": backend, "outputs": ys}


def judge(variant: str, kind: str, ref: np.ndarray, ys: np.ndarray, stream_ref: np.ndarray,
          stream_ys: np.ndarray, y_true: np.ndarray, cfg: VerifyConfig,
          lengths: np.ndarray | None = None, drift_roundoff: float = 0.0) -> dict:
    """The figures and the verdict of one variant's outputs ``ys`` ``[m, T, units]`` on the
    test windows and ``stream_ys`` ``[1, steps, units]`` on the no-reset stream, against
    the Keras outputs ``ref``/``stream_ref`` and the labels ``y_true`` ``[m]``. With
    ``lengths`` ``[m]``, only each window's true steps count, and its accuracy is that at
    its true last step. ``drift_roundoff``: see the module docstring (0: not measured)."""
    inside = true_steps(lengths, *ref.shape[:2])
    figures = compare(ref[inside], ys[inside], kind, cfg.decisive_margin)
    figures |= compare(stream_ref, stream_ys, kind, cfg.decisive_margin, prefix="drift_")
    figures |= accuracy_figures(last_steps(ref, lengths), last_steps(ys, lengths), y_true, kind)
    figures |= {"test_sequences": int(len(y_true)),
                "accuracy_ci95": list(wilson_interval(figures["accuracy"], len(y_true))),
                "drift_roundoff": float(drift_roundoff)}
    bars = bars_for(variant, cfg, drift_roundoff)
    failed = [f"{b.name}: {b.figure}={figures[b.figure]:.6g}, bar {b.describe()}"
              for b in bars if not b.passes(figures[b.figure])]
    figures["judgeable"] = variant == "float32" or judgeable(figures, cfg.min_decisive_share)
    if not figures["judgeable"]:
        failed = [f"{variant} not judgeable: {figures['decisive_steps']} of {figures['steps']} steps are "
                  f"decisive (Keras margin >= {cfg.decisive_margin:g}), bar: a share >= "
                  f"{cfg.min_decisive_share:g}"]
    figures["bars"] = {b.name: b.describe() for b in bars}
    figures["failed"] = failed
    figures["status"] = "not judgeable" if not figures["judgeable"] else ("fail" if failed else "pass")
    return figures


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95 % for ``z`` 1.96) of a share ``p`` measured on ``n``
    trials: how far a test accuracy on ``n`` recordings can be from the true one."""
    if n <= 0 or not np.isfinite(p):
        return (0.0, 1.0)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def load_reference(artifacts: Path):
    """The manifest, the Keras model and the stored test set of a built artifacts folder:
    raw ``X`` ``[m, T, F]``, ``y`` ``[m]`` and the true ``lengths`` ``[m]`` (None: all T)."""
    contract = load_contract(artifacts)
    model = load_keras_model(artifacts / MODEL_FILE)
    with np.load(artifacts / TEST_DATA, allow_pickle=False) as z:
        X_raw, y = z["X"].astype(np.float32), z["y"]
        lengths = z["lengths"].astype(np.int64) if "lengths" in z.files else None
    if lengths is not None and int(lengths.min()) == X_raw.shape[1]:
        lengths = None
    return contract, model, X_raw, y, lengths


def roundoff_sensitivity(model, stream: np.ndarray, stream_ref: np.ndarray) -> float:
    """Max |dy| between Keras in float32 (``stream_ref``, its outputs on ``stream``
    ``[1, steps, F]``, normalised) and the same model computing in float64: the rounding
    noise the model itself amplifies over the stream. 0 when the model cannot be cloned
    in float64 (then the plain bar applies)."""
    try:
        exact = keras_sequence_outputs(float64_twin(model), stream)
    except Exception as e:  # a measurement aid: a layer that cannot compute in float64 is not an error
        log.warning("no float64 reference for the drift bar (%s): the plain bar applies", e)
        return 0.0
    return float(np.max(np.abs(exact - stream_ref)))


def verify_all(artifacts: Path, cfg: VerifyConfig, *, report: bool = False,
               history: dict | None = None, variants: list[str] | None = None) -> dict[str, dict]:
    """Verify every variant of ``artifacts``; optionally write ``report/``."""
    artifacts = Path(artifacts)
    contract, model, X_raw, y, lengths = load_reference(artifacts)
    kind = contract.output.kind
    ref = np.array(keras_sequence_outputs(model, contract.input.normalise(X_raw)))
    ref[~true_steps(lengths, *ref.shape[:2])] = 0.0  # after a recording's end: not compared
    stream_raw = long_stream(X_raw, cfg.drift_steps, seed=0, lengths=lengths)
    stream_in = contract.input.normalise(stream_raw).astype(np.float32)
    stream_ref = keras_sequence_outputs(model, stream_in)
    roundoff = roundoff_sensitivity(model, stream_in, stream_ref)
    results, outputs = {}, {}
    names = variants or list(contract.variants)
    for n, v in enumerate(names, 1):
        log.info("verifying %s (%d of %d): %d test recordings, a %d-step stream", v, n, len(names), len(y),
                 stream_raw.shape[1])
        results[v] = verify_variant(artifacts, v, kind, X_raw, ref, stream_raw, stream_ref, y, cfg, lengths,
                                    roundoff)
        outputs[v] = results[v].pop("outputs")
    if report:
        write_report(artifacts / "report", contract.to_dict(), results, ref, outputs, y, history, lengths)
    return results
