"""Quantization: the int8 simulation used for fine-tuning, the calibration that keeps a
carried state on one grid, the effect of quantization-aware fine-tuning on a small
model, and what the manifest records about each variant."""
from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from pipeline import convert as conv
from pipeline.config import load_config
from pipeline.data import split, synthetic
from pipeline.finetune import copy_model
from pipeline.stepmodel import SIGNATURE_KEY, StepModel, keras_sequence_outputs
from pipeline.qat import quantization_aware_finetune, rounded_figures
from pipeline.quantsim import StepSim, fake_quant
from pipeline.train import train
from runtime.contract import load_contract
from runtime.errors import ConfigError


@pytest.fixture(scope="module")
def small():
    """A small stacked LSTM trained briefly (no fine-tuning), its data and config."""
    cfg = load_config(data={"sequences": 500, "seed": 3}, model={"units": [12, 6]},
                      train={"epochs": 16, "verbose": 0, "qat_epochs": 0})
    sp = split(synthetic(cfg.data), cfg.data)
    return cfg, sp, train(sp, cfg.model, cfg.train).model


def _copy(model: keras.Model) -> keras.Model:
    return copy_model(model)


def _int8_errors(model: keras.Model, sp, tmp_path) -> dict[str, float]:
    """p99 |y_int8 - y_keras| over every prefix of the test windows and over a no-reset stream."""
    step = StepModel.from_keras(model)
    qc = dataclasses.replace(load_config().quantize, calibration_sequences=150, calibration_stream_steps=400)
    calibration = conv.calibration_inputs(step, conv.calibration_set(sp.X_train, qc))
    blob = conv.convert(step.save(tmp_path / f"sm_{id(model)}"), "int8", calibration)
    stream = sp.X_test[np.random.default_rng(1).integers(0, len(sp.X_test), 100)].reshape(1, -1, sp.features)
    out = {}
    for name, X in (("windows", sp.X_test), ("stream", stream)):
        ref = keras_sequence_outputs(model, X)
        out[name] = float(np.percentile(np.abs(_run_tflite(blob, step, X) - ref), 99))
    return out


def _run_tflite(blob: bytes, step: StepModel, X: np.ndarray) -> np.ndarray:
    runner = Interpreter(model_content=blob).get_signature_runner(SIGNATURE_KEY)
    states = {s.input: np.zeros((X.shape[0], *s.shape), np.float32) for s in step.states}
    ys = []
    for t in range(X.shape[1]):
        out = runner(x=X[:, t].astype(np.float32), **states)
        ys.append(out["y"])
        states = {s.input: out[s.output] for s in step.states}
    return np.stack(ys, axis=1)


def test_fake_quant_rounds_onto_the_int8_grid_with_straight_through_gradient():
    v = tf.constant([-3.0, -1.0, 0.0, 0.013, 0.5, 2.9, 5.0])
    with tf.GradientTape() as tape:
        tape.watch(v)
        q = fake_quant(v, -1.0, 3.0)
    scale = 4.0 / 255
    np.testing.assert_allclose(q.numpy()[[1, 2]], [-1.0 + 0.0, 0.0], atol=scale / 2)
    assert q.numpy()[2] == 0.0  # zero is exactly representable
    grid = (q.numpy()[1:6] - q.numpy()[2]) / scale
    np.testing.assert_allclose(grid, np.round(grid), atol=1e-4)  # every value on the grid
    assert q.numpy()[-1] == pytest.approx(3.0, abs=scale)  # clamped to the range
    assert q.numpy()[0] == pytest.approx(-1.0, abs=scale)
    np.testing.assert_array_equal(tape.gradient(q, v).numpy(), np.ones(7))


def test_simulated_step_graph_in_float_is_the_keras_model(small):
    _, sp, model = small
    sim = StepSim(model)
    X = sp.X_test[:16]
    states, ys = sim.zero_states(len(X)), []
    for t in range(X.shape[1]):
        y, _, states, _ = sim.step(tf.constant(X[:, t]), states)
        ys.append(y.numpy())
    np.testing.assert_allclose(np.stack(ys, 1), keras_sequence_outputs(model, X), atol=1e-5)
    assert set(sim.groups) >= {"x", "0.z", "0.c", "0.h", "1.c", "logits"}
    assert sim.groups["0.z"] == 4  # one range per gate, as the per-gate layout converts


