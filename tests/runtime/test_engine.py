"""The device engine: integrity, state carry, lanes, the non-finite guards, snapshots.

Most tests run the tiny built artifacts (``tiny_artifacts``). Two hand-made step models,
stored below as compressed bytes so these tests need no TensorFlow, cover what the tiny
build does not: an exact running sum (outputs known in closed form; it can overflow to
Inf) and a model with int8 state tensors whose input and output scales differ.
They were made with TensorFlow 2.21 (``tf.lite.TFLiteConverter.from_saved_model(dir,
signature_keys=["step"])``) from a ``tf.Module`` whose ``step`` tf.function computes:

- SUM: inputs ``x [None, 2]``, ``s [None, 2]``, ``n [None, 1]`` ->
  ``{"y": 2 * (s + x), "s_out": s + x, "n_out": n + 1}`` (float32);
- LEAKY_INT8: inputs ``x [None, 1]``, ``s [None, 1]`` -> ``{"y": tanh(0.5 s + x),
  "s_out": 0.5 s + x}``, full int8 with int8 inputs/outputs, calibrated on
  ``x ~ U(-1, 1)``, ``s ~ U(-4, 4)`` (so ``s`` and ``s_out`` get different scales);
- SATURATING: inputs ``x [None, 1]``, ``s [None, 1]`` -> ``{"y": tanh(s + x),
  "s_out": s + x}`` (float32): its state can overflow to Inf while ``y`` stays 1.0.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import shutil
import zlib

import numpy as np
import pytest

from runtime.backend import load_model
from runtime.contract import load_contract
from runtime.engine import STATE_CHECK_EVERY, Engine, Prediction
from runtime.errors import DataError, ModelIntegrityError, StateCorruptError
from runtime.snapshot import StateSnapshot

SUM = """
eNp1VD2IE1EQnk02PyYhxjOKRYorLCwkJjHCIQcakpM7uB85gxwiroGkCCSbI9lIrhGxEusDLSytRKxELK4USSVi
ZXGdFhZidZ0x6zdvZ/f2cnsPPt7b7818M2/e7MsRUf3W6tUszVOOLlCWMpQCFycdawJH9BNY1IjKIaIaMI4QhcGB
gjWPhPJinwS+2J99m4AODKzWNluxz4JoMl+zbTsma9baAbbARYWLsK/RG1qYt8FHfLwpPGsWfJovYaf5NEfAm6lt
u98DYA82IZ+NCfB3Wbh97CdkfRaobqzfXdq8s7Kxbqwt1Su1Sr2CszrnjWP/lM+22zaN/tC02t2W8ajVH7R7JiXB
HwC/pZb7wBh4C7wGXgG7gCU692wn34deffk+0l485i4qNqo4t16kau/eoa7u4ePj4Y8vL54/1eSMuvIiKuVLxTwK
91lisWYxf40pb0z+2jZNsA/8ETuJc3M2tsM/uVGAbRlYABaB02DXVlc256s9E/WwWs28qnlW2ae9bFkrLTzf5Vep
0y/R7jbapttDz4DlAI2kTwPjXEbWHG88cfoiJnVw8/6Gc0mNkympw4HYRsWWRINjZZXNYaxZ38I/xzciviHJOSx6
Eckh7NMNqfsluoTFJxAjYFlzNrlHtiTXNPqYWbdGOfG7LBq29PV75HAG8+1G32pb6MBWs9rodK6XxM6N+SBALxag
p0+D9Yozeu8C9KIzemxbP0Gv4NPT5G54mZHaRuQ+d6fOW9Addq7seN16XvUBSTc5IwbWKbOroYvG96nz9jSaTaMo
KqZ9PP+w/Gv+/LOY4/KuGaZK+0jeHwJ0QjM6PN/364yO6oTkTPwmk/cq830fnsmvrwXo7/n1B8f13Zwy6t1IqXeK
5N2Yc2LM6aSrmv0H44z0xg==
"""
SATURATING = """
eNptU7FO21AUvXZMiIKVpiKgDgwZGFFEKFO3KAERCUIFEWKoZCLhSpaIUyWmolIkVgaGqsrAkIGBkRGY8gnsXfgE
PqFgzn2+zzVgy0d+Pu+e8969970FImqvb34uUZkW6BOVqEg2uBxZGBM4oivgHzAxiO6BxwwRXsIQUUTPT2HIGo7f
EG4QuD/wIVM8mAvCMMzImLW/gDNwpnBTrHN6x8Eb3TVijITuBMiC0/8DiV+VmAfMZWU8C9S3W3trO7vN7Zaztdau
NWrtGvKzVY45WVfHdj3f6R/7gdd1nZ9uf+D1fJrm3IEb3ovUYwwMRfdH9nIAFCl6clSI/ZlbVGxWcXpv/NhxzS1V
99u5v6fUHJYNyclSKqKVykq1svzeg72rlepqNBc9v9GPEXABjIFL4AP4rc3mTrne85FX4B5WVO1KSlGId8HeBeG5
/ufASPLl9bodz9d9bcT55mNtXuUU8YZAnxVT1iqpeZtmZC2p2YzWfX2O+m3Gmv96U/ySvKqDEfVmX/7n0ROe1nno
s7Qk2lDO1ARrfeQ1O/3AC9Bt97DeOTr6UpU4ncP3FL9Mip8dpvstv/G7S/Ez5Zwk/b7hm5P75Jwom1c+yFTdW4pv
Lp+9abBReZL+Ror/JOk/eO+v91RUfeWekaqkLZ78schStX0BGKGdag==
"""

LEAKY_INT8 = """
eNp1VL1PU1EUP21fS1ue8MSqRDt0dCCVAoMRBkmLgaR8BIkDSyWhxCb9MPRhamICbsyGTRMHHYxxNBGjoybGOBkm
08HBCf0T5D1/577zPvoKt/m1556e3/m6594cEa3dLk/ihzKUoyyN4tcgHfskaZAJOqJXwD+gGyH6CxzGiWLYQ4QV
0c8T29aVD6J50bXN6gP2GxUfrDNt246LzNxHwD50muj4v3altWOGeG9hEwnwOsAPy+Hxvi32U2LThX1S5AtAcXnp
7tzqnYXlpcri3NpsaXZtFvXpqka2GwjYNmrNyvZO06w1qpWH1e12rdWkFPsEjoDvwCHwGngOHHBdwt+SWu4BTg+H
vBgGcI0bQgmlSwTq+RNje7f3muK+OD54P3ll/2NEatMUk2giP1HIj6N+icV+C/nCFOvc1UVvfqn+JBTvtJi7LHOf
AB0Yxn6xvLCaK7aaqNusbuaVXUbxh7zs2M+Q6LPSE+7Nb/Hd2Kg1mcHzsQ+UJEeitMdPS38MqS0iZ++ecTDeYCAe
1qAhMtt+DsxFlPyZZH5G+e/jX3T5mvo49jHhu/MaDcyjq49I/0tQfMLmPt8FmUW2PcYdYLNRfOWAGbHHSs2LH1vy
PTpx5tPw8vVjMPU8vlY2ts2aiemrbhY36vWbhUCvGOtWf7z4GfFKVm88y3YWy1/WP5wabzwU79sp8TSJdyMU7511
dn3P3uzOcL8bO/Ue/0SX1PtzWabEWQPQOtSM3O+YxGQ5K/fcnYc9qcuN9WSPpuNOrOsd8fjU7q3jln/GqVKojsch
/3bI/9eX1nRS3rpKR7WsryZ+Va96ryq/CX5NnMMYUPb7lFoJ5aB7PE3eFD8f6uutPePl0+7PJyb3cUzORsfNOBfw
nXV7kU3LCTh3NapsDRoO2I74fRv5DyGO4C8=
"""


def _handmade(folder, blob: str, states: list[tuple[str, int]], features: int, units: int,
              mean: list[float], std: list[float], variant: str):
    """An artifacts folder for a hand-made model; the tensors map read from the model."""
    data = zlib.decompress(base64.b64decode("".join(blob.split())))
    model = load_model(data, "step")
    tensors = {n: {"index": t.index, "shape": [1, *t.shape], "dtype": t.dtype.name,
                   "scale": t.scale, "zero_point": t.zero_point}
               for n, t in {**model.inputs, **model.outputs}.items()}
    manifest = {
        "schema_version": 1, "tool": {"name": "stepwise"}, "signature_key": "step",
        "input": {"name": "x", "features": features,
                  "feature_names": [f"f{i}" for i in range(features)], "mean": mean, "std": std},
        "states": [{"name": n, "input": n, "output": f"{n}_out", "shape": [size], "layer": "cell",
                    "kind": "h"} for n, size in states],
        "outputs": [{"name": "y", "kind": "linear", "units": units,
                     "labels": [f"c{i}" for i in range(units)]}],
        "window": {"length": None, "reset": "never"},
        "variants": {variant: {"file": f"step_{variant}.tflite", "bytes": len(data),
                               "sha256": hashlib.sha256(data).hexdigest(), "tensors": tensors}},
        "default_variant": variant,
    }
    (folder / f"step_{variant}.tflite").write_bytes(data)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture()
def sum_artifacts(tmp_path):
    return _handmade(tmp_path, SUM, [("s", 2), ("n", 1)], features=2, units=2,
                     mean=[1.0, -2.0], std=[2.0, 4.0], variant="float32")


@pytest.fixture()
def saturating_artifacts(tmp_path):
    return _handmade(tmp_path, SATURATING, [("s", 1)], features=1, units=1,
                     mean=[0.0], std=[1.0], variant="float32")


@pytest.fixture()
def leaky_artifacts(tmp_path):
    return _handmade(tmp_path, LEAKY_INT8, [("s", 1)], features=1, units=1,
                     mean=[0.0], std=[1.0], variant="int8")


@pytest.fixture(scope="module")
def stream(tiny_artifacts) -> np.ndarray:
    """``[m * T, F]``: the tiny test set's sequences back to back."""
    with np.load(tiny_artifacts / "test_data.npz") as z:
        X = z["X"].astype(np.float32)
    return X.reshape(-1, X.shape[-1])


