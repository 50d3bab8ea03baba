"""Many streams on one engine: every stream's outputs equal its own single-stream run."""
from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.engine import Engine
from runtime.errors import ConfigError
from runtime.lanes import LaneManager


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def manager(artifacts, max_streams=64, idle=30.0, reset="window:7", clock=None):
    return LaneManager(lambda lanes: Engine.load(artifacts, lanes=lanes, reset=reset),
                       max_streams=max_streams, idle_seconds=idle, clock=clock or Clock())


def alone(artifacts, samples, reset="window:7", times=None):
    eng = Engine.load(artifacts, reset=reset)
    return [eng.step(x, t=None if times is None else times[k]).y for k, x in enumerate(samples)]


def streams_data(n_streams, n, seed=0):
    rng = np.random.default_rng(seed)
    return {f"s{k}": rng.normal(size=(n, 3)).astype(np.float32) for k in range(n_streams)}


def step_into(m, got, batch):
    """Step ``batch`` of ``(stream, values, t)``; each result's ``y`` appended to ``got[stream]``."""
    for r in m.step(batch):
        got[r.stream].append(r.y)


def interleave_idx(data, rng):
    """``(stream, k)``: every stream's sample indexes in order, the streams shuffled together."""
    order = [s for s, xs in data.items() for _ in xs]
    rng.shuffle(order)
    pos = dict.fromkeys(data, 0)
    for s in order:
        yield s, pos[s]
        pos[s] += 1


def interleave(data, rng):
    """Every stream's samples in order, the streams shuffled together."""
    return ((s, data[s][k]) for s, k in interleave_idx(data, rng))


def test_interleaved_streams_equal_their_own_runs_and_lanes_grow(tiny_artifacts):
    data = streams_data(20, 15)
    m = manager(tiny_artifacts)
    got = {s: [] for s in data}
    events = list(interleave(data, np.random.default_rng(1)))
    for k in range(0, len(events), 37):  # batches of mixed streams, several per stream
        for r in m.step([(s, x, 0.0) for s, x in events[k:k + 37]]):
            got[r.stream].append((r.i, r.y))
    assert m.engine.lanes == 32 and m.active == 20  # grew 8 -> 16 -> 32
    assert m.invokes < len(events)  # streams stepped together
    for s, xs in data.items():
        assert [i for i, _ in got[s]] == list(range(len(xs)))
        np.testing.assert_allclose(np.array([y for _, y in got[s]]), alone(tiny_artifacts, xs),
                                   atol=1e-6, rtol=0)


def test_idle_stream_parks_and_comes_back_where_it_was(tiny_artifacts):
    clock = Clock()
    data = streams_data(3, 10, seed=2)
    m = manager(tiny_artifacts, idle=5.0, reset="never", clock=clock)
    ys = {s: [] for s in data}
    for k in range(5):
        step_into(m, ys, [(s, xs[k], 0.0) for s, xs in data.items()])
    clock.now += 3
    m.step([("s0", data["s0"][5], 0.0)])
    clock.now += 3  # s1, s2 idle for 6 s, s0 for 3 s
    assert sorted(m.evict_idle()) == ["s1", "s2"] and m.active == 1
    assert m.parked["s1"].samples == 5 and m.parked["s1"].steps == 5
    for k in range(5, 10):
        step_into(m, ys, [(s, xs[k], 0.0) for s, xs in data.items() if (s, k) != ("s0", 5)])
    assert m.counters["restored"] == 2
    assert ys["s0"] and len(ys["s1"]) == 10
    for s in ("s1", "s2"):
        np.testing.assert_allclose(ys[s], alone(tiny_artifacts, data[s], reset="never"), atol=1e-6)


def test_gap_policy_resets_a_returning_stream(tiny_artifacts):
    clock = Clock()
    m = manager(tiny_artifacts, idle=1.0, reset="gap:10", clock=clock)
    x = np.ones(3, np.float32)
    assert [r.step for r in m.step([("a", x, 100.0), ("a", x, 101.0)])] == [1, 2]
    clock.now += 2
    m.evict_idle()
    assert [r.step for r in m.step([("a", x, 105.0)])] == [3]  # a short pause: carried on
    clock.now += 2
    m.evict_idle()
    r, = m.step([("a", x, 200.0)])  # 95 s later: the gap resets it
    assert (r.step, r.seq) == (1, 1)


def test_full_engine_displaces_the_least_recent_stream_without_losing_it(tiny_artifacts):
    clock = Clock()
    data = streams_data(5, 6, seed=3)
    m = manager(tiny_artifacts, max_streams=2, reset="never", clock=clock)
    got = {s: [] for s in data}
    for k in range(6):
        for s, xs in data.items():
            clock.now += 1
            step_into(m, got, [(s, xs[k], 0.0)])
    assert m.engine.lanes == 2 and m.counters["displaced"] > 0
    for s, xs in data.items():
        np.testing.assert_allclose(got[s], alone(tiny_artifacts, xs, reset="never"), atol=1e-6)
    # one batch with more streams than lanes: stepped in several rounds, all in order
    batch = [(s, xs[0], 0.0) for s, xs in data.items()]
    assert [r.stream for r in m.step(batch)] == list(data)


def test_bad_samples_touch_only_their_stream(tiny_artifacts):
    m = manager(tiny_artifacts, reset="never")
    good = np.array([0.1, 0.2, 0.3], np.float32)
    out = m.step([("a", good, 0.0), ("b", np.array([math.nan, 0, 0], np.float32), 0.0),
                  ("b", good, 0.0)])
    assert [(r.stream, r.rejected, r.i) for r in out] == [("a", False, 0), ("b", True, -1),
                                                          ("b", False, 0)]
    np.testing.assert_allclose(out[2].y, out[0].y, atol=1e-6)  # b's state was untouched
    assert m.counters["rejected_non_finite"] == 1


