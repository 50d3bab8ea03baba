"""The per-gate LSTM step graph of ``cells.lstm_cell`` in float, or rounded like int8.

``fake_quant`` rounds a tensor onto the integer grid the converter gives a range (with a
straight-through gradient); ``Int8StepSim`` runs the step graph and rounds every tensor
the int8 model holds, with the ranges the converter would calibrate. Quantization-aware
fine-tuning (``pipeline.qat``) trains through it.
"""
from __future__ import annotations

import keras
import tensorflow as tf

SIGMOID_RANGE = (0.0, 255 / 256)  # int8 LOGISTIC / SOFTMAX output: scale 1/256, zero point -128
TANH_RANGE = (-1.0, 127 / 128)  # int8 TANH output: scale 1/128, zero point 0


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


class Rounding:
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
    """The per-gate LSTM step graph (``cells.lstm_cell``, with LeakyReLU and Dropout between
    the layers) in float, or rounded like int8."""

    def __init__(self, model: keras.Model):
        self.lstms = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
        self.slopes = {}  # LSTM index -> the negative slope of the LeakyReLU after it
        for layer in model.layers:
            if isinstance(layer, keras.layers.LeakyReLU):
                self.slopes[len([la for la in model.layers[:model.layers.index(layer)]
                                 if isinstance(la, keras.layers.LSTM)]) - 1] = float(layer.negative_slope)
        self.head = model.layers[-1]
        self.variables = [tf.Variable(w) for layer in self.lstms + [self.head] for w in layer.get_weights()]
        _, _, _, q = self.step(tf.zeros([1, self.variables[0].shape[0]]), self.zero_states(1))
        self.groups = {name: groups for name, (_, groups) in q.values.items()}  # the tensors int8 rounds

    @staticmethod
    def supports(model: keras.Model) -> bool:
        """LSTM layers (default activations, with bias), Dropout and one LeakyReLU after an
        LSTM between them, a sigmoid/softmax Dense head."""
        *body, head = model.layers
        lstms = [la for la in body if isinstance(la, keras.layers.LSTM)]
        kinds = (keras.layers.LSTM, keras.layers.Dropout, keras.layers.LeakyReLU)
        leaky = [i for i, la in enumerate(body) if isinstance(la, keras.layers.LeakyReLU)]
        others_ok = (all(isinstance(la, kinds) for la in body) and bool(body)
                     and isinstance(body[0], keras.layers.LSTM)
                     and all(not isinstance(body[i - 1], keras.layers.LeakyReLU) for i in leaky))
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
            out[f"{n}.zx"] = widen(stats[f"{n}.zx"], stats[f"{n}.z"])
        return out

    def step(self, x, states, ranges=None):
        """One step ``x [B, F]`` -> (y, logits, new states, the recorded tensors)."""
        q = Rounding(ranges)
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
            if n in self.slopes:
                x = q(f"{n}.leaky", tf.nn.leaky_relu(h, alpha=self.slopes[n]))
        W, b = next(w), next(w)
        logits = q("logits", x @ (W if ranges is None else fake_quant_weights(W)) + b)
        y = tf.sigmoid(logits) if W.shape[-1] == 1 else tf.nn.softmax(logits)
        return q.fixed(y, SIGMOID_RANGE), logits, new, q


def widen(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    return tf.stack([tf.minimum(a[:, 0], b[:, 0]), tf.maximum(a[:, 1], b[:, 1])], 1)