def test_simulated_step_graph_covers_leaky_relu_and_dropout_between_lstms(small):
    _, sp, _ = small
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((sp.steps, sp.features)), keras.layers.LSTM(6, return_sequences=True),
                              keras.layers.LeakyReLU(0.2), keras.layers.Dropout(0.3), keras.layers.LSTM(3),
                              keras.layers.Dense(1, activation="sigmoid")])
    assert StepSim.supports(model)
    sim, X = StepSim(model), sp.X_test[:8]
    states, ys = sim.zero_states(len(X)), []
    for t in range(X.shape[1]):
        y, _, states, _ = sim.step(tf.constant(X[:, t]), states)
        ys.append(y.numpy())
    np.testing.assert_allclose(np.stack(ys, 1), keras_sequence_outputs(model, X), atol=1e-5)
    assert "0.leaky" in sim.groups  # the LeakyReLU output is a tensor int8 rounds
    norm_first = keras.Sequential([keras.Input((sp.steps, sp.features)), keras.layers.LayerNormalization(),
                                   keras.layers.LSTM(3), keras.layers.Dense(1, activation="sigmoid")])
    assert not StepSim.supports(norm_first)


L = keras.layers
ARCHITECTURES = {  # the layers after the Input of a (3-feature) model the simulation covers
    "gru-ln-gru": lambda: [L.GRU(6, return_sequences=True), L.LayerNormalization(), L.GRU(4),
                           L.Dense(3, activation="softmax")],
    "gru-v1": lambda: [L.GRU(5, reset_after=False), L.Dense(1, activation="sigmoid")],
    "simplernn-ln": lambda: [L.SimpleRNN(6, return_sequences=True), L.LayerNormalization(), L.SimpleRNN(4),
                             L.Dense(1, activation="sigmoid")],
    "norm-lstm-ln-gru": lambda: [_norm(), L.LSTM(5, return_sequences=True), L.LayerNormalization(),
                                 L.Dropout(0.1), L.GRU(3), L.Dense(2, activation="softmax")],
}


def _norm():
    norm = L.Normalization()
    norm.adapt(np.random.default_rng(0).normal(1.0, 3.0, (200, 3)))
    return norm


def _model(name: str, steps=None) -> keras.Model:
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((steps, 3)), *ARCHITECTURES[name]()])


def _sim_outputs(sim, X, ranges=None) -> np.ndarray:
    states, ys = sim.zero_states(len(X)), []
    for t in range(X.shape[1]):
        y, _, states, _ = sim.step(tf.constant(X[:, t]), states, ranges)
        ys.append(y.numpy())
    return np.stack(ys, 1)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_simulated_step_graph_covers_gru_simplernn_and_normalisation(name):
    model = _model(name)
    assert StepSim.supports(model)
    X = np.random.default_rng(2).normal(size=(8, 9, 3)).astype(np.float32)
    np.testing.assert_allclose(_sim_outputs(StepSim(model), X), keras_sequence_outputs(model, X), atol=1e-5)


@pytest.mark.parametrize("name,variant", [("gru-ln-gru", "int16x8"), ("simplernn-ln", "int8")])
def test_simulated_rounding_tracks_the_converted_model(name, variant, tmp_path):
    """The simulation's error is the converted model's error, not some other error: the
    simulated and the converted outputs are much closer to each other than to float."""
    from pipeline.qat import calibrator
    from pipeline.recipes import run_tflite

    model = _model(name)
    X = np.random.default_rng(0).normal(size=(200, 9, 3)).astype(np.float32)
    qc = dataclasses.replace(load_config().quantize, calibration_sequences=100, calibration_stream_steps=300)
    cal = conv.calibration_set(X, qc)
    sim = StepSim(model, 16 if variant == "int16x8" else 8)
    ys = _sim_outputs(sim, X[:32], calibrator(sim)(cal))
    step = StepModel.from_keras(model)
    blob = conv.convert(step.save(tmp_path / "sm"), variant, conv.calibration_inputs(step, cal))
    yt, ref = run_tflite(blob, step, X[:32]), keras_sequence_outputs(model, X[:32])
    converted_error = np.abs(yt - ref).mean()
    assert converted_error > 1e-5
    assert np.abs(ys - yt).mean() < 0.5 * converted_error
    assert 0.5 < np.abs(ys - ref).mean() / converted_error < 2.0


