"""Quantization-aware fine-tuning of recurrent stacks under a Dense head (``TrainConfig.qat_*``).

``quantsim.StepSim`` runs the step graph (``pipeline.cells``: LSTM, GRU, SimpleRNN, with
Normalization, LayerNormalization, LeakyReLU and Dropout around them) in float and
with int8 rounding wherever the converter rounds; the loss adds how far the int8 outputs
drift from float at every step of training windows and of no-reset streams, trains every
prefix's output as an early prediction of the label, and penalises what int8 holds
coarsely (cell states and logits beyond a bound) and decisions within a margin of the
class boundary. The fine-tuned model is kept only if its simulated int8 model scores
better on the validation set than the model before. The result is still a plain Keras
model that the float step model rebuilds exactly.
"""
from __future__ import annotations

import logging
import time

import keras
import numpy as np
import tensorflow as tf

from pipeline.config import TrainConfig, VerifyConfig
from pipeline.data import Split
from pipeline.quantsim import Rounding, StepSim, widen
from runtime.contract import classes

log = logging.getLogger(__name__)


def _penalty(q: Rounding, cfg: TrainConfig) -> tf.Tensor:
    """Cell states beyond ``qat_state_bound``, logits beyond ``qat_logit_bound`` and
    decisions within ``qat_margin`` of the class boundary, squared."""
    over = lambda v, bound: tf.reduce_mean(tf.nn.relu(tf.abs(v) - bound) ** 2)  # noqa: E731
    logits = q.values["logits"][0]
    if logits.shape[-1] == 1:
        gap = tf.abs(logits[:, 0])
    else:
        top2 = tf.math.top_k(logits, 2).values
        gap = top2[:, 0] - top2[:, 1]
    pen = sum(over(v, cfg.qat_state_bound) for k, (v, _) in q.values.items() if k.endswith(".c"))
    pen += over(logits, cfg.qat_logit_bound)
    return cfg.qat_penalty * pen + cfg.qat_margin_weight * tf.reduce_mean(tf.nn.relu(cfg.qat_margin - gap) ** 2)


def unroll(sim: StepSim, X: tf.Tensor, ranges, cfg: TrainConfig = TrainConfig(), states=None, keep=None):
    """``X [B, T, F]`` from ``states`` (default zero) -> (y ``[B, T, k]``, the final states,
    the ranges the tensors spanned, the mean penalty); ``keep``: ``StepSim.step``'s."""
    T = int(X.shape[1])
    xs = tf.transpose(X, [1, 0, 2])
    stats0 = {k: tf.tile([[1e9, -1e9]], [g, 1]) for k, g in sim.groups.items()}

    def body(t, states, ys, stats, pen):
        y, _, states, q = sim.step(xs[t], states, ranges, keep)
        seen = q.stats()
        stats = {k: widen(stats[k], seen[k]) for k in stats}
        return t + 1, states, ys.write(t, y), stats, pen + (_penalty(q, cfg) if ranges is None else 0.0)

    states = sim.zero_states(X.shape[0]) if states is None else list(states)
    init = (0, states, tf.TensorArray(tf.float32, size=T), stats0, 0.0)
    _, states, ys, stats, pen = tf.while_loop(lambda t, *_: t < T, body, init, maximum_iterations=T)
    return tf.transpose(ys.stack(), [1, 0, 2]), states, stats, pen / T


