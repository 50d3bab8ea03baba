"""Training the full-window Keras model (the default job, or a user's architecture).

After the usual fit, a stack of LSTM layers under a Dense head is fine-tuned
*quantization-aware* (``TrainConfig.qat_*``). ``Int8StepSim`` runs the per-gate step graph
(``cells.lstm_cell``) in float and with int8 rounding wherever the converter rounds; the
loss adds how far the int8 outputs drift from float at every step of training windows and
of no-reset streams, trains every prefix's output as an early prediction of the label,
and penalises what int8 holds coarsely (cell states and logits beyond a bound) and
decisions within a margin of the class boundary. The fine-tuned model is kept only if
its simulated int8 model scores better on the validation set than the model before. The
result is still a plain Keras model that the float step model rebuilds exactly.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline.config import ModelConfig, TrainConfig
from pipeline.data import Split

log = logging.getLogger(__name__)

_LAYERS = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "simple_rnn": keras.layers.SimpleRNN}
SIGMOID_RANGE = (0.0, 255 / 256)  # int8 LOGISTIC / SOFTMAX output: scale 1/256, zero point -128
TANH_RANGE = (-1.0, 127 / 128)  # int8 TANH output: scale 1/128, zero point 0


@dataclass(frozen=True)
class TrainResult:
    model: keras.Model
    history: dict[str, list[float]]
    best_epoch: int
    epochs_run: int
    finetuning: dict | None = None  # quantization_aware_finetune's summary, if it ran


def build_model(cfg: ModelConfig, steps: int | None, features: int, classes: int) -> keras.Model:
    """Stacked recurrent layers -> Dense (sigmoid for 2 classes, softmax for more)."""
    layers: list[keras.layers.Layer] = [keras.Input((steps, features), name="samples")]
    rnn = _LAYERS[cfg.kind]
    for i, units in enumerate(cfg.units):
        last = i == len(cfg.units) - 1
        layers.append(rnn(int(units), return_sequences=not last, name=f"{cfg.kind}_{i}"))
        if cfg.dropout > 0 and not last:
            layers.append(keras.layers.Dropout(cfg.dropout, name=f"dropout_{i}"))
    if classes == 2:
        layers.append(keras.layers.Dense(1, activation="sigmoid", name="head"))
    else:
        layers.append(keras.layers.Dense(classes, activation="softmax", name="head"))
    return keras.Sequential(layers, name="stepwise_classifier")


def train(data: Split, model_cfg: ModelConfig, cfg: TrainConfig,
          calibration=None) -> TrainResult:
    """Fit, then fine-tune quantization-aware (``calibration``: what the converter will
    calibrate on, a ``pipeline.convert.Calibration``)."""
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(model_cfg, data.steps, data.features, data.classes)
    loss = "binary_crossentropy" if data.classes == 2 else "sparse_categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss=loss, metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience,
                                         restore_best_weights=True)
    y_train = data.y_train.astype(np.float32 if data.classes == 2 else np.int64)
    y_val = data.y_val.astype(y_train.dtype)
    log.info("training %s on %d sequences (%d validation), up to %d epochs",
             model_cfg.kind, len(data.X_train), len(data.X_val), cfg.epochs)
    hist = model.fit(data.X_train, y_train, validation_data=(data.X_val, y_val),
                     epochs=cfg.epochs, batch_size=cfg.batch_size, callbacks=[stop],
                     verbose=cfg.verbose, shuffle=True)
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    best = int(np.argmin(history["val_loss"])) + 1
    log.info("best epoch %d of %d: val_loss %.4f val_accuracy %.4f", best, len(history["val_loss"]),
             history["val_loss"][best - 1], history["val_accuracy"][best - 1])
    finetuning = quantization_aware_finetune(model, data, cfg, calibration) if cfg.qat_epochs > 0 else None
    if finetuning:
        history.update(finetuning["history"])
    return TrainResult(model, history, best, len(history["val_loss"]),
                       finetuning["summary"] if finetuning else None)


def save_history(result: TrainResult, path: Path) -> None:
    path.write_text(json.dumps({"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                                "history": result.history}, indent=1) + "\n")


# -- quantization-aware fine-tuning ---------------------------------------------------
def fake_quant(v: tf.Tensor, lo, hi) -> tf.Tensor:
    """Round ``v`` to the int8 grid of the range [lo, hi] as the converter does (asymmetric,
    zero exactly representable, clamped); the gradient passes straight through."""
    lo, hi = tf.minimum(lo, 0.0), tf.maximum(hi, 0.0)
    scale = tf.maximum((hi - lo) / 255.0, 1e-8)
    zero = tf.round(-128.0 - lo / scale)
    q = (tf.clip_by_value(tf.round(v / scale) + zero, -128.0, 127.0) - zero) * scale
    return v + tf.stop_gradient(q - v)


def fake_quant_weights(w: tf.Tensor) -> tf.Tensor:
    """Symmetric int8 per output channel (the converter's FULLY_CONNECTED kernels)."""
    scale = tf.maximum(tf.reduce_max(tf.abs(w), axis=0, keepdims=True) / 127.0, 1e-8)
    return w + tf.stop_gradient(tf.round(w / scale) * scale - w)


class _Rounding:
    """Applied to every tensor the int8 step graph holds: records it, and rounds it when
    ``ranges`` (name -> ``[groups, 2]`` min/max) are given. ``groups`` splits the columns
    into equal parts with a range each (the per-gate FULLY_CONNECTED outputs)."""

    def __init__(self, ranges: dict[str, tf.Tensor] | None):
        self.ranges = ranges
        self.values: dict[str, tuple[tf.Tensor, int]] = {}

    def __call__(self, name: str, v: tf.Tensor, groups: int = 1) -> tf.Tensor:
        self.values[name] = (v, groups)
        if self.ranges is None:
            return v
        r = tf.repeat(self.ranges[name], v.shape[-1] // groups, axis=0)  # [columns, 2]
        return fake_quant(v, r[:, 0], r[:, 1])

    def fixed(self, v: tf.Tensor, bounds: tuple[float, float]) -> tf.Tensor:
        return v if self.ranges is None else fake_quant(v, *bounds)

    def stats(self) -> dict[str, tf.Tensor]:
        out = {}
        for name, (v, groups) in self.values.items():
            g = tf.reshape(v, [-1, groups, v.shape[-1] // groups])
            out[name] = tf.stack([tf.reduce_min(g, axis=[0, 2]), tf.reduce_max(g, axis=[0, 2])], 1)
        return out


class Int8StepSim:
    """The per-gate LSTM step graph (``cells.lstm_cell``) in float, or rounded like int8."""

    def __init__(self, model: keras.Model):
        self.lstms = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
        self.head = model.layers[-1]
        self.variables = [tf.Variable(w) for layer in self.lstms + [self.head] for w in layer.get_weights()]
        _, _, _, q = self.step(tf.zeros([1, self.variables[0].shape[0]]), self.zero_states(1))
        self.groups = {name: groups for name, (_, groups) in q.values.items()}  # the tensors int8 rounds

    @staticmethod
    def supports(model: keras.Model) -> bool:
        """LSTM layers (default activations, with bias), dropout, a sigmoid/softmax Dense head."""
        *body, head = model.layers
        lstms = [la for la in body if isinstance(la, keras.layers.LSTM)]
        others_ok = all(isinstance(la, (keras.layers.LSTM, keras.layers.Dropout)) for la in body)
        lstms_ok = all(la.use_bias and la.activation.__name__ == "tanh"
                       and la.recurrent_activation.__name__ == "sigmoid" for la in lstms)
        head_ok = (isinstance(head, keras.layers.Dense) and head.use_bias
                   and head.activation.__name__ in ("sigmoid", "softmax"))
        return bool(lstms) and others_ok and lstms_ok and head_ok

    def copy_to_model(self) -> None:
        weights = iter(v.numpy() for v in self.variables)
        for layer in self.lstms + [self.head]:
            layer.set_weights([next(weights) for _ in layer.get_weights()])

    def zero_states(self, batch) -> list[tf.Tensor]:
        return [tf.zeros([batch, la.units]) for la in self.lstms for _ in "hc"]

    def converter_ranges(self, stats: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The ranges the converter gives each tensor when it calibrates on data over which
        the float tensors span ``stats``: their min/max, except that the bias-free
        ``x @ W_k`` FULLY_CONNECTED feeding a gate's ADD gets the union of its own range
        and the ADD's (what the converter does; test_quantization checks the simulation
        against a converted model)."""
        out = dict(stats)
        for n in range(len(self.lstms)):
            out[f"{n}.zx"] = _widen(stats[f"{n}.zx"], stats[f"{n}.z"])
        return out

    def step(self, x, states, ranges=None):
        """One step ``x [B, F]`` -> (y, logits, new states, the recorded tensors)."""
        q = _Rounding(ranges)
        x, new, w = q("x", x), [], iter(self.variables)
        for n, _ in enumerate(self.lstms):
            W, U, b = next(w), next(w), next(w)
            if ranges is not None:
                W, U = fake_quant_weights(W), fake_quant_weights(U)
            h, c = states[2 * n], states[2 * n + 1]
            z = q(f"{n}.z", q(f"{n}.zx", x @ W, 4) + q(f"{n}.zh", h @ U + b, 4), 4)
            zi, zf, zc, zo = tf.split(z, 4, axis=1)
            i, f, o = (q.fixed(tf.sigmoid(v), SIGMOID_RANGE) for v in (zi, zf, zo))
            g = q.fixed(tf.tanh(zc), TANH_RANGE)
            c = q(f"{n}.c", q(f"{n}.fc", f * c) + q(f"{n}.ic", i * g))
            x = h = q(f"{n}.h", o * q.fixed(tf.tanh(c), TANH_RANGE))
            new += [h, c]
        W, b = next(w), next(w)
        logits = q("logits", x @ (W if ranges is None else fake_quant_weights(W)) + b)
        y = tf.sigmoid(logits) if W.shape[-1] == 1 else tf.nn.softmax(logits)
        return q.fixed(y, SIGMOID_RANGE), logits, new, q


def _penalty(q: _Rounding, cfg: TrainConfig) -> tf.Tensor:
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


def _unroll(sim: Int8StepSim, X: tf.Tensor, ranges, cfg: TrainConfig, states=None):
    """``X [B, T, F]`` from ``states`` (default zero) -> (y ``[B, T, k]``, the final states,
    the ranges the tensors spanned, the mean penalty)."""
    T = int(X.shape[1])
    xs = tf.transpose(X, [1, 0, 2])
    stats0 = {k: tf.tile([[1e9, -1e9]], [g, 1]) for k, g in sim.groups.items()}

    def body(t, states, ys, stats, pen):
        y, _, states, q = sim.step(xs[t], states, ranges)
        seen = q.stats()
        stats = {k: _widen(stats[k], seen[k]) for k in stats}
        return t + 1, states, ys.write(t, y), stats, pen + (_penalty(q, cfg) if ranges is None else 0.0)

    states = sim.zero_states(X.shape[0]) if states is None else list(states)
    init = (0, states, tf.TensorArray(tf.float32, size=T), stats0, 0.0)
    _, states, ys, stats, pen = tf.while_loop(lambda t, *_: t < T, body, init, maximum_iterations=T)
    return tf.transpose(ys.stack(), [1, 0, 2]), states, stats, pen / T


def _widen(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    return tf.stack([tf.minimum(a[:, 0], b[:, 0]), tf.maximum(a[:, 1], b[:, 1])], 1)


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


def _qat_functions(sim: Int8StepSim, cfg: TrainConfig, classes: int, steps: int):
    """``steps``: training steps in all; the learning rate decays to zero over them (cosine)."""
    opt = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(cfg.qat_learning_rate, steps))

    @tf.function(jit_compile=True)
    def rollout(X):
        _, final, stats, _ = _unroll(sim, X, None, cfg)
        return final, stats

    @tf.function(reduce_retracing=True)
    def one_step(x, states):
        _, _, new, q = sim.step(x, states)
        return new, q.stats()

    def calibrate(cal):
        """The ranges the converter calibrates on ``cal`` (a ``convert.Calibration``) for the
        current weights: the same rollouts and continuations (``convert.calibration_inputs``)."""
        stats, finals = None, []
        for X in cal.rollouts():
            final, seen = rollout(X)
            finals.append([v.numpy() for v in final])
            stats = seen if stats is None else {k: _widen(stats[k], seen[k]) for k in stats}
        fed = [stats[f"{n}.{kind}"].numpy() for n in range(len(sim.lstms)) for kind in "hc"]
        rows = cal.continue_until_closed(
            lambda x, states: [v.numpy() for v in one_step(x, states)[0]],
            [np.concatenate(parts) for parts in zip(*finals)],
            [min(0.0, float(r[:, 0].min())) for r in fed], [max(0.0, float(r[:, 1].max())) for r in fed])
        for x, states in rows:
            seen = one_step(x, states)[1]
            stats = {k: _widen(stats[k], seen[k]) for k in stats}
        return sim.converter_ranges(stats)

    @tf.function(jit_compile=True)
    def evaluate(windows, streams, ranges):
        """Float and int8 outputs over windows and streams."""
        return (_unroll(sim, windows, None, cfg)[0], _unroll(sim, windows, ranges, cfg)[0],
                _unroll(sim, streams, None, cfg)[0], _unroll(sim, streams, ranges, cfg)[0])

    @tf.function(jit_compile=True)
    def train_step(windows, labels, chunk, carried_float, carried_int8, ranges):
        """One batch of windows (from zero states) and the next ``chunk`` of the no-reset
        streams, continued from the states the float and the int8 graph carried so far."""
        with tf.GradientTape() as tape:
            yf, _, _, pen_w = _unroll(sim, windows, None, cfg)
            yq = _unroll(sim, windows, ranges, cfg)[0]
            sf, carried_float, _, pen_s = _unroll(sim, chunk, None, cfg, carried_float)
            sq, carried_int8, _, _ = _unroll(sim, chunk, ranges, cfg, carried_int8)
            task = _task_loss(yf, labels, classes, cfg.qat_prefix_weight)
            drift = tf.reduce_mean((yq - yf) ** 2) + tf.reduce_mean((sq - sf) ** 2)
            loss = task + cfg.qat_consistency * drift + pen_w + pen_s
        opt.apply_gradients(zip(tape.gradient(loss, sim.variables), sim.variables))
        return task, drift, carried_float, carried_int8

    return calibrate, evaluate, train_step


def _classes(y: np.ndarray) -> np.ndarray:
    return (y[..., 0] >= 0.5).astype(np.int64) if y.shape[-1] == 1 else np.argmax(y, axis=-1)


def int8_figures(yf, yq, sf, sq) -> dict[str, float]:
    """How close the simulated int8 outputs stay to float over every step of windows
    (``yf``/``yq`` ``[m, T, k]``) and no-reset streams (``sf``/``sq``): p99 and max |dy|
    and the share of steps whose class differs, and ``score``: the worst of them as a
    fraction of its int8 bar (p99 0.03, max 0.10, disagreement 0.5 %)."""
    out, worst = {}, 0.0
    for part, f, q in (("windows", yf, yq), ("streams", sf, sq)):
        d = np.abs(np.asarray(q, np.float64) - np.asarray(f, np.float64))
        fig = {"p99": float(np.percentile(d, 99)), "max": float(d.max()),
               "disagree": float(np.mean(_classes(np.asarray(f)) != _classes(np.asarray(q))))}
        out |= {f"{part}_{k}": v for k, v in fig.items()}
        worst = max(worst, fig["p99"] / 0.03, fig["max"] / 0.10, fig["disagree"] / 0.005)
    return out | {"score": float(worst)}


def quantization_aware_finetune(model: keras.Model, data: Split, cfg: TrainConfig,
                                calibration=None) -> dict | None:
    """Tune ``model`` in place so its int8 step graph tracks it; returns what it did
    (``history`` per epoch and a ``summary``), or None for a model it does not simulate.

    The int8 graph rounds with the ranges the converter calibrates for the current weights
    on ``calibration`` (a ``pipeline.convert.Calibration``; by default ``calibration_set``
    of the training windows with the default settings), recomputed after every epoch.
    The no-reset streams of the loss are carried on from batch to batch (each restarting
    from zero states every ``qat_stream_restart`` batches), so they hold both the states
    just after a reset and those a long stream drifts into. The learning rate decays to
    zero, and the last epoch is kept if the simulated int8 model scores better on the
    validation windows and streams (``int8_figures``) than before, with a validation
    accuracy within half a percent of the one before; otherwise the model is left as it was.
    """
    if not Int8StepSim.supports(model):
        log.info("quantization-aware fine-tuning skipped: it covers LSTM stacks with a "
                 "sigmoid/softmax Dense head")
        return None
    t0 = time.monotonic()
    sim = Int8StepSim(model)
    rng = np.random.default_rng(cfg.seed)
    X, y = data.X_train.astype(np.float32), data.y_train.astype(np.float32 if data.classes == 2 else np.int64)
    if calibration is None:
        from pipeline.config import QuantizeConfig
        from pipeline.convert import calibration_set

        calibration = calibration_set(X, QuantizeConfig())
    batch = min(cfg.batch_size, len(X))
    steps = len(X) // batch
    calibrate, evaluate, train_step = _qat_functions(sim, cfg, data.classes, cfg.qat_epochs * steps)
    validate = _validation(data, evaluate, rng=np.random.default_rng(cfg.seed + 1))
    before = validate(calibrate(calibration))
    original = [v.numpy() for v in sim.variables]
    carried = (sim.zero_states(cfg.qat_streams), sim.zero_states(cfg.qat_streams))
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
        log.debug("qat epoch %d: task loss %.4f, int8 drift %.3g", epoch + 1, *sums / steps)
    after = validate(ranges)
    kept = after["score"] < before["score"] and after["accuracy"] >= before["accuracy"] - 0.005
    if not kept:
        for v, w in zip(sim.variables, original):
            v.assign(w)
    sim.copy_to_model()
    summary = {"method": "quantization-aware fine-tuning against the simulated int8 step graph",
               "epochs": cfg.qat_epochs, "kept": kept, "seconds": round(time.monotonic() - t0, 1),
               "validation_before": before, "validation_after": after}
    log.info("quantization-aware fine-tuning: %d epochs in %.0f s; simulated int8 on the validation set: "
             "score %.2f of the bars (%.2f before), accuracy %.4f (%.4f before): %s", cfg.qat_epochs,
             summary["seconds"], after["score"], before["score"], after["accuracy"], before["accuracy"],
             "kept" if kept else "not better, the model is left as it was")
    return {"history": history, "summary": summary}


def _validation(data: Split, evaluate, rng: np.random.Generator):
    """``ranges`` -> the simulated int8 figures (``int8_figures``) and the float accuracy
    on the validation windows and on 4 no-reset streams of 1000 validation samples."""
    Xv = data.X_val.astype(np.float32)
    streams = _streams(Xv, rng, 4, 1000)

    def validate(ranges) -> dict[str, float]:
        yf, yq, sf, sq = (t.numpy() for t in evaluate(Xv, streams, ranges))
        return int8_figures(yf, yq, sf, sq) | {"accuracy": float(np.mean(_classes(yf[:, -1]) == data.y_val))}

    return validate
