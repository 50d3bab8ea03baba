"""Parity of the one-step model with Keras, layer family by layer family.

In the kws_streaming style: a tiny seeded model runs the whole window in Keras for every
prefix length t; the step model (in TensorFlow, and converted to TFLite float32 and
stepped by tensor *name*) runs one sample at a time, carrying its named states; every
step must agree to 1e-5.
"""
from __future__ import annotations

import numpy as np
import pytest

import keras  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from pipeline.convert import convert  # noqa: E402
from pipeline.stepmodel import SIGNATURE_KEY, StepModel  # noqa: E402

L = keras.layers
T, F = 6, 3


def _seq(*layers, steps=T):
    return keras.Sequential([keras.Input((steps, F)), *layers])


def _free(*layers):
    """A free time axis (TimeDistributed in Keras needs it to run shorter prefixes)."""
    return _seq(*layers, steps=None)


def _functional():
    inp = keras.Input((None, F))
    x = L.GRU(6, return_sequences=True, name="gru_a")(inp)
    x = L.LeakyReLU(0.2)(x)
    x = L.LSTM(5, name="lstm_b")(x)
    return keras.Model(inp, L.Dense(3, activation="softmax")(x))


def _bn():
    bn = L.BatchNormalization()
    m = _seq(L.LSTM(5, return_sequences=True), bn, L.SimpleRNN(4), L.Dense(1, activation="sigmoid"))
    rng = np.random.default_rng(0)
    bn.set_weights([rng.uniform(0.5, 2, 5), rng.normal(0, 0.5, 5), rng.normal(0, 0.3, 5), rng.uniform(0.2, 2, 5)])
    return m


def _normalization():
    norm = L.Normalization()
    norm.adapt(np.random.default_rng(1).normal(2.0, 3.0, (32, T, F)).astype(np.float32))
    return _seq(norm, L.LSTM(6), L.Dense(1, activation="sigmoid"))


def _prelu():
    p = L.PReLU(shared_axes=[1])
    m = _seq(L.SimpleRNN(5, return_sequences=True), p, L.GRU(4), L.Dense(2))
    p.set_weights([np.random.default_rng(2).uniform(0.05, 0.5, (1, 5)).astype(np.float32)])
    return m


MODELS = {
    "lstm": lambda: _seq(L.LSTM(7), L.Dense(1, activation="sigmoid")),
    "gru_reset_after": lambda: _seq(L.GRU(7, reset_after=True), L.Dense(1, activation="sigmoid")),
    "gru_reset_before": lambda: _seq(L.GRU(7, reset_after=False), L.Dense(1, activation="sigmoid")),
    "simple_rnn": lambda: _seq(L.SimpleRNN(7), L.Dense(1, activation="sigmoid")),
    "stacked_lstm_leaky_dropout": lambda: _seq(
        L.LSTM(8, return_sequences=True), L.LeakyReLU(0.1), L.Dropout(0.3),
        L.LSTM(4), L.Dropout(0.2), L.Dense(1, activation="sigmoid")),
    "time_distributed_dense_relu_elu": lambda: _free(
        L.TimeDistributed(L.Dense(5, activation="tanh")), L.ReLU(max_value=1.5), L.LSTM(4, return_sequences=True),
        L.ELU(alpha=0.7), L.Dense(3), L.Activation("softmax")),
    "layer_norm_between": lambda: _seq(L.GRU(6, return_sequences=True), L.LayerNormalization(), L.LSTM(3),
                                       L.Dense(1, activation="sigmoid")),
    "batch_norm": _bn,
    "normalization_layer": _normalization,
    "prelu_shared_time": _prelu,
    "causal_conv1d": lambda: _seq(L.Conv1D(4, 3, padding="causal", dilation_rate=2, activation="relu"),
                                  L.LSTM(5), L.Dense(1, activation="sigmoid")),
    "functional_free_time_axis": _functional,
    "no_bias_lstm": lambda: _seq(L.LSTM(5, use_bias=False, recurrent_activation="hard_sigmoid"), L.Dense(2)),
}


def _keras_prefixes(model, X):
    """Keras's own output for every prefix length: ``[m, T, units]``."""
    outs = []
    for t in range(1, X.shape[1] + 1):
        y = np.asarray(model(X[:, :t], training=False))
        outs.append(y[:, -1] if y.ndim == 3 else y)  # per-step outputs: the newest step
    return np.stack(outs, axis=1)


def _tflite_steps(blob, step, X):
    """Step the converted model by tensor name, carrying states: ``[m, T, units]``."""
    it = Interpreter(model_content=blob)
    runner = it.get_signature_runner(SIGNATURE_KEY)
    names_in = set(runner.get_input_details())
    assert names_in == {"x", *(s.input for s in step.states)}
    states = {s.input: np.zeros((X.shape[0], *s.shape), np.float32) for s in step.states}
    ys = []
    for t in range(X.shape[1]):
        out = runner(x=X[:, t], **states)
        ys.append(out["y"])
        states = {s.input: out[s.output] for s in step.states}
    return np.stack(ys, axis=1)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_step_matches_keras(name, tmp_path):
    keras.utils.set_random_seed(11)
    model = MODELS[name]()
    X = np.random.default_rng(5).normal(0, 1.5, (4, T, F)).astype(np.float32)
    ref = _keras_prefixes(model, X)
    step = StepModel.from_keras(model)
    ys, _, _ = step.rollout(X)
    assert np.abs(ys - ref).max() <= 1e-5
    blob = convert(step.save(tmp_path / "sm"), "float32", [])
    got = _tflite_steps(blob, step, X)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-5


def test_states_are_named_per_layer_and_kind():
    keras.utils.set_random_seed(0)
    step = StepModel.from_keras(_functional())
    assert [(s.name, s.input, s.output, s.shape, s.kind) for s in step.states] == [
        ("gru_a_h", "gru_a_h", "gru_a_h_out", (6,), "h"),
        ("lstm_b_h", "lstm_b_h", "lstm_b_h_out", (5,), "h"),
        ("lstm_b_c", "lstm_b_c", "lstm_b_c_out", (5,), "c"),
    ]
    assert step.output_kind == "softmax"


def test_converted_graph_has_only_plain_builtin_ops(tmp_path):
    keras.utils.set_random_seed(0)
    model = MODELS["stacked_lstm_leaky_dropout"]()
    step = StepModel.from_keras(model)
    blob = convert(step.save(tmp_path / "sm"), "float32", [])
    ops = {op["op_name"] for op in Interpreter(model_content=blob)._get_ops_details()}
    assert ops <= {"FULLY_CONNECTED", "ADD", "MUL", "LOGISTIC", "TANH", "LEAKY_RELU", "SPLIT"}
    assert not any(o in ops for o in ("WHILE", "UNIDIRECTIONAL_SEQUENCE_LSTM", "CUSTOM", "FlexTensorListReserve"))