def _run(engine: Engine, samples) -> np.ndarray:
    return np.stack([engine.step(x).y for x in samples])


# -- integrity and exact behaviour -----------------------------------------------------
def test_a_modified_model_file_is_refused(tiny_artifacts, tmp_path):
    for f in tiny_artifacts.iterdir():
        if f.name == "manifest.json" or f.suffix == ".tflite":
            shutil.copy(f, tmp_path / f.name)
    spec = load_contract(tmp_path).variant("float32")
    data = bytearray((tmp_path / spec.file).read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / spec.file).write_bytes(bytes(data))
    message = f"{spec.file} does not match the manifest: sha256"
    with pytest.raises(ModelIntegrityError, match=message):
        Engine.load(tmp_path, variant="float32")
    Engine.load(tmp_path, variant="int8", reset="never")  # the untouched variant still loads


def test_normalises_and_carries_every_state_by_name(sum_artifacts):
    engine = Engine.load(sum_artifacts)
    X = np.array([[3, 2], [1, 6], [-1, -2], [5, 10]], np.float32)
    Z = (X - [1.0, -2.0]) / [2.0, 4.0]
    got = _run(engine, X)
    assert np.array_equal(got, 2 * np.cumsum(Z, axis=0))
    snap = engine.snapshot()
    assert snap.states["n"].tolist() == [[4.0]] and snap.steps.tolist() == [4]
    assert np.array_equal(snap.states["s"][0], Z.sum(axis=0))


