"""Attribution by keeping one layer or tensor at a time in float in the simulated step
graph, on a hand-made model where one tensor provably causes the error."""
from __future__ import annotations

import dataclasses

import keras
import numpy as np

from pipeline import convert as conv
from pipeline.attribution import one_at_a_time, stream_windows
from pipeline.config import load_config


def test_one_at_a_time_names_the_input_grid_that_a_stray_feature_coarsened():
    """SimpleRNN(3) -> Dense(1, sigmoid) that ignores feature 0 (its kernel row is zero) and
    reads feature 1. Calibration sees feature 0 spanning +-500, so the input tensor ``x``
    (one int8 range for both features) gets a grid step of about 4: feature 1, about
    N(0, 1), rounds to 0 or +-4. Nothing else is coarse (feature 0 adds nothing to any
    other tensor), so keeping ``x`` in float removes almost all of the error and keeping
    any other layer removes little of it."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, 2)), keras.layers.SimpleRNN(3),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.layers[0].set_weights([np.array([[0.0, 0.0, 0.0], [0.8, -0.5, 0.3]], np.float32),
                                 np.array([[0.3, 0.1, 0.0], [0.0, 0.4, -0.2], [0.1, 0.0, 0.3]], np.float32),
                                 np.zeros(3, np.float32)])
    model.layers[1].set_weights([np.array([[2.0], [-1.5], [1.0]], np.float32), np.zeros(1, np.float32)])
    rng = np.random.default_rng(1)
    X = np.stack([rng.uniform(-500, 500, (120, 8)), rng.normal(0, 1, (120, 8))], axis=-1).astype(np.float32)
    qc = dataclasses.replace(load_config().quantize, calibration_sequences=120, calibration_stream_steps=160)
    test = X.copy()
    test[..., 0] = 0.0
    found = one_at_a_time(model, conv.calibration_set(X, qc), stream_windows(test, 4, 200), bits=8)
    assert found["bits"] == 8 and found["steps"] == 800
    assert found["all_rounded"]["rms"] > 0.05  # the coarse input grid costs a lot
    layers = {r["name"]: r for r in found["layers"]}
    assert set(layers) == {"x", "0", "head"}
    assert found["layers"][0]["name"] == "x" and layers["x"]["removed"] > 0.9
    assert layers["0"]["removed"] < 0.2 and layers["head"]["removed"] < 0.2
    assert found["tensors"][0]["name"] == "x"
    assert all(r["removed"] < 0.2 for r in found["tensors"][1:])
    assert layers["x"]["p99"] < found["all_rounded"]["p99"] / 5


def test_one_at_a_time_does_not_apply_to_models_the_simulation_does_not_cover():
    model = keras.Sequential([keras.Input((None, 2)), keras.layers.Conv1D(2, 2, padding="causal"),
                              keras.layers.SimpleRNN(3), keras.layers.Dense(1, activation="sigmoid")])
    X = np.zeros((4, 5, 2), np.float32)
    assert one_at_a_time(model, conv.calibration_set(X, load_config().quantize), X) is None
