"""The step graph of ``pipeline.cells`` / ``pipeline.perstep`` in float, or rounded like
the integer variants.

``fake_quant`` rounds a tensor onto the integer grid the converter gives a range (with a
straight-through gradient): int8 asymmetric, or int16 symmetric (the int16x8 variant's
activations). ``StepSim`` runs the step graph of a recurrent stack (LSTM, GRU with
either ``reset_after``, SimpleRNN; Normalization first, LayerNormalization, LeakyReLU
and Dropout between; a sigmoid/softmax Dense head) and rounds every tensor the quantized
model holds, with the ranges the converter would calibrate, and every kernel onto its
int8 per-channel grid. Quantization-aware fine-tuning (``pipeline.qat``) trains through
it; attribution (``pipeline.attribution.one_at_a_time``) keeps one tensor or layer in
float at a time.

Tensor names: ``x`` (the input), ``logits`` and ``y``; the recurrent layer ``n`` (0, 1,
...) and what follows it until the next one are named ``n.<tensor>`` (``0.c``, ``0.h``,
``0.leaky``, ``0.ln.rsqrt``), layers before the first recurrent one ``in.<tensor>``;
``n.W`` / ``head.W`` stand for the kernels of a layer.
"""
from __future__ import annotations

import keras
import tensorflow as tf

SIGMOID_RANGE = (0.0, 255 / 256)  # int8 LOGISTIC / SOFTMAX output: scale 1/256, zero point -128
TANH_RANGE = (-1.0, 127 / 128)  # int8 TANH output: scale 1/128, zero point 0
FIXED16 = {SIGMOID_RANGE: (0.0, 32767 / 32768), TANH_RANGE: (-1.0, 32767 / 32768)}  # int16: scale 1/32768
RECURRENT = (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN)
BETWEEN = (keras.layers.Dropout, keras.layers.LeakyReLU, keras.layers.LayerNormalization)


def fake_quant(v: tf.Tensor, lo, hi, bits: int = 8) -> tf.Tensor:
    """Round ``v`` to the grid the converter gives the range [lo, hi] (clamped): int8
    asymmetric with zero exactly representable, int16 symmetric around zero; the gradient
    passes straight through."""
    lo, hi = tf.minimum(lo, 0.0), tf.maximum(hi, 0.0)
    if bits == 16:
        scale = tf.maximum(tf.maximum(-lo, hi) / 32767.0, 1e-10)
        q = tf.clip_by_value(tf.round(v / scale), -32767.0, 32767.0) * scale
    else:
        scale = tf.maximum((hi - lo) / 255.0, 1e-8)
        zero = tf.round(-128.0 - lo / scale)
        q = (tf.clip_by_value(tf.round(v / scale) + zero, -128.0, 127.0) - zero) * scale
    return v + tf.stop_gradient(q - v)


def fake_quant_weights(w: tf.Tensor) -> tf.Tensor:
    """Symmetric int8 per output channel (the converter's FULLY_CONNECTED kernels, in both
    int8 and int16x8)."""
    scale = tf.maximum(tf.reduce_max(tf.abs(w), axis=0, keepdims=True) / 127.0, 1e-8)
    return w + tf.stop_gradient(tf.round(w / scale) * scale - w)


