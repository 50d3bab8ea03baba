"""The recipe search on tiny seeded models: a recipe that provably helps is the one kept,
the search stops or goes on as configured, and the manifest's record of what was tried."""
from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from pipeline import recipes
from pipeline.config import load_config
from pipeline.data import Split
from pipeline.stepmodel import keras_sequence_outputs
from runtime.errors import ConfigError


@pytest.fixture(scope="module")
def lopsided():
    """SimpleRNN(4) -> Dense(1, sigmoid) whose input kernel has one column of +-200, the
    others below 1; both features carry the same signal, so that column's unit always sums
    to exactly 0 (no activation range grows). One weight scale per tensor (200/127) rounds
    the small weights away; one per output channel keeps them: per-channel provably helps.
    Labels are the model's own final decisions."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((6, 2)), keras.layers.SimpleRNN(4), keras.layers.Dense(1, activation="sigmoid")])
    rng = np.random.default_rng(0)
    W = rng.normal(0, 0.6, (2, 4)).astype(np.float32)
    W[:, 0] = [200.0, -200.0]
    U = rng.normal(0, 0.3, (4, 4)).astype(np.float32)
    U[0], U[:, 0] = 0.0, 0.0
    model.layers[0].set_weights([W, U, np.zeros(4, np.float32)])
    model.layers[1].set_weights([np.array([[0.0], [1.5], [-1.5], [1.2]], np.float32), np.zeros(1, np.float32)])
    X = np.repeat(rng.normal(0, 1, (600, 6, 1)), 2, axis=2).astype(np.float32)
    last = keras_sequence_outputs(model, X)[:, -1, 0]
    X, y = X[np.abs(last - 0.5) > 0.05][:300], (last[np.abs(last - 0.5) > 0.05][:300] >= 0.5).astype(np.int64)
    sp = Split(X[:160], y[:160], X[160:240], y[160:240], X[240:], y[240:], np.zeros(2, np.float32),
               np.ones(2, np.float32), ("a", "b"), 2, "lopsided")
    return model, sp


def _search(model, sp, tmp_path, variant="int8", **quantize):
    base = {"calibration_sequences": 80, "calibration_stream_steps": 120, "search_stream_steps": 200} | quantize
    cfg = load_config(quantize=base, verify={"min_decisive_share": 0.0})
    return recipes.search(recipes.Search(model, sp, cfg, tmp_path), variant)


def test_per_channel_scales_fix_a_model_that_per_tensor_scales_break(lopsided, tmp_path):
    model, sp = lopsided
    _, record = _search(model, sp, tmp_path, recipes=["per_tensor", "per_gate", "fused"])
    tried = {t["recipe"]: t for t in record["tried"]}
    assert tried["per_tensor"]["status"] == "fail" and tried["per_tensor"]["missed"] >= 1
    assert tried["per_gate"]["status"] == "pass"
    assert record["name"] == "per_gate" and record["settings"]["per_channel"] is True
    assert list(tried) == ["per_tensor", "per_gate"]  # until_pass: stops at the first that passes
    assert record["selected_on"] == "validation split"


def test_search_all_keeps_the_best_passing_recipe_and_off_keeps_the_first(lopsided, tmp_path):
    model, sp = lopsided
    _, record = _search(model, sp, tmp_path, recipes=["per_tensor", "per_gate", "long_stream", "fused"],
                        search="all")  # no LSTM: one layout only
    assert [t["recipe"] for t in record["tried"]] == ["per_tensor", "per_gate", "long_stream"]
    passing = [t for t in record["tried"] if t["status"] == "pass"]
    assert record["name"] == min(passing, key=lambda t: (t["missed"], t["worst"]))["recipe"]
    _, off = _search(model, sp, tmp_path, recipes=["per_tensor", "per_gate"], search="off")
    assert off["name"] == "per_tensor" and len(off["tried"]) == 1  # kept although it fails: no search


def test_when_no_recipe_passes_the_closest_is_kept(lopsided, tmp_path):
    model, sp = lopsided
    blob, record = _search(model, sp, tmp_path, recipes=["per_tensor"], search="all")
    assert record["name"] == "per_tensor" and record["tried"][0]["status"] == "fail" and blob[4:8] == b"TFL3"


@pytest.fixture(scope="module")
def cancelling():
    """SimpleRNN(2) -> Dense(1, sigmoid) fed two equal features, whose unit 0 reads them
    through the kernel column [200, -199.4]: 0.6 x, the difference of two large weights.
    On that column's int8 grid (step 200/127) -199.4 rounds to -200 and the unit reads 0:
    no activation grid, however fine (int16x8), brings the signal back; the kernel split
    into its grid values and the rest (``split_weights``) holds -199.4 to within 0.002."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((6, 2)), keras.layers.SimpleRNN(2),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.layers[0].set_weights([np.array([[200.0, 0.4], [-199.4, 0.4]], np.float32),
                                 np.array([[0.3, 0.0], [0.0, 0.3]], np.float32), np.zeros(2, np.float32)])
    model.layers[1].set_weights([np.array([[3.0], [0.5]], np.float32), np.zeros(1, np.float32)])
    rng = np.random.default_rng(0)
    X = np.repeat(rng.normal(0, 1, (600, 6, 1)), 2, axis=2).astype(np.float32)
    last = keras_sequence_outputs(model, X)[:, -1, 0]
    X, y = X[np.abs(last - 0.5) > 0.05][:300], (last[np.abs(last - 0.5) > 0.05][:300] >= 0.5).astype(np.int64)
    sp = Split(X[:160], y[:160], X[160:240], y[160:240], X[240:], y[240:], np.zeros(2, np.float32),
               np.ones(2, np.float32), ("a", "b"), 2, "cancelling")
    return model, sp