def test_wrong_sample_shape_is_a_data_error(tiny_artifacts):
    engine = Engine.load(tiny_artifacts, reset="never")
    n = engine.features
    with pytest.raises(DataError, match=rf"shape \[{n + 1}\]; the model takes {n} features"):
        engine.step(np.zeros(n + 1))
    with pytest.raises(DataError, match="use step_lanes"):
        Engine.load(tiny_artifacts, lanes=2, reset="never").step(np.zeros(n))


# -- lanes ---------------------------------------------------------------------------
def test_lanes_are_independent(tiny_artifacts, stream):
    A, B, C = stream[:20], stream[20:40], stream[40:60]
    engine = Engine.load(tiny_artifacts, lanes=3, reset="never")
    first = np.stack([engine.step_lanes(np.stack([a, b, c])).y for a, b, c in zip(A, B, C)])
    engine = Engine.load(tiny_artifacts, lanes=3, reset="never")
    other = np.stack([engine.step_lanes(np.stack([a, c, b])).y for a, b, c in zip(A, B, C)])
    assert np.array_equal(first[:, 0], other[:, 0])  # lane 0 never sees what others do
    single = Engine.load(tiny_artifacts, reset="never")
    np.testing.assert_allclose(first[:, 1], _run(single, B), atol=1e-6)


