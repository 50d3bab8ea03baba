"""One-step cells: each streamable Keras layer rebuilt from its weights as plain ops.

A cell maps one step's input ``[batch, F_in]`` and its carried states to the step's
output ``[batch, F_out]`` and the new states. Only ops that convert to plain TFLite
builtins are used (FULLY_CONNECTED, ADD, MUL, LOGISTIC, TANH, SPLIT, CONCATENATION,
STRIDED_SLICE, ...): no fused RNN op, no WHILE, no Flex.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import tensorflow as tf

from pipeline.graph import ChainLayer, refuse

Tensor = tf.Tensor


@dataclass(frozen=True)
class StateSlot:
    suffix: str  # "h", "c", "ring"
    shape: tuple[int, ...]  # without batch


@dataclass
class Cell:
    name: str
    kind: str
    fn: Callable[[Tensor, list[Tensor]], tuple[Tensor, list[Tensor]]]
    states: list[StateSlot] = field(default_factory=list)
    activation: str | None = None  # the output activation, for the output kind


# -- activations ---------------------------------------------------------------------
def _hard_sigmoid(x):
    return tf.nn.relu6(x + 3.0) / 6.0


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "linear": lambda x: x,
    "sigmoid": tf.sigmoid,
    "tanh": tf.tanh,
    "relu": tf.nn.relu,
    "relu6": tf.nn.relu6,
    "softmax": lambda x: tf.nn.softmax(x, axis=-1),
    "elu": tf.nn.elu,
    "selu": tf.nn.selu,
    "softplus": tf.nn.softplus,
    "softsign": tf.nn.softsign,
    "silu": lambda x: x * tf.sigmoid(x),
    "swish": lambda x: x * tf.sigmoid(x),
    "hard_sigmoid": _hard_sigmoid,
    "leaky_relu": lambda x: tf.nn.leaky_relu(x, alpha=0.2),
    "exponential": tf.exp,
}


def activation(layer, fn) -> tuple[str, Callable[[Tensor], Tensor]]:
    name = getattr(fn, "__name__", str(fn))
    if name not in ACTIVATIONS:
        raise refuse(layer, f"activation '{name}' has no one-step equivalent here",
                     f"use one of: {', '.join(sorted(ACTIVATIONS))}")
    return name, ACTIVATIONS[name]


# -- building blocks -----------------------------------------------------------------
def _const(a: np.ndarray) -> Tensor:
    return tf.constant(np.asarray(a, dtype=np.float32))


def _dense(x: Tensor, w: np.ndarray, b: np.ndarray | None = None) -> Tensor:
    """``x @ w + b``; converts to one FULLY_CONNECTED (bias folded in)."""
    y = tf.matmul(x, _const(w))
    return y if b is None else tf.nn.bias_add(y, _const(b))


def _split_dense(x: Tensor, w: np.ndarray, b: np.ndarray | None = None) -> Tensor:
    """``x @ w + b`` as two FULLY_CONNECTED ops: ``w``'s int8 per-channel grid values
    ``hi`` (``round(w / s) * s``, ``s`` = the column's max |w| / 127: exactly what the
    converter's int8 kernel holds) plus the rest ``w - hi`` (below s / 2, on a grid 254
    times finer). Identical in float; quantized, the kernel holds about 15 bits."""
    w = np.asarray(w, np.float64)
    s = np.maximum(np.abs(w).max(axis=0, keepdims=True) / 127.0, 1e-30)
    hi = np.round(w / s) * s
    return _dense(x, hi, b) + _dense(x, w - hi)


def denser(layout: str) -> Callable:
    """The FULLY_CONNECTED builder of ``layout``: ``_dense``, or ``_split_dense`` for a
    layout ending in ``+split`` (the ``split_weights`` recipe)."""
    return _split_dense if layout.endswith("+split") else _dense


def _gate_inputs(x, h, W, U, b, gates: int, layout: str) -> list[Tensor]:
    """Pre-activations of ``gates`` gates: ``x @ W_k + h @ U_k + b_k`` for each k.

    ``per_gate`` builds separate FULLY_CONNECTED ops per gate, so each gate's
    pre-activation has its own quantization range; ``fused`` uses one matmul and SPLIT.
    """
    u, dense = U.shape[0], denser(layout)
    if layout.split("+")[0] == "fused":
        z = dense(x, W) + dense(h, U, b)
        return tf.split(z, gates, axis=1)
    out = []
    for k in range(gates):
        s = slice(k * u, (k + 1) * u)
        out.append(dense(x, W[:, s]) + dense(h, U[:, s], None if b is None else b[s]))
    return out


def safe_name(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9_]", "_", name.lower()).strip("_") or "layer"
    if base[0].isdigit():
        base = "l_" + base
    candidate, n = base, 1
    while candidate in taken or candidate in ("x", "y"):
        candidate, n = f"{base}_{n}", n + 1
    taken.add(candidate)
    return candidate


# -- recurrent layers ----------------------------------------------------------------
def lstm_cell(cl: ChainLayer, name: str, layout: str) -> Cell:
    """The LSTM step. ``pipeline.quantsim.StepSim`` simulates this graph (per-gate layout)
    with int8 rounding at each tensor the converter quantizes: keep the two in step."""
    layer = cl.layer
    w = layer.get_weights()
    W, U, b = w[0], w[1], (w[2] if layer.use_bias else None)
    _, act = activation(layer, layer.activation)
    _, ract = activation(layer, layer.recurrent_activation)
    u = layer.units

    def fn(x, states):
        h, c = states
        zi, zf, zc, zo = _gate_inputs(x, h, W, U, b, 4, layout)
        c2 = ract(zf) * c + ract(zi) * act(zc)
        h2 = ract(zo) * act(c2)
        return h2, [h2, c2]

    return Cell(name, "LSTM", fn, [StateSlot("h", (u,)), StateSlot("c", (u,))])


def gru_cell(cl: ChainLayer, name: str, layout: str) -> Cell:
    layer = cl.layer
    w = layer.get_weights()
    W, U = w[0], w[1]
    b = w[2] if layer.use_bias else None
    _, act = activation(layer, layer.activation)
    _, ract = activation(layer, layer.recurrent_activation)
    u = layer.units
    sl = [slice(k * u, (k + 1) * u) for k in range(3)]
    dense = denser(layout)

    if layer.reset_after:
        b_in = None if b is None else b[0]
        b_rec = None if b is None else b[1]

        def fn(x, states):
            (h,) = states
            xz, xr, xh = [dense(x, W[:, s], None if b_in is None else b_in[s]) for s in sl]
            hz, hr, hh = [dense(h, U[:, s], None if b_rec is None else b_rec[s]) for s in sl]
            z = ract(xz + hz)
            r = ract(xr + hr)
            cand = act(xh + r * hh)
            h2 = z * h + (1.0 - z) * cand
            return h2, [h2]
    else:
        def fn(x, states):
            (h,) = states
            xz, xr, xh = [dense(x, W[:, s], None if b is None else b[s]) for s in sl]
            z = ract(xz + dense(h, U[:, sl[0]]))
            r = ract(xr + dense(h, U[:, sl[1]]))
            cand = act(xh + dense(r * h, U[:, sl[2]]))
            h2 = z * h + (1.0 - z) * cand
            return h2, [h2]

    return Cell(name, "GRU", fn, [StateSlot("h", (u,))])


def simple_rnn_cell(cl: ChainLayer, name: str, layout: str) -> Cell:
    layer = cl.layer
    w = layer.get_weights()
    W, U, b = w[0], w[1], (w[2] if layer.use_bias else None)
    _, act = activation(layer, layer.activation)
    dense = denser(layout)

    def fn(x, states):
        (h,) = states
        h2 = act(dense(x, W) + dense(h, U, b))
        return h2, [h2]

    return Cell(name, "SimpleRNN", fn, [StateSlot("h", (layer.units,))])


def conv1d_cell(cl: ChainLayer, name: str, layout: str) -> Cell:
    """Causal Conv1D: the last ``(k-1)*d`` inputs are carried as a ring state."""
    layer = cl.layer
    w = layer.get_weights()
    K = w[0]  # [k, C_in, C_out]
    b = w[1] if layer.use_bias else None
    k, cin, cout = K.shape
    d = int(layer.dilation_rate[0])
    span = (k - 1) * d
    act_name, act = activation(layer, layer.activation)
    Kflat = K.reshape(k * cin, cout)

    def fn(x, states):
        if span == 0:
            return act(_dense(x, Kflat, b)), []
        (ring,) = states
        window = tf.concat([ring, tf.expand_dims(x, 1)], axis=1)  # [B, span + 1, C_in]
        taps = tf.reshape(window[:, ::d, :], [-1, k * cin])
        return act(_dense(taps, Kflat, b)), [window[:, 1:, :]]

    slots = [StateSlot("ring", (span, int(cin)))] if span else []
    return Cell(name, "Conv1D", fn, slots, activation=act_name)
