"""Rows 1-3: the usual TensorFlow ways of streaming the trained model (build env only).

1. a ``stateful=True`` batch-1 copy of ``model.keras``, ``predict_on_batch`` per sample;
2. a ``return_state`` copy fed and returning h/c explicitly, ``predict_on_batch`` per
   sample (calling the model eagerly is slower still);
3. stepwise's own one-step graph as a ``tf.function`` (``StepModel.from_keras(model).step``).

Each copy gets the trained weights; the input is the normalised sample, as the engine
feeds the step model.
"""
from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from bench.timing import time_calls
from pipeline.stepmodel import with_weights_of

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"


def load_keras(artifacts: str | Path) -> keras.Model:
    return keras.models.load_model(Path(artifacts) / MODEL_FILE, compile=False, safe_mode=True)


def _state_count(layer: keras.layers.Layer) -> int:
    return 2 if isinstance(layer, keras.layers.LSTM) else 1


def stateful_copy(model: keras.Model) -> keras.Model:
    """The same layers with ``stateful=True`` on every recurrent one, input ``[1, 1, F]``."""
    features = int(model.inputs[0].shape[-1])
    x = inp = keras.Input(batch_shape=(1, 1, features))
    for layer in model.layers:
        config = layer.get_config()
        if isinstance(layer, keras.layers.RNN):
            config["stateful"] = True
        x = type(layer).from_config(config)(x)
    copy = keras.Model(inp, x, name="stateful_copy")
    with_weights_of(copy, model)
    return copy


def return_state_copy(model: keras.Model) -> tuple[keras.Model, list[tuple[int, ...]]]:
    """Inputs ``[x [1, 1, F], state...]`` -> ``[y, new state...]``; and the state shapes."""
    features = int(model.inputs[0].shape[-1])
    x = x_in = keras.Input(batch_shape=(1, 1, features))
    inputs, outputs = [x_in], []
    for layer in model.layers:
        config = layer.get_config()
        if not isinstance(layer, keras.layers.RNN):
            x = type(layer).from_config(config)(x)
            continue
        config |= {"return_state": True, "return_sequences": True}
        states = [keras.Input(batch_shape=(1, layer.units)) for _ in range(_state_count(layer))]
        inputs += states
        seq, *new = type(layer).from_config(config)(x, initial_state=states if len(states) > 1 else states[0])
        outputs += new
        x = seq if layer.return_sequences else seq[:, -1, :]
    copy = keras.Model(inputs, [x, *outputs], name="return_state_copy")
    with_weights_of(copy, model)
    return copy, [tuple(s.shape[1:]) for s in inputs[1:]]


def keras_rows(model: keras.Model, normalised: np.ndarray, steps: int, warmup: int) -> dict[str, dict]:
    """Median/p99 of rows 1-3 over ``normalised`` samples ``[n, F]`` (cycled)."""
    n = len(normalised)
    xs = [s.reshape(1, 1, -1).astype(np.float32) for s in normalised]
    out = {}

    stateful = stateful_copy(model)
    out["keras_stateful"] = time_calls(lambda i: stateful.predict_on_batch(xs[i % n]), steps, warmup)
    log.info("row 1 (Keras stateful): %.0f us", out["keras_stateful"]["median_us"])

    explicit, shapes = return_state_copy(model)
    held = [np.zeros((1, *s), np.float32) for s in shapes]

    def return_state_step(i: int) -> None:
        y, *new = explicit.predict_on_batch([xs[i % n], *held])
        held[:] = new

    out["keras_return_state"] = time_calls(return_state_step, steps, warmup)
    log.info("row 2 (Keras return_state): %.0f us", out["keras_return_state"]["median_us"])

    out["tf_function_step"] = time_calls(_tf_function_step(model, normalised), steps, warmup)
    log.info("row 3 (tf.function step): %.0f us", out["tf_function_step"]["median_us"])
    return out


def _tf_function_step(model: keras.Model, normalised: np.ndarray):
    from pipeline.stepmodel import OUTPUT_NAME, StepModel

    step = StepModel.from_keras(model)
    n = len(normalised)
    held = [tf.constant(z) for z in step.zero_states(1)]
    names = [s.output for s in step.states]

    def call(i: int) -> None:
        out = step.step(tf.constant(normalised[i % n][None]), *held)
        held[:] = [out[k] for k in names]
        out[OUTPUT_NAME].numpy()

    return call
