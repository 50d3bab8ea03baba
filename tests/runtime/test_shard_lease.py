"""The lease protocol of a shard group, several daemons' views of one folder, one clock."""
from __future__ import annotations

from runtime.shard_lease import ShardLeases, daemon_score


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


def group(tmp_path, clock, *configs, seconds=10.0):
    return [ShardLeases(tmp_path, owned, 3, seconds, daemon_id=f"d{k}", clock=clock)
            for k, owned in enumerate(configs)]


def test_a_dead_peers_shard_goes_to_one_survivor_by_rendezvous(tmp_path):
    clock = Clock()
    a, b, c = group(tmp_path, clock, (0,), (1,), (2,))
    for d, shard in ((a, 0), (b, 1), (c, 2)):
        assert d.acquire(shard)
        d.heartbeat({shard}, force=True)
    assert [d.plan({k}) for k, d in enumerate((a, b, c))] == [([], [], [])] * 3
    clock.now += 5
    a.heartbeat({0}, force=True)
    b.heartbeat({1}, force=True)  # c stops beating: dead
    assert a.plan({0}) == ([], [], []) and b.plan({1}) == ([], [], [])  # its lease still runs
    clock.now += 6
    winner = max(("d0", "d1"), key=lambda d: daemon_score(2, d))
    plans = {"d0": a.plan({0}), "d1": b.plan({1})}
    assert plans[winner] == ([2], [], []) and plans[{"d0": "d1", "d1": "d0"}[winner]] == ([], [], [])


def test_a_released_shard_is_taken_at_once_and_handed_back_to_its_own_daemon(tmp_path):
    clock = Clock()
    a, b = group(tmp_path, clock, (0, 2), (1,))
    assert a.acquire(0) and a.acquire(2) and b.acquire(1)
    a.heartbeat({0, 2}, force=True)
    b.heartbeat({1}, force=True)
    b.leave([1])  # a clean stop: lease released, no longer alive
    assert b.holder(1) is None and a.plan({0, 2}) == ([1], [], [])
    assert a.acquire(1)
    b2 = ShardLeases(tmp_path, (1,), 3, 10.0, daemon_id="d9", clock=clock)
    assert not b2.acquire(1) and b2.holder(1) == "d0"
    b2.heartbeat(set(), force=True)  # alive, configured for 1, waiting
    assert a.plan({0, 1, 2}) == ([], [1], [])
    a.release(1)
    assert b2.plan(set()) == ([1], [], []) and b2.acquire(1)


def test_a_shard_never_held_waits_for_its_daemon_for_three_lease_periods(tmp_path):
    clock = Clock()
    a, = group(tmp_path, clock, (0,))
    assert a.plan({0}) == ([], [], [])
    clock.now += 31
    assert a.plan({0}) == ([1, 2], [], [])  # nobody came: the only daemon alive takes them


def test_a_daemon_that_renewed_too_late_sees_its_shard_lost(tmp_path):
    clock = Clock()
    a, b = group(tmp_path, clock, (0,), (1,))
    assert a.acquire(0) and b.acquire(1)
    a.heartbeat({0}, force=True)
    b.heartbeat({1}, force=True)
    clock.now += 11  # a stalls past its lease; b beats and takes shard 0 by rendezvous
    b.heartbeat({1}, force=True)
    assert b.plan({1})[0] == [0] and b.acquire(0)
    assert a.plan({0}) == ([], [], [0])
