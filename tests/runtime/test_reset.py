"""Reset policies: parsing, and what each does to a running engine."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, strategies as st

from runtime.contract import load_contract
from runtime.engine import Engine
from runtime.errors import ConfigError
from runtime.reset import ACCEPTED, ResetPolicy, parse_reset, sliding_lanes, sliding_phase


@pytest.fixture(scope="module")
def stream(tiny_artifacts) -> np.ndarray:
    with np.load(tiny_artifacts / "test_data.npz") as z:
        return z["X"].astype(np.float32).reshape(-1, z["X"].shape[-1])[:40]


# -- parsing -------------------------------------------------------------------------
@pytest.mark.parametrize("text,policy", [
    ("window:7", ResetPolicy("window", n=7)),
    (" Sliding:12 ", ResetPolicy("sliding", n=12)),
    ("gap:2.5", ResetPolicy("gap", seconds=2.5)),
    ("never", ResetPolicy("never")),
])
def test_parses_the_accepted_forms(text, policy):
    assert parse_reset(text) == policy
    assert parse_reset(str(policy)) == policy


@pytest.mark.parametrize("text", ["", "window", "window:", "window:0", "window:-3", "window:2.5",
                                  "sliding:x", "gap:0", "gap:-1", "gap:nan", "gap:inf",
                                  "never:3", "hourly", "sliding:100000000", "sliding:4097",
                                  "window:" + "9" * 5000])
def test_bad_policies_name_the_accepted_forms(text):
    with pytest.raises(ConfigError) as err:
        parse_reset(text)
    assert repr(text.strip()) in str(err.value) and ACCEPTED in str(err.value)


@given(n=st.integers(1, 12), total=st.integers(1, 60))
def test_sliding_lanes_read_the_last_n_samples(n, total):
    """Simulate the lanes' sample counts: the lane read after sample t has seen
    exactly min(t + 1, n) samples, and the phase can be recovered from the counts."""
    seen = [0] * n
    for t in range(total):
        reset_lane, read_lane = sliding_lanes(t, n)
        seen[reset_lane] = 0
        seen = [s + 1 for s in seen]
        assert seen[read_lane] == min(t + 1, n)
        assert sliding_phase(seen, n) % n == (t + 1) % n


# -- on the engine -------------------------------------------------------------------
def _ys(engine, samples):
    return np.stack([engine.step(x).y for x in samples])


def test_default_policy_comes_from_the_manifest(tiny_artifacts):
    engine = Engine.load(tiny_artifacts)
    assert engine.policy == parse_reset(load_contract(tiny_artifacts).window.reset)


def test_window_resets_after_every_n_samples(tiny_artifacts, stream):
    engine = Engine.load(tiny_artifacts, reset="window:5")
    preds = [engine.step(x) for x in stream[:12]]
    assert [p.step for p in preds] == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2]
    assert [p.reset for p in preds].count("window") == 2 and preds[5].reset == "window"
    reference = Engine.load(tiny_artifacts, reset="never")
    for start in (0, 5, 10):
        reference.reset()
        chunk = _ys(reference, stream[start:start + 5][:12 - start])
        assert np.array_equal(np.stack([p.y for p in preds[start:start + len(chunk)]]), chunk)


@pytest.mark.parametrize("variant,atol", [("float32", 1e-6), ("int8", 0.0)])
def test_sliding_equals_each_window_run_from_a_reset(tiny_artifacts, stream, variant, atol):
    n = 4
    engine = Engine.load(tiny_artifacts, variant=variant, reset=f"sliding:{n}")
    assert engine.lanes == n and engine.streams == 1
    reference = Engine.load(tiny_artifacts, variant=variant, reset="never")
    for t, x in enumerate(stream[:15]):
        pred = engine.step(x)
        reference.reset()
        window = stream[max(0, t - n + 1):t + 1]
        want = _ys(reference, window)[-1]
        assert pred.step == len(window)
        np.testing.assert_allclose(pred.y, want, atol=atol, rtol=0)


def test_sliding_explicit_reset_starts_every_lane_again(tiny_artifacts, stream):
    engine = Engine.load(tiny_artifacts, reset="sliding:3")
    _ys(engine, stream[:5])
    engine.reset()
    fresh = Engine.load(tiny_artifacts, reset="sliding:3")
    assert np.array_equal(_ys(engine, stream[5:12]), _ys(fresh, stream[5:12]))


def test_gap_resets_after_silence(tiny_artifacts, stream, caplog):
    engine = Engine.load(tiny_artifacts, reset="gap:2")
    with caplog.at_level(logging.INFO, logger="runtime.engine"):
        preds = [engine.step(x, t=t) for x, t in zip(stream, [100.0, 101.0, 102.5, 105.0, 106.0])]
    assert [p.step for p in preds] == [1, 2, 3, 1, 2]
    assert [p.reset for p in preds] == [None, None, None, "gap", None]
    assert "reset lane(s) [0] (gap)" in caplog.text
    fresh = Engine.load(tiny_artifacts, reset="never")
    assert np.array_equal(preds[3].y, fresh.step(stream[3]).y)


def test_gap_counts_the_silence_across_a_restart(tiny_artifacts, stream):
    engine = Engine.load(tiny_artifacts, reset="gap:5")
    for x, t in zip(stream, [100.0, 101.0, 102.0]):
        engine.step(x, t=t)
    snap = engine.snapshot()
    resumed = Engine.load(tiny_artifacts, reset="gap:5")
    resumed.restore(snap)
    assert resumed.step(stream[3], t=107.5).reset == "gap"
    again = Engine.load(tiny_artifacts, reset="gap:5")
    again.restore(snap)
    assert again.step(stream[3], t=106.0).step == 4


def test_never_only_resets_when_asked(tiny_artifacts, stream):
    engine = Engine.load(tiny_artifacts, reset="never")
    assert [engine.step(x).step for x in stream[:30]][-1] == 30
    engine.reset()
    assert engine.step(stream[0]).step == 1 and engine.resets["explicit"] == 1


def test_window_counts_each_lane_on_its_own(tiny_artifacts, stream):
    engine = Engine.load(tiny_artifacts, lanes=2, reset="window:3")
    for i in range(5):
        out = engine.step_lanes(np.stack([stream[i], stream[i]]), active=[True, i % 2 == 0])
    assert out.steps.tolist() == [2, 3]
    engine.reset(lane=1)
    assert engine.steps().tolist() == [2, 0]
    with pytest.raises(ConfigError, match="lane 2 does not exist"):
        engine.reset(lane=2)


def test_sliding_needs_a_single_stream(tiny_artifacts):
    with pytest.raises(ConfigError, match="exactly 1 with sliding:3"):
        Engine.load(tiny_artifacts, lanes=2, reset="sliding:3")


def test_the_largest_sliding_window_is_accepted():
    assert parse_reset("sliding:4096") == ResetPolicy("sliding", n=4096)