class Rounding:
    """Applied to every tensor the quantized step graph holds: records it, and rounds it
    when ``ranges`` (name -> ``[groups, 2]`` min/max) are given, except the names in
    ``keep`` (held in float). ``groups`` splits the columns into equal parts with a range
    each (the per-gate FULLY_CONNECTED outputs)."""

    def __init__(self, ranges: dict[str, tf.Tensor] | None, bits: int = 8,
                 keep: dict[str, tf.Tensor] | None = None, split: bool = False):
        self.ranges, self.bits, self.keep, self.split = ranges, bits, keep, split
        self.values: dict[str, tuple[tf.Tensor, int]] = {}
        self.points: list[str] = []  # every name rounded, in graph order

    def _blend(self, name: str, v: tf.Tensor, rounded: tf.Tensor) -> tf.Tensor:
        """``rounded``, or ``v`` where ``keep[name]`` is 1 (a scalar: one traced graph
        serves every choice of what stays in float)."""
        self.points.append(name)
        if self.keep is None or name not in self.keep:
            return rounded
        return rounded + self.keep[name] * (v - rounded)

    def __call__(self, name: str, v: tf.Tensor, groups: int = 1) -> tf.Tensor:
        self.values[name] = (v, groups)
        if self.ranges is None:
            return v
        r = tf.repeat(self.ranges[name], v.shape[-1] // groups, axis=0)  # [columns, 2]
        return self._blend(name, v, fake_quant(v, r[:, 0], r[:, 1], self.bits))

    def fixed(self, name: str, v: tf.Tensor, bounds: tuple[float, float]) -> tf.Tensor:
        """A tensor whose grid is fixed by its op (LOGISTIC, TANH, SOFTMAX outputs); recorded
        only where it is a state (its range decides what calibration feeds)."""
        if name.endswith(".h"):
            self.values[name] = (v, 1)
        if self.ranges is None:
            return v
        return self._blend(name, v, fake_quant(v, *(FIXED16[bounds] if self.bits == 16 else bounds), self.bits))

    def weights(self, name: str, w: tf.Tensor) -> tf.Tensor:
        """``w`` on its int8 per-channel grid; split (``cells.denser``): the grid values
        plus the rest on its own int8 grid."""
        if self.ranges is None:
            return w
        hi = fake_quant_weights(w)
        return self._blend(name, w, hi + fake_quant_weights(w - hi) if self.split else hi)

    def stats(self) -> dict[str, tf.Tensor]:
        out = {}
        for name, (v, groups) in self.values.items():
            g = tf.reshape(v, [-1, groups, v.shape[-1] // groups])
            out[name] = tf.stack([tf.reduce_min(g, axis=[0, 2]), tf.reduce_max(g, axis=[0, 2])], 1)
        return out


def _tanh_sigmoid(layer) -> bool:
    ract = getattr(layer, "recurrent_activation", keras.activations.sigmoid)
    return layer.use_bias and layer.activation.__name__ == "tanh" and ract.__name__ == "sigmoid"


class StepSim:
    """The step graph of a recurrent stack under a Dense head (``supports``) in float, or
    rounded like the int8 (``bits=8``) or int16x8 (``bits=16``) variant; ``split``: kernels
    as the ``split_weights`` recipe converts them."""

    def __init__(self, model: keras.Model, bits: int = 8, split: bool = False):
        *body, self.head = model.layers
        self.bits, self.split = bits, split
        self.blocks: list[tuple[str, keras.layers.Layer]] = []  # (name prefix, layer)
        n = -1
        for layer in body:
            if isinstance(layer, RECURRENT):
                n += 1
            prefix = str(n) if n >= 0 else "in"
            if isinstance(layer, keras.layers.LayerNormalization):
                prefix += ".ln" if f"{prefix}.ln" not in dict(self.blocks) else f".ln{len(self.blocks)}"
            self.blocks.append((prefix, layer))
        self.recurrent = [la for _, la in self.blocks if isinstance(la, RECURRENT)]
        self.trained = [la for _, la in self.blocks if isinstance(la, RECURRENT + (keras.layers.LayerNormalization,))]
        self.trained.append(self.head)
        self.variables = [tf.Variable(w) for layer in self.trained for w in layer.get_weights()]
        self.state_names = [f"{n}.{s}" for n, la in enumerate(self.recurrent)
                            for s in ("hc" if isinstance(la, keras.layers.LSTM) else "h")]
        features = model.inputs[0].shape[-1]
        _, _, _, q = self.step(tf.zeros([1, features]), self.zero_states(1))
        self.groups = {name: groups for name, (_, groups) in q.values.items()}  # the tensors with a range
        ranges = {k: tf.constant([[-1.0, 1.0]] * g) for k, g in self.groups.items()}
        self.points = self.step(tf.zeros([1, features]), self.zero_states(1), self.converter_ranges(ranges))[3].points

    @staticmethod
    def supports(model: keras.Model) -> bool:
        """Recurrent layers (LSTM, GRU, SimpleRNN; tanh/sigmoid activations, with bias), a
        Normalization first, Dropout, LayerNormalization (last axis, no rms scaling) and
        LeakyReLU after a recurrent layer between them, a sigmoid/softmax Dense head."""
        if not model.layers:
            return False
        *body, head = model.layers
        rec = [i for i, la in enumerate(body) if isinstance(la, RECURRENT)]
        if not rec or not all(_tanh_sigmoid(body[i]) for i in rec):
            return False
        for i, la in enumerate(body):
            if isinstance(la, keras.layers.Normalization):
                if i != 0 or la.invert:
                    return False
            elif isinstance(la, keras.layers.LayerNormalization):
                if getattr(la, "rms_scaling", False) or i < rec[0] or list(
                        la.axis if isinstance(la.axis, (list, tuple)) else [la.axis]) not in ([-1], [2]):
                    return False
            elif isinstance(la, keras.layers.LeakyReLU):
                if i == 0 or not isinstance(body[i - 1], RECURRENT):
                    return False
            elif not isinstance(la, RECURRENT + (keras.layers.Dropout,)):
                return False
        return (isinstance(head, keras.layers.Dense) and head.use_bias
                and head.activation.__name__ in ("sigmoid", "softmax"))

    def copy_to_model(self) -> None:
        weights = iter(v.numpy() for v in self.variables)
        for layer in self.trained:
            layer.set_weights([next(weights) for _ in layer.get_weights()])

    def zero_states(self, batch) -> list[tf.Tensor]:
        return [tf.zeros([batch, la.units]) for la in self.recurrent
                for _ in ("hc" if isinstance(la, keras.layers.LSTM) else "h")]

    def converter_ranges(self, stats: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The ranges the converter gives each tensor when it calibrates on data over which
        the float tensors span ``stats``: their min/max, except that the bias-free
        ``x @ W`` FULLY_CONNECTED feeding an ADD gets the union of its own range and the
        ADD's (what the converter does; test_quantization checks the simulation against a
        converted model)."""
        out = dict(stats)
        for name in stats:
            if name.endswith(".zx"):
                out[name] = widen(stats[name], stats[name[:-1]])
        return out

    def step(self, x, states, ranges=None, keep: dict[str, tf.Tensor] | None = None):
        """One step ``x [B, F]`` -> (y, logits, new states, the recorded tensors); rounded
        with ``ranges`` (``converter_ranges``), except that a tensor or kernel (``0.W``) with
        ``keep[name]`` = 1 stays in float."""
        q = Rounding(ranges, self.bits, keep, self.split)
        x, new, w, states = q("x", x), [], iter(self.variables), list(states)
        for prefix, layer in self.blocks:
            if isinstance(layer, keras.layers.LSTM):
                x, got = self._lstm(q, prefix, x, states, w)
            elif isinstance(layer, keras.layers.GRU):
                x, got = self._gru(q, prefix, layer, x, states, w)
            elif isinstance(layer, keras.layers.SimpleRNN):
                x, got = self._simple(q, prefix, x, states, w)
            else:
                x, got = self._between(q, prefix, layer, x, w), []
            new += got
            states = states[len(got):]
        W, b = next(w), next(w)
        logits = q("logits", x @ q.weights("head.W", W) + b)
        y = tf.sigmoid(logits) if W.shape[-1] == 1 else tf.nn.softmax(logits)
        return q.fixed("y", y, SIGMOID_RANGE), logits, new, q

    @staticmethod
    def _lstm(q, n, x, states, w):
        """``cells.lstm_cell``, per-gate layout."""
        W, U, b = q.weights(f"{n}.W", next(w)), q.weights(f"{n}.W", next(w)), next(w)
        h, c = states[0], states[1]
        z = q(f"{n}.z", q(f"{n}.zx", x @ W, 4) + q(f"{n}.zh", h @ U + b, 4), 4)
        zi, zf, zc, zo = tf.split(z, 4, axis=1)
        i, f, o = (q.fixed(f"{n}.{k}", tf.sigmoid(v), SIGMOID_RANGE) for k, v in (("i", zi), ("f", zf), ("o", zo)))
        g = q.fixed(f"{n}.g", tf.tanh(zc), TANH_RANGE)
        c = q(f"{n}.c", q(f"{n}.fc", f * c) + q(f"{n}.ic", i * g))
        h = q(f"{n}.h", o * q.fixed(f"{n}.tanh_c", tf.tanh(c), TANH_RANGE))
        return h, [h, c]

    @staticmethod
    def _gru(q, n, layer, x, states, w):
        """``cells.gru_cell``: one FULLY_CONNECTED per gate (z, r, candidate) and input."""
        W, U, b = q.weights(f"{n}.W", next(w)), q.weights(f"{n}.W", next(w)), next(w)
        h, u = states[0], layer.units
        if layer.reset_after:
            xs = q(f"{n}.xw", x @ W + b[0], 3)
            hs = q(f"{n}.hu", h @ U + b[1], 3)
            xz, xr, xh = tf.split(xs, 3, axis=1)
            hz, hr, hh = tf.split(hs, 3, axis=1)
            z = q.fixed(f"{n}.zg", tf.sigmoid(q(f"{n}.z", xz + hz)), SIGMOID_RANGE)
            r = q.fixed(f"{n}.r", tf.sigmoid(q(f"{n}.rz", xr + hr)), SIGMOID_RANGE)
            pre = xh + q(f"{n}.rh", r * hh)
        else:
            xs = q(f"{n}.xw", x @ W + b, 3)
            xz, xr, xh = tf.split(xs, 3, axis=1)
            hzr = q(f"{n}.hu", h @ U[:, :2 * u], 2)
            hz, hr = tf.split(hzr, 2, axis=1)
            z = q.fixed(f"{n}.zg", tf.sigmoid(q(f"{n}.z", xz + hz)), SIGMOID_RANGE)
            r = q.fixed(f"{n}.r", tf.sigmoid(q(f"{n}.rz", xr + hr)), SIGMOID_RANGE)
            pre = xh + q(f"{n}.rhu", q(f"{n}.rh", r * h) @ U[:, 2 * u:])
        cand = q.fixed(f"{n}.cand", tf.tanh(q(f"{n}.pre", pre)), TANH_RANGE)
        h = q(f"{n}.h", q(f"{n}.zh", z * h) + q(f"{n}.zc", q(f"{n}.1-z", 1.0 - z) * cand))
        return h, [h]

    @staticmethod
    def _simple(q, n, x, states, w):
        """``cells.simple_rnn_cell`` (tanh)."""
        W, U, b = q.weights(f"{n}.W", next(w)), q.weights(f"{n}.W", next(w)), next(w)
        z = q(f"{n}.z", q(f"{n}.zx", x @ W) + q(f"{n}.zh", states[0] @ U + b))
        h = q.fixed(f"{n}.h", tf.tanh(z), TANH_RANGE)
        return h, [h]

    @staticmethod
    def _between(q, p, layer, x, w):
        """``perstep``'s Normalization, LayerNormalization, LeakyReLU; Dropout is the identity."""
        if isinstance(layer, keras.layers.LeakyReLU):
            return q(f"{p}.leaky", tf.nn.leaky_relu(x, alpha=float(layer.negative_slope)))
        if isinstance(layer, keras.layers.Normalization):
            mean = tf.reshape(tf.constant(layer.mean, tf.float32), [-1])
            inv = 1.0 / tf.maximum(tf.sqrt(tf.reshape(tf.constant(layer.variance, tf.float32), [-1])), 1e-7)
            return q(f"{p}.norm", q(f"{p}.centred", x - mean) * inv)
        if isinstance(layer, keras.layers.LayerNormalization):
            gamma = next(w) if layer.scale else None
            beta = next(w) if layer.center else None
            centred = q(f"{p}.centred", x - q(f"{p}.mean", tf.reduce_mean(x, -1, keepdims=True)))
            var = q(f"{p}.var", tf.reduce_mean(q(f"{p}.sq", centred * centred), -1, keepdims=True))
            y = q(f"{p}.normed", centred * q(f"{p}.rsqrt", tf.math.rsqrt(q(f"{p}.var_eps", var + layer.epsilon))))
            y = y if gamma is None else q(f"{p}.scaled", y * gamma)
            return y if beta is None else q(f"{p}.out", y + beta)
        return x


def layer_of(name: str) -> str:
    """The layer a tensor name belongs to: ``0.c``, ``0.W`` -> ``0``; ``0.ln.rsqrt`` ->
    ``0.ln``; ``0.leaky`` -> itself; ``in.norm`` -> ``in``; ``logits``, ``head.W``, ``y``
    -> ``head``; ``x`` -> ``x``."""
    parts = name.split(".")
    if name in ("logits", "y") or parts[0] == "head":
        return "head"
    if len(parts) == 1:
        return name
    if parts[1].startswith("ln") and len(parts) > 2:
        return ".".join(parts[:2])
    return name if parts[1] == "leaky" else parts[0]


def widen(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    return tf.stack([tf.minimum(a[:, 0], b[:, 0]), tf.maximum(a[:, 1], b[:, 1])], 1)
