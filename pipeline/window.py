"""Window heads: a head that reads a fixed window of per-step outputs, streamed exactly.

``Flatten -> Dense``, ``Reshape([T * units])``, ``GlobalAverage/MaxPooling1D`` and
``Average/MaxPooling1D(pool_size=T)`` read the last T per-step outputs of the layer below
them at once. The step model keeps those outputs in a ring buffer state ``[T, units]``
and computes the head from it; run under ``sliding:T`` (T staggered lanes, each with its
own ring) the output at every step is the Keras model on the window ending there.

Reference outputs for parity: the Keras model on each window ending at step t, left-
padded with zeros (the model's input space) while fewer than T samples have arrived.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from pipeline.cells import Cell, StateSlot
from pipeline.graph import ChainLayer

MODE = "window_head"


def window_head_cell(cl: ChainLayer, name: str, layout: str) -> Cell:
    """The head over a ring of the last ``steps`` inputs ``[batch, steps, units]``."""
    steps, units = int(cl.steps), int(cl.layer.input.shape[-1])
    reduce = cl.head

    def fn(x, states):
        (ring,) = states
        window = tf.concat([ring[:, 1:, :], tf.expand_dims(x, 1)], axis=1)  # [B, steps, units]
        if reduce == "flatten":
            y = tf.reshape(window, [-1, steps * units])
        elif reduce == "mean":
            y = tf.reduce_mean(window, axis=1)
        else:
            y = tf.reduce_max(window, axis=1)
        return y, [window]

    return Cell(name, cl.kind, fn, [StateSlot("ring", (steps, units))])


def padded_windows(X: np.ndarray, window: int) -> np.ndarray:
    """Every window ending at each step of ``X`` ``[m, L, F]``, zero-left-padded:
    ``[m, L, window, F]``."""
    m, L, F = X.shape
    padded = np.concatenate([np.zeros((m, window - 1, F), X.dtype), X], axis=1)
    idx = np.arange(L)[:, None] + np.arange(window)[None, :]  # [L, window]
    return padded[:, idx, :]


def keras_window_outputs(model: keras.Model, X: np.ndarray, window: int,
                         batch: int = 4096) -> np.ndarray:
    """The Keras model on the (zero-left-padded) window ending at every step of ``X``
    ``[m, L, F]`` (normalised): ``[m, L, units]``."""
    m, L, F = X.shape
    flat = padded_windows(np.asarray(X, np.float32), window).reshape(m * L, window, F)
    out = [np.asarray(model(tf.constant(flat[i:i + batch]), training=False), np.float32)
           for i in range(0, len(flat), batch)]
    y = np.concatenate(out)
    return y.reshape(m, L, -1)