def test_explicit_reset_and_stream_states_roundtrip(tiny_artifacts):
    data = streams_data(3, 4, seed=4)
    m = manager(tiny_artifacts, reset="never")
    for k in range(4):
        m.step([(s, xs[k], 0.0) for s, xs in data.items()])
    m.reset("s1")
    states = m.stream_states()
    assert {s: (st.samples, st.steps, st.seq) for s, st in states.items()} == \
        {"s0": (4, 4, 0), "s1": (4, 0, 1), "s2": (4, 4, 0)}
    fresh = manager(tiny_artifacts, reset="never")
    fresh.restore(states)
    x = np.ones(3, np.float32)
    a = {r.stream: r for r in m.step([(s, x, 0.0) for s in data])}
    b = {r.stream: r for r in fresh.step([(s, x, 0.0) for s in data])}
    for s in data:
        assert (a[s].i, a[s].step, a[s].seq) == (b[s].i, b[s].step, b[s].seq)
        np.testing.assert_allclose(a[s].y, b[s].y, atol=1e-6)


def test_refuses_sliding_and_bad_limits(tiny_artifacts):
    with pytest.raises(ConfigError, match="sliding"):
        manager(tiny_artifacts, reset="sliding:7")
    with pytest.raises(ConfigError, match="max-streams"):
        manager(tiny_artifacts, max_streams=0)
    with pytest.raises(ConfigError, match="stream-idle"):
        manager(tiny_artifacts, idle=0)


def block_run(m, data, order, t=None):
    """Step ``order`` (a list of blocks, each a list of (stream, k)) with ``step_block``;
    per stream the (i, seq, step, y) of each output."""
    got = {s: [] for s in data}
    for block in order:
        streams = [s for s, _ in block]
        X = np.array([data[s][k] for s, k in block], np.float32).reshape(len(block), 3)
        times = 0.0 if t is None else t(block)
        res = m.step_block(streams, X, times)
        for j, s in enumerate(streams):
            got[s].append((res.i[j], int(res.seq[j]), int(res.step[j]), res.y[j].copy(),
                           bool(res.rejected[j])))
    return got


def blocks_of(data, rng, sizes=(1, 5, 40, 150)):
    """Every stream's samples in order, cut into blocks of mixed sizes; a stream may
    appear several times in one block (it then takes several rounds)."""
    events = list(interleave_idx(data, rng))
    out, pos = [], 0
    while pos < len(events):
        n = int(rng.choice(sizes))
        out.append(events[pos:pos + n])
        pos += n
    return out


@pytest.mark.parametrize("reset", ["window:7", "never"])
def test_step_block_equals_each_stream_alone_through_small_and_full_rounds(tiny_artifacts, reset):
    data = streams_data(120, 12, seed=11)
    m = manager(tiny_artifacts, max_streams=512, reset=reset)
    got = block_run(m, data, blocks_of(data, np.random.default_rng(3)))
    assert m.engine.lanes == 128 and set(m._workers) == {16}  # partial rounds ran in a worker
    for s, xs in data.items():
        assert [r[0] for r in got[s]] == list(range(len(xs)))
        steps = [r[2] for r in got[s]]
        assert steps == ([k % 7 + 1 for k in range(12)] if reset == "window:7" else
                         list(range(1, 13)))
        np.testing.assert_allclose(np.array([r[3] for r in got[s]]),
                                   alone(tiny_artifacts, xs, reset=reset), atol=1e-6, rtol=0)
    assert m.engine.samples_seen == 120 * 12 and m.engine.resets["window"] == \
        (120 * 1 if reset == "window:7" else 0)


def test_step_block_gap_policy_and_rejects_in_a_worker(tiny_artifacts):
    m = manager(tiny_artifacts, max_streams=256, reset="gap:10")
    x = np.ones((1, 3), np.float32)
    for k in range(100):  # 100 streams: the engine grows to 128 lanes
        m.step_block([f"s{k}"], x, 100.0)
    res = m.step_block(["s1", "s2"], x.repeat(2, 0), 105.0)  # in the 16-lane worker
    assert res.step.tolist() == [2, 2] and res.i == [1, 1]
    bad = np.array([[np.nan, 0, 0], [1, 1, 1]], np.float32)
    res = m.step_block(["s1", "s2"], bad, 200.0)  # s2: 95 s later, reset by the gap
    assert res.rejected.tolist() == [True, False] and res.i == [-1, 2]
    assert (int(res.step[1]), int(res.seq[1])) == (1, 1)
    assert m.engine.resets["gap"] == 1 and m.counters["rejected_non_finite"] == 1
    res = m.step_block(["s1"], x, 201.0)
    assert res.i == [2] and int(res.seq[0]) == 1  # s1's state was untouched, then the gap


def test_step_block_with_more_streams_than_lanes_keeps_every_stream_in_order(tiny_artifacts):
    data = streams_data(5, 4, seed=12)
    m = manager(tiny_artifacts, max_streams=2, reset="never")
    blocks = [[(s, k) for s in data for k in range(2)], [(s, k) for k in range(2, 4) for s in data]]
    got = block_run(m, data, blocks)
    for s, xs in data.items():
        assert [r[0] for r in got[s]] == [0, 1, 2, 3]
        np.testing.assert_allclose(np.array([r[3] for r in got[s]]),
                                   alone(tiny_artifacts, xs, reset="never"), atol=1e-6)