def test_finetuning_of_a_gru_is_kept_when_it_helps_and_a_simplernn_left_when_it_cannot():
    cfg = load_config(data={"sequences": 300, "seed": 3}, train={"verbose": 0})
    sp = split(synthetic(cfg.data), cfg.data)
    qat = dataclasses.replace(cfg.train, qat_epochs=3, qat_stream_steps=14, qat_streams=4, qat_learning_rate=0.02)
    keras.utils.set_random_seed(3)
    # Untrained: its outputs hover at 0.5, so int8 flips decisions that training makes firm.
    gru = keras.Sequential([keras.Input((sp.steps, sp.features)), L.GRU(4), L.Dense(1, activation="sigmoid")])
    before = [w.copy() for w in gru.get_weights()]
    summary = quantization_aware_finetune(gru, sp, qat)["summary"]
    assert summary["kept"] is True
    assert summary["validation_after"]["score"] < summary["validation_before"]["score"]
    assert summary["validation_after"]["accuracy"] >= summary["validation_before"]["accuracy"] - 0.005
    assert any(not np.array_equal(a, b) for a, b in zip(before, gru.get_weights()))
    # All weights zero: every output is 0.5, on the int8 grid; nothing to gain.
    rnn = keras.Sequential([keras.Input((sp.steps, sp.features)), L.SimpleRNN(4), L.Dense(1, activation="sigmoid")])
    rnn.set_weights([np.zeros_like(w) for w in rnn.get_weights()])
    summary = quantization_aware_finetune(rnn, sp, qat)["summary"]
    assert summary["validation_before"]["score"] == 0.0
    assert summary["kept"] is False
    assert all(not w.any() for w in rnn.get_weights())  # left exactly as it was


def test_calibration_puts_each_state_input_on_its_output_grid(small, tmp_path):
    _, sp, model = small
    step = StepModel.from_keras(model)
    qc = dataclasses.replace(load_config().quantize, calibration_sequences=60, calibration_stream_steps=200)
    calibration = conv.calibration_inputs(step, conv.calibration_set(sp.X_train, qc))
    saved = step.save(tmp_path / "sm")
    for variant in ("int16x8", "int8"):
        grids = conv.quantization_summary(conv.convert(saved, variant, calibration), variant)["io_grids"]
        for s in step.states:
            assert grids[s.input]["scale"] == pytest.approx(grids[s.output]["scale"], rel=1e-5), (variant, s.name)
            assert grids[s.input]["zero_point"] == grids[s.output]["zero_point"], (variant, s.name)
        assert grids["y"]["dtype"] == ("int16" if variant == "int16x8" else "int8")


def test_quantization_aware_finetuning_is_kept_only_when_it_helps(small, tmp_path):
    cfg, sp, model = small
    naive = _int8_errors(model, sp, tmp_path)
    tuned = _copy(model)
    qat = dataclasses.replace(cfg.train, qat_epochs=6, qat_stream_steps=28, qat_streams=8)
    result = quantization_aware_finetune(tuned, sp, qat)
    history, summary = result["history"], result["summary"]
    assert len(history["qat_drift"]) == 6 and np.all(np.isfinite(history["qat_drift"]))
    after = _int8_errors(tuned, sp, tmp_path)
    if summary["kept"]:  # kept only when the simulated int8 model scored better on validation
        assert summary["validation_after"]["score"] < summary["validation_before"]["score"]
        assert after["windows"] < naive["windows"] or after["stream"] < naive["stream"], (naive, after)
    else:  # otherwise the model is exactly what it was
        assert all(np.array_equal(a, b) for a, b in zip(tuned.get_weights(), model.get_weights()))
        assert after == naive
    accuracy = np.mean((keras_sequence_outputs(tuned, sp.X_test)[:, -1, 0] >= 0.5) == sp.y_test)
    assert accuracy >= 0.9
    # Still a plain Keras model that the float step model rebuilds exactly.
    ys, _, _ = StepModel.from_keras(tuned).rollout(sp.X_test[:32])
    np.testing.assert_allclose(ys, keras_sequence_outputs(tuned, sp.X_test[:32]), atol=1e-5)