def test_split_kernels_fix_a_model_whose_int8_kernel_grid_loses_the_signal(cancelling, tmp_path):
    model, sp = cancelling
    _, record = _search(model, sp, tmp_path, variant="int16x8", recipes=["per_gate", "split_weights"])
    tried = {t["recipe"]: t for t in record["tried"]}
    assert tried["per_gate"]["status"] == "fail" and tried["per_gate"]["p99_abs"] > 0.05
    assert tried["split_weights"]["status"] == "pass" and tried["split_weights"]["p99_abs"] < 0.01
    assert record["name"] == "split_weights" and record["settings"]["layout"] == "per_gate+split"


def test_split_kernels_are_the_same_model_in_float(cancelling):
    from pipeline.stepmodel import StepModel

    model, sp = cancelling
    for layer in (model, keras.Sequential([keras.Input((6, 2)), keras.layers.GRU(3, return_sequences=True),
                                           keras.layers.LSTM(2), keras.layers.Dense(2, activation="softmax")])):
        ys = StepModel.from_keras(layer, "per_gate+split").reference_rollout(sp.X_test[:16])
        np.testing.assert_allclose(ys, keras_sequence_outputs(layer, sp.X_test[:16]), atol=1e-5)


def test_trim_drops_the_rows_with_the_most_extreme_cell_states():
    class Step:  # the interface trim_rows uses: states, and a step that leaves c as it is
        states = [dataclasses.make_dataclass("S", ["input", "output", "kind"])("c", "c_out", "c")]

        @staticmethod
        def step(x, c):
            return {"c_out": c}

    rows = [{"x": np.zeros((1, 2), np.float32), "c": np.full((1, 3), float(v), np.float32)} for v in range(1000)]
    kept = recipes.trim_rows(rows, Step, 0.01)
    assert len(kept) == 990 and max(float(r["c"].max()) for r in kept) == 989.0


@pytest.mark.parametrize("bad", [{"recipes": ["magic"]}, {"recipes": []}, {"search": "sometimes"},
                                 {"search_stream_steps": 0}])
def test_bad_recipe_settings_are_refused_by_name(bad):
    with pytest.raises(ConfigError, match=r"\[quantize\]"):
        load_config(quantize=bad)


def test_attribution_names_the_layer_where_per_tensor_scales_lose_the_signal(lopsided, tmp_path):
    from pipeline import convert as conv
    from pipeline.attribution import attribute

    model, sp = lopsided
    cfg = load_config(quantize={"calibration_sequences": 80, "calibration_stream_steps": 120})
    s = recipes.Search(model, sp, cfg, tmp_path)
    step, saved = s.step_model("per_gate")
    float_blob = conv.convert(saved, "float32", [])
    names = [(st.input, st.output, st.shape) for st in step.states]
    found = {}
    for per_channel in (True, False):
        r = recipes.Recipe("x", per_channel=per_channel)
        blob = conv.convert(saved, "int8", s.calibration(r), per_channel=per_channel)
        found[per_channel] = attribute(float_blob, blob, names, sp.X_test[:16])
    layers = {r["layer"]: r for r in found[False]["layers"]}
    cell = step.cells[0].name
    assert cell in layers and layers[cell]["rel_error"] > 0.2  # the recurrent layer loses the signal
    good = {r["layer"]: r for r in found[True]["layers"]}
    assert good[cell]["rel_error"] < layers[cell]["rel_error"] / 4
    assert all(0.0 <= r["clamped"] <= 1.0 and r["lsb"] >= 0 for r in found[True]["tensors"])


def test_one_at_a_time_blames_the_kernel_and_split_kernels_remove_it(cancelling):
    from pipeline import convert as conv
    from pipeline.attribution import one_at_a_time, stream_windows

    model, sp = cancelling
    cal = conv.calibration_set(sp.X_train, load_config(quantize={"calibration_stream_steps": 120}).quantize)
    streams = stream_windows(sp.X_test, 4, 120)
    plain = one_at_a_time(model, cal, streams, bits=16)
    assert plain["tensors"][0]["name"] == "0.W" and plain["tensors"][0]["removed"] > 0.9
    split = one_at_a_time(model, cal, streams, bits=16, split=True)
    assert split["all_rounded"]["rms"] < plain["all_rounded"]["rms"] / 20
