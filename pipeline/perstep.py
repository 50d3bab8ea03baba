"""One-step forms of the stateless per-step layers (Dense, norms, activations)."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from pipeline.cells import Cell, _const, activation, denser
from pipeline.graph import ChainLayer, refuse

IDENTITY = (
    "Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "ActivityRegularization", "Identity",
)


def _stateless(name: str, kind: str, fn, act: str | None = None) -> Cell:
    return Cell(name, kind, lambda x, states: (fn(x), []), [], activation=act)


def dense_cell(cl: ChainLayer, name: str, layout: str) -> Cell:
    layer = cl.layer
    if type(layer).__name__ == "TimeDistributed":
        layer = layer.layer
        if type(layer).__name__ != "Dense":
            raise refuse(cl.layer, f"TimeDistributed({type(layer).__name__}) is not supported",
                         "wrap only Dense layers in TimeDistributed")
    w = layer.get_weights()
    W, b = w[0], (w[1] if layer.use_bias else None)
    act_name, act = activation(layer, layer.activation)
    dense = denser(layout)
    return _stateless(name, "Dense", lambda x: act(dense(x, W, b)), act_name)


def activation_cell(cl: ChainLayer, name: str, layout: str) -> Cell:
    act_name, act = activation(cl.layer, cl.layer.activation)
    return _stateless(name, "Activation", act, act_name)


def relu_cell(cl: ChainLayer, name: str, layout: str) -> Cell:
    layer = cl.layer
    if layer.threshold != 0.0:
        raise refuse(layer, "a non-zero threshold is not supported", "use threshold=0")
    slope, top = float(layer.negative_slope), layer.max_value

    def fn(x):
        y = tf.nn.relu(x) if slope == 0.0 else tf.nn.leaky_relu(x, alpha=slope)
        return y if top is None else tf.minimum(y, float(top))

    return _stateless(name, "ReLU", fn, "relu")


def leaky_relu_cell(cl: ChainLayer, name: str, layout: str) -> Cell:
    slope = float(cl.layer.negative_slope)
    return _stateless(name, "LeakyReLU", lambda x: tf.nn.leaky_relu(x, alpha=slope), "leaky_relu")


def elu_cell(cl: ChainLayer, name: str, layout: str) -> Cell:
    alpha = float(cl.layer.alpha)
    if alpha == 1.0:
        return _stateless(name, "ELU", tf.nn.elu, "elu")
    return _stateless(name, "ELU", lambda x: tf.where(x > 0, x, alpha * (tf.exp(x) - 1.0)), "elu")


def prelu_cell(cl: ChainLayer, name: str, layout: str) -> Cell:
    layer = cl.layer
    alpha = layer.get_weights()[0]
    if cl.has_time:  # alpha is [T or 1, C]: it must not vary along time
        if alpha.ndim != 2 or (alpha.shape[0] != 1 and not np.allclose(alpha, alpha[:1])):
            raise refuse(layer, "its alpha weights differ per time step",
                         "create it with shared_axes=[1] so alpha is shared across time")
        alpha = alpha[0]
    a = _const(alpha)
    return _stateless(name, "PReLU", lambda x: tf.nn.relu(x) - a * tf.nn.relu(-x), "prelu")


def batch_norm_cell(cl: ChainLayer, name: str, layout: str) -> Cell:
    layer = cl.layer
    gamma = layer.gamma.numpy() if layer.scale else 1.0
    beta = layer.beta.numpy() if layer.center else 0.0
    mean, var = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    scale = gamma / np.sqrt(var + layer.epsilon)
    shift = beta - mean * scale
    s, t = _const(scale), _const(shift)
    return _stateless(name, "BatchNormalization", lambda x: x * s + t)


def layer_norm_cell(cl: ChainLayer, name: str, layout: str) -> Cell:
    layer = cl.layer
    if getattr(layer, "rms_scaling", False):
        raise refuse(layer, "rms_scaling=True is not supported", "use rms_scaling=False")
    eps = float(layer.epsilon)
    gamma = _const(layer.gamma.numpy()) if layer.scale else None
    beta = _const(layer.beta.numpy()) if layer.center else None

    def fn(x):
        mean = tf.reduce_mean(x, axis=-1, keepdims=True)
        centred = x - mean
        # centred * centred, not tf.square: the converter would fuse the latter into
        # SQUARED_DIFFERENCE, which has no int16 kernel (the int16x8 variant could not run).
        var = tf.reduce_mean(centred * centred, axis=-1, keepdims=True)
        y = centred * tf.math.rsqrt(var + eps)
        if gamma is not None:
            y = y * gamma
        return y if beta is None else y + beta

    return _stateless(name, "LayerNormalization", fn)


def normalization_cell(cl: ChainLayer, name: str, layout: str) -> Cell:
    layer = cl.layer
    if layer.invert:
        raise refuse(layer, "invert=True is not supported", "use invert=False")
    mean = np.asarray(layer.mean).reshape(-1)
    std = np.maximum(np.sqrt(np.asarray(layer.variance).reshape(-1)), 1e-7)
    m, inv = _const(mean), _const(1.0 / std)
    return _stateless(name, "Normalization", lambda x: (x - m) * inv)


def identity_cell(cl: ChainLayer, name: str, layout: str) -> Cell:
    return _stateless(name, type(cl.layer).__name__, lambda x: x)