def test_distillation_follows_the_teacher_which_stays_as_it_was(small):
    cfg, sp, model = small
    before = [w.copy() for w in model.get_weights()]
    tuned = _copy(model)
    qat = dataclasses.replace(cfg.train, qat_epochs=3, qat_stream_steps=14, qat_streams=4)
    result = quantization_aware_finetune(tuned, sp, qat, teacher=model, bits=16)
    summary = result["summary"]
    assert summary["bits"] == 16 and "distilled from the model as given" in summary["method"]
    # "task" is the float copy's distance from the teacher: zero before the first step moves it.
    assert 0.0 < result["history"]["qat_task_loss"][0] < 1e-2
    if summary["kept"]:
        assert summary["validation_after"]["score"] < summary["validation_before"]["score"]
        assert any(not np.array_equal(a, b) for a, b in zip(tuned.get_weights(), before))
    else:
        assert all(np.array_equal(a, b) for a, b in zip(tuned.get_weights(), before))
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before))  # the teacher is frozen


def test_rounded_figures_use_the_bars_of_the_variant():
    yf = np.full((4, 500, 1), 0.9)
    yq = yf.copy()
    yq[0, 0, 0] = 0.7  # one step in 2,000 is 0.2 off, on the same side of 0.5: p99 stays 0
    f8, f16 = rounded_figures(yf, yq, yf, yf), rounded_figures(yf, yq, yf, yf, bits=16)
    assert f8["windows_max"] == pytest.approx(0.2) and f8["windows_p99"] == 0.0
    assert f8["score"] == pytest.approx(0.2 / 0.10)  # int8 has a max bar
    assert f16["score"] == 0.0  # int16x8 has none
    yf[1, :3, 0], yq[1, :3, 0] = 0.505, 0.495  # 3 flips in 2,000: 0.15 % disagreement
    assert rounded_figures(yf, yq, yf, yf, bits=16)["score"] == pytest.approx(0.0015 / 0.001)


def test_finetuning_skips_architectures_it_does_not_simulate(small):
    cfg, sp, _ = small
    model = keras.Sequential([keras.Input((sp.steps, sp.features)), keras.layers.Conv1D(4, 3, padding="causal"),
                              keras.layers.GRU(4), keras.layers.Dense(1, activation="sigmoid")])
    before = [w.copy() for w in model.get_weights()]
    assert quantization_aware_finetune(model, sp, dataclasses.replace(cfg.train, qat_epochs=1)) is None
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [{"qat_epochs": -1}, {"qat_state_bound": 0.0}, {"qat_margin": -0.1},
                                 {"qat_stream_steps": 0}, {"qat_consistency": float("nan")},
                                 {"qat_distill_learning_rate": 0.0}])
def test_bad_finetuning_settings_are_refused_by_name(bad):
    (name,) = bad
    with pytest.raises(ConfigError, match=rf"\[train\] {name} must be"):
        load_config(train=bad)


def test_manifest_records_what_each_variant_quantizes(tiny_artifacts):
    contract = load_contract(tiny_artifacts)
    q = {name: v.quantization for name, v in contract.variants.items()}
    assert q["float32"]["scheme"] == "none" and q["float32"]["io_grids"] == {}
    assert set(q["float32"]["ops"]["FULLY_CONNECTED"]) == {"float32"}
    for variant, dtype in (("int16x8", "int16"), ("int8", "int8")):
        summary = q[variant]
        assert summary["float_ops"] == {}, f"{variant} computes some ops in float"
        for op in ("FULLY_CONNECTED", "ADD", "MUL", "LOGISTIC", "TANH"):
            assert set(summary["ops"][op]) == {dtype}, (variant, op, summary["ops"][op])
        assert summary["constant_dtypes"].get("int8", 0) > 0  # weights
        assert set(summary["io"].values()) == {"float32"}  # the runtime feeds floats
        for s in contract.states:  # every state is carried on one integer grid
            assert summary["io_grids"][s.input]["dtype"] == dtype
            assert summary["io_grids"][s.input]["scale"] == pytest.approx(
                summary["io_grids"][s.output]["scale"], rel=1e-5)