def _streams(X: np.ndarray, rng: np.random.Generator, n: int, steps: int) -> np.ndarray:
    """``[n, steps, F]``: random training sequences back to back, no resets."""
    pick = rng.integers(0, len(X), size=(n, steps // X.shape[1] + 1))
    return X[pick].reshape(n, -1, X.shape[2])[:, :steps]


def _task_loss(y: tf.Tensor, labels: tf.Tensor, classes: int, prefix_weight: float) -> tf.Tensor:
    """Cross-entropy against the window's label at its last step ``y [B, T, k]``, plus
    ``prefix_weight`` times its mean over the earlier steps: every prefix's output is an
    early prediction of the label (where the prefix cannot tell, it learns the odds)."""
    if classes == 2:
        per_step = keras.losses.binary_crossentropy(tf.ones_like(y) * labels[:, None, None], y)
    else:
        per_step = keras.losses.sparse_categorical_crossentropy(tf.repeat(labels[:, None], y.shape[1], 1), y)
    loss = tf.reduce_mean(per_step[:, -1])
    return loss + prefix_weight * tf.reduce_mean(per_step[:, :-1]) if y.shape[1] > 1 else loss


def calibrator(sim: StepSim, cfg: TrainConfig = TrainConfig()):
    """``calibrate(cal)``: the ranges the converter calibrates on ``cal`` (a
    ``convert.Calibration``) for the simulation's current weights: the same rollouts and
    continuations (``convert.calibration_inputs``)."""
    @tf.function(jit_compile=True)
    def rollout(X):
        _, final, stats, _ = unroll(sim, X, None, cfg)
        return final, stats

    @tf.function(reduce_retracing=True)
    def one_step(x, states):
        _, _, new, q = sim.step(x, states)
        return new, q.stats()

    def calibrate(cal):
        stats, finals = None, []
        for X in cal.rollouts():
            final, seen = rollout(X)
            finals.append([v.numpy() for v in final])
            stats = seen if stats is None else {k: widen(stats[k], seen[k]) for k in stats}
        fed = [stats[name].numpy() for name in sim.state_names]
        rows = cal.continue_until_closed(
            lambda x, states: [v.numpy() for v in one_step(x, states)[0]],
            [np.concatenate(parts) for parts in zip(*finals)],
            [min(0.0, float(r[:, 0].min())) for r in fed], [max(0.0, float(r[:, 1].max())) for r in fed])
        for x, states in rows:
            seen = one_step(x, states)[1]
            stats = {k: widen(stats[k], seen[k]) for k in stats}
        return sim.converter_ranges(stats)

    return calibrate


def _qat_functions(sim: StepSim, cfg: TrainConfig, classes: int, steps: int, teacher: StepSim | None = None):
    """``steps``: training steps in all; the learning rate decays to zero over them (cosine).
    With a ``teacher`` (the user's model, frozen), the loss is how far the rounded and the
    float outputs of ``sim`` are from the teacher's at every step of the windows and the
    streams; without one, the label loss, the drift of the rounded outputs from ``sim``'s
    own float ones, and the penalties."""
    rate = cfg.qat_learning_rate if teacher is None else cfg.qat_distill_learning_rate
    opt = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(rate, steps))
    calibrate = calibrator(sim, cfg)

    @tf.function(jit_compile=True)
    def evaluate(windows, streams, ranges):
        """Float and rounded outputs over windows and streams."""
        return (unroll(sim, windows, None, cfg)[0], unroll(sim, windows, ranges, cfg)[0],
                unroll(sim, streams, None, cfg)[0], unroll(sim, streams, ranges, cfg)[0])

    @tf.function(jit_compile=True)
    def train_step(windows, labels, chunk, carried_float, carried_int8, carried_teacher, ranges):
        """One batch of windows (from zero states) and the next ``chunk`` of the no-reset
        streams, continued from the states the float, the rounded and the teacher graph
        carried so far."""
        if teacher is not None:
            yt = unroll(teacher, windows, None, cfg)[0]
            st, carried_teacher, _, _ = unroll(teacher, chunk, None, cfg, carried_teacher)
        with tf.GradientTape() as tape:
            yf, _, _, pen_w = unroll(sim, windows, None, cfg)
            yq = unroll(sim, windows, ranges, cfg)[0]
            sf, carried_float, _, pen_s = unroll(sim, chunk, None, cfg, carried_float)
            sq, carried_int8, _, _ = unroll(sim, chunk, ranges, cfg, carried_int8)
            if teacher is None:
                task = _task_loss(yf, labels, classes, cfg.qat_prefix_weight)
                drift = tf.reduce_mean((yq - yf) ** 2) + tf.reduce_mean((sq - sf) ** 2)
                loss = task + cfg.qat_consistency * drift + pen_w + pen_s
            else:  # distillation: "task" is how far the float copy moved from the teacher
                task = tf.reduce_mean((yf - yt) ** 2) + tf.reduce_mean((sf - st) ** 2)
                drift = tf.reduce_mean((yq - yt) ** 2) + tf.reduce_mean((sq - st) ** 2)
                loss = cfg.qat_consistency * (drift + task)
        opt.apply_gradients(zip(tape.gradient(loss, sim.variables), sim.variables))
        return task, drift, carried_float, carried_int8, carried_teacher

    return calibrate, evaluate, train_step


def _classes(y: np.ndarray) -> np.ndarray:
    """The class decision of ``contract.classes`` (one unit: sigmoid, else argmax)."""
    return classes(y, "sigmoid")


def rounded_figures(yf, yq, sf, sq, bars: VerifyConfig = VerifyConfig(), bits: int = 8) -> dict[str, float]:
    """How close the simulated rounded outputs stay to float over every step of windows
    (``yf``/``yq`` ``[m, T, k]``) and no-reset streams (``sf``/``sq``): p99 and max |dy|
    and the share of steps whose class differs, and ``score``: the worst of them as a
    fraction of its bar in ``bars`` (p99, max, disagreement 1 - agreement) for the int8
    variant, or with ``bits=16`` the int16x8 one (which has no max bar)."""
    p99, top, agree = ((bars.int16x8_p99, float("inf"), bars.int16x8_agreement) if bits == 16
                       else (bars.int8_p99, bars.int8_max, bars.int8_agreement))
    out, worst = {}, 0.0
    for part, f, q in (("windows", yf, yq), ("streams", sf, sq)):
        d = np.abs(np.asarray(q, np.float64) - np.asarray(f, np.float64))
        fig = {"p99": float(np.percentile(d, 99)), "max": float(d.max()),
               "disagree": float(np.mean(_classes(np.asarray(f)) != _classes(np.asarray(q))))}
        out |= {f"{part}_{k}": v for k, v in fig.items()}
        worst = max(worst, fig["p99"] / p99, fig["max"] / top, fig["disagree"] / (1.0 - agree))
    return out | {"score": float(worst)}


def quantization_aware_finetune(model: keras.Model, data: Split, cfg: TrainConfig,
                                calibration=None, teacher: keras.Model | None = None, bits: int = 8,
                                split: bool = False) -> dict | None:
    """Tune ``model`` in place so its rounded step graph (int8, or with ``bits=16`` the
    int16x8 variant's; ``split``: kernels as ``split_weights`` converts them) tracks it, or
    with ``teacher`` tracks the teacher; returns what it did (``history`` per epoch and a
    ``summary``), or None for a model it does not simulate.

    Without a teacher (stepwise's own training), the loss is the label loss, the drift of
    the rounded outputs from the model's own float ones and the penalties (``_penalty``).
    With one (``stepwise convert``: the user's model, which stays the reference), the loss
    is distillation only: how far the copy's rounded and float outputs are from the
    teacher's at every step; no labels and no penalties, which would move the decisions
    away from the teacher's.

    The rounded graph uses the ranges the converter calibrates for the current weights
    on ``calibration`` (a ``pipeline.convert.Calibration``; by default ``calibration_set``
    of the training windows with the default settings), recomputed after every epoch.
    The no-reset streams of the loss are carried on from batch to batch (each restarting
    from zero states every ``qat_stream_restart`` batches), so they hold both the states
    just after a reset and those a long stream drifts into. The learning rate decays to
    zero, and the last epoch is kept if the simulated rounded model scores better on the
    validation windows and streams (``rounded_figures``, against the teacher where there
    is one) than before, with a validation accuracy (the float model's, or with a teacher
    the rounded copy's) within half a percent of the one before; otherwise the model is
    left as it was.
    """
    if not StepSim.supports(model):
        log.info("quantization-aware fine-tuning skipped: it covers LSTM/GRU/SimpleRNN stacks "
                 "with a sigmoid/softmax Dense head")
        return None
    t0 = time.monotonic()
    sim = StepSim(model, bits, split)
    guide = None if teacher is None else StepSim(teacher)
    rng = np.random.default_rng(cfg.seed)
    X, y = data.X_train.astype(np.float32), data.y_train.astype(np.float32 if data.classes == 2 else np.int64)
    if calibration is None:
        from pipeline.config import QuantizeConfig
        from pipeline.convert import calibration_set

        calibration = calibration_set(X, QuantizeConfig())
    batch = min(cfg.batch_size, len(X))
    steps = len(X) // batch
    calibrate, evaluate, train_step = _qat_functions(sim, cfg, data.classes, cfg.qat_epochs * steps, guide)
    validate = _validation(data, evaluate, np.random.default_rng(cfg.seed + 1), bits, guide)
    before = validate(calibrate(calibration))
    original = [v.numpy() for v in sim.variables]
    carried = [sim.zero_states(cfg.qat_streams) for _ in range(3)]
    history: dict[str, list[float]] = {"qat_task_loss": [], "qat_drift": []}
    ranges = calibrate(calibration)
    for epoch in range(cfg.qat_epochs):
        order, sums = rng.permutation(len(X)), np.zeros(2)
        for b in range(steps):
            idx = order[b * batch:(b + 1) * batch]
            chunk = _streams(X, rng, cfg.qat_streams, cfg.qat_stream_steps)
            restart = (np.arange(cfg.qat_streams) + b) % cfg.qat_stream_restart == 0
            carried = [[np.where(restart[:, None], 0.0, s) for s in states] for states in carried]
            task, drift, *carried = train_step(X[idx], y[idx], chunk, *carried, ranges)
            sums += (float(task), float(drift))
        history["qat_task_loss"].append(sums[0] / steps)
        history["qat_drift"].append(sums[1] / steps)
        ranges = calibrate(calibration)
        log.info("fine-tuning epoch %d/%d: %s %.4g, int%d drift %.3g", epoch + 1, cfg.qat_epochs,
                 "task loss" if guide is None else "float distance from the model", sums[0] / steps, bits,
                 sums[1] / steps)
    after = validate(ranges)
    kept = after["score"] < before["score"] and after["accuracy"] >= before["accuracy"] - 0.005
    if not kept:
        for v, w in zip(sim.variables, original):
            v.assign(w)
    sim.copy_to_model()
    summary = {"method": f"quantization-aware fine-tuning against the simulated int{bits} step graph"
                         + ("" if guide is None else ", distilled from the model as given"),
               "bits": bits, "epochs": cfg.qat_epochs, "kept": kept,
               "seconds": round(time.monotonic() - t0, 1), "validation_before": before, "validation_after": after}
    log.info("quantization-aware fine-tuning: %d epochs in %.0f s; simulated int%d on the validation set: "
             "score %.2f of the bars (%.2f before), accuracy %.4f (%.4f before): %s", cfg.qat_epochs,
             summary["seconds"], bits, after["score"], before["score"], after["accuracy"], before["accuracy"],
             "kept" if kept else "not better, the model is left as it was")
    return {"history": history, "summary": summary}


def _validation(data: Split, evaluate, rng: np.random.Generator, bits: int = 8, teacher: StepSim | None = None):
    """``ranges`` -> the simulated rounded figures (``rounded_figures``) and an accuracy on
    the validation windows and on 4 no-reset streams of 1000 validation samples: without a
    teacher against the model's own float outputs, with the float model's accuracy; with
    one against the teacher's outputs, with the rounded copy's accuracy."""
    Xv = data.X_val.astype(np.float32)
    streams = _streams(Xv, rng, 4, 1000)
    if teacher is not None:
        guide = tf.function(lambda X: unroll(teacher, X, None)[0], jit_compile=True)
        yt, st = guide(Xv).numpy(), guide(streams).numpy()

    def validate(ranges) -> dict[str, float]:
        yf, yq, sf, sq = (t.numpy() for t in evaluate(Xv, streams, ranges))
        if teacher is None:
            return rounded_figures(yf, yq, sf, sq, bits=bits) | {
                "accuracy": float(np.mean(_classes(yf[:, -1]) == data.y_val))}
        return rounded_figures(yt, yq, st, sq, bits=bits) | {
            "accuracy": float(np.mean(_classes(yq[:, -1]) == data.y_val))}

    return validate