def test_inactive_lanes_keep_their_state(tiny_artifacts, stream):
    active = np.array([True, False, True, True, False, True, True, True])
    engine = Engine.load(tiny_artifacts, lanes=2, reset="never")
    ys = []
    for x, on in zip(stream[:8], active):
        out = engine.step_lanes(np.stack([x, x]), active=[True, on])
        assert out.stepped.tolist() == [True, bool(on)]
        assert np.isnan(out.y[1]).all() != bool(on)
        ys.append(out.y[1])
    assert engine.steps().tolist() == [8, int(active.sum())]
    alone = _run(Engine.load(tiny_artifacts, reset="never"), stream[:8][active])
    np.testing.assert_allclose(np.stack(ys)[active], alone, atol=1e-6)


# -- non-finite guards ---------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_non_finite_sample_is_rejected_and_the_state_untouched(tiny_artifacts, stream, bad,
                                                                variant):
    engine = Engine.load(tiny_artifacts, variant=variant, reset="never")
    expected = _run(Engine.load(tiny_artifacts, variant=variant, reset="never"), stream[:6])
    got = _run(engine, stream[:3])
    before = engine.snapshot()
    sample = stream[3].copy()
    sample[1] = bad
    with pytest.raises(DataError, match="NaN/Inf values: rejected, state unchanged"):
        engine.step(sample)
    after = engine.snapshot()
    assert all(np.array_equal(before.states[k], after.states[k]) for k in before.states)
    assert after.steps.tolist() == before.steps.tolist() and after.samples_seen == 3
    assert engine.rejected == 1
    assert np.array_equal(np.concatenate([got, _run(engine, stream[3:6])]), expected)


def test_non_finite_lane_sample_is_rejected_other_lanes_step(tiny_artifacts, stream):
    engine = Engine.load(tiny_artifacts, lanes=2, reset="never")
    engine.step_lanes(stream[:2])
    before = engine.snapshot()
    out = engine.step_lanes(np.stack([stream[2], [np.nan, 0, 0]]))
    assert out.rejected.tolist() == [False, True] and out.stepped.tolist() == [True, False]
    after = engine.snapshot()
    for k in before.states:
        assert np.array_equal(before.states[k][1], after.states[k][1])
        assert not np.array_equal(before.states[k][0], after.states[k][0])


def test_a_state_that_overflows_resets_its_lane_with_a_warning(sum_artifacts, caplog):
    big = np.float32(3e38)  # normalised: 1.5e38 per sample; the third one overflows
    engine = Engine.load(sum_artifacts, lanes=2)
    engine.step_lanes([[1, 0], [1, 0]])
    with caplog.at_level(logging.WARNING, logger="runtime.engine"):
        faults = [engine.step_lanes([[big, 0], [3, 0]]).faults.tolist() for _ in range(3)]
    assert faults == [[False, False], [False, False], [True, False]]
    assert "state of lane(s) [0] became non-finite: reset" in caplog.text
    snap = engine.snapshot()
    assert snap.is_finite() and snap.steps.tolist() == [0, 4]
    assert snap.states["s"][0].tolist() == [0.0, 0.0] and snap.states["n"][1].tolist() == [4.0]
    single = Engine.load(sum_artifacts)
    preds = [single.step([big, 0]) for _ in range(3)]
    assert [p.fault for p in preds] == [None, None, "nonfinite_state"]
    assert single.resets["nonfinite"] == 1
    assert single.step([3, -2]).y.tolist() == [2.0, 0.0]  # starts again from zero


# -- snapshots -----------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["float32", "int16x8", "int8"])
@pytest.mark.parametrize("reset", ["never", "window:7", "sliding:7"])
def test_snapshot_restore_continues_exactly(tiny_artifacts, stream, variant, reset):
    samples = stream[:40]
    whole = _run(Engine.load(tiny_artifacts, variant=variant, reset=reset), samples)
    first = Engine.load(tiny_artifacts, variant=variant, reset=reset)
    head = _run(first, samples[:17])
    snap = first.snapshot()
    second = Engine.load(tiny_artifacts, variant=variant, reset=reset)
    second.restore(snap.copy())
    assert second.samples_seen == 17 and second.steps().tolist() == snap.steps.tolist()
    tail = _run(second, samples[17:])
    assert np.array_equal(np.concatenate([head, tail]), whole)


def test_restore_refuses_a_snapshot_that_does_not_fit(tiny_artifacts):
    engine = Engine.load(tiny_artifacts, reset="never")
    good = engine.snapshot()
    name = next(iter(good.states))
    wrong_shape = good.copy()
    wrong_shape.states[name] = np.zeros((1, 99), np.float32)
    with pytest.raises(StateCorruptError, match="does not fit this engine"):
        engine.restore(wrong_shape)
    non_finite = good.copy()
    non_finite.states[name][0, 0] = np.nan
    with pytest.raises(StateCorruptError):
        engine.restore(non_finite)
    with pytest.raises(StateCorruptError):
        engine.restore(StateSnapshot(states=good.states, steps=np.zeros(7, np.int64)))


# -- quantized variants --------------------------------------------------------------
@pytest.mark.parametrize("variant,bound", [("int16x8", 0.05), ("int8", 0.1)])
def test_quantized_variants_track_float32_without_drift(tiny_artifacts, stream, variant, bound):
    ref = _run(Engine.load(tiny_artifacts, variant="float32", reset="never"), stream)
    got = _run(Engine.load(tiny_artifacts, variant=variant, reset="never"), stream)
    assert len(stream) >= 500
    assert np.abs(got - ref).max() <= bound
    assert np.abs(got - ref).max() > 0  # really a different model


def test_int8_state_is_requantized_between_different_scales(leaky_artifacts):
    tensors = load_contract(leaky_artifacts).variant("int8").tensors
    assert tensors["s"].dtype == tensors["s_out"].dtype == "int8"
    assert (tensors["s"].scale, tensors["s"].zero_point) != \
        (tensors["s_out"].scale, tensors["s_out"].zero_point)
    engine = Engine.load(leaky_artifacts)
    xs = np.random.default_rng(1).uniform(-1, 1, 300).astype(np.float32)
    s, err = 0.0, 0.0
    for x in xs:
        pred = engine.step([x])
        assert isinstance(pred, Prediction)
        s = 0.5 * s + float(x)
        err = max(err, abs(np.tanh(s) - float(pred.y[0])))
    # Passing the stored int8 value straight back would be off by up to ~0.5 here.
    assert err < 0.04


def test_an_infinite_state_behind_a_finite_output_is_reset_at_the_next_state_check(
        saturating_artifacts, caplog):
    engine = Engine.load(saturating_artifacts, reset="never")
    big = np.float32(3e38)
    with caplog.at_level(logging.WARNING, logger="runtime.engine"):
        preds = [engine.step([big]) for _ in range(STATE_CHECK_EVERY)]
    assert all(float(p.y[0]) == 1.0 for p in preds)  # tanh(inf): the output never shows it
    assert [p.fault for p in preds] == [None] * (STATE_CHECK_EVERY - 1) + ["nonfinite_state"]
    assert "state of lane(s) [0] became non-finite: reset" in caplog.text
    assert engine.resets["nonfinite"] == 1
    snap = engine.snapshot()  # right after the reset: the zeroed state, counted once
    assert snap.is_finite() and snap.states["s"].tolist() == [[0.0]] and engine.resets["nonfinite"] == 1
    assert float(engine.step([big]).y[0]) == 1.0 and engine.snapshot().states["s"][0, 0] == big


def test_a_snapshot_never_holds_a_non_finite_state(saturating_artifacts):
    engine = Engine.load(saturating_artifacts, reset="never")
    big = np.float32(3e38)
    engine.step([big])
    engine.step([big])  # s = inf now, y = tanh(inf) = 1.0: not seen until a check
    assert engine.resets["nonfinite"] == 0
    snap = engine.snapshot()
    assert snap.is_finite() and snap.states["s"].tolist() == [[0.0]] and snap.steps.tolist() == [0]
    assert engine.resets["nonfinite"] == 1
    assert float(engine.step([0.5]).y[0]) == pytest.approx(np.tanh(0.5))
