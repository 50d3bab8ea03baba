"""Many streams on one engine: one lane of the batch per active stream.

``LaneManager.step(samples)`` takes the samples that are waiting, in arrival order, as
``(stream, values [F], t)`` and steps them in rounds: every stream with a pending sample
takes part in a round with its oldest one, and a round is one ``Engine.step_lanes``
invoke whatever the number of streams in it. A stream's samples are stepped strictly in
order, so its outputs are exactly what ``stepwise replay`` gives for its samples alone.

Lanes are handed out as streams appear. When none is free the engine grows (the lane
count doubles, up to ``max_streams``; the state of every lane is carried over); at
``max_streams`` the least recently seen stream that is not in the current round gives
up its lane. A stream that gave up its lane (idle for ``idle_seconds``, see
``evict_idle``, or displaced) is *parked*: its state is kept as a ``StreamState``, goes
into every checkpoint, and is loaded back into a lane when the stream returns; the reset
policy then decides as for any sample (``gap:`` resets it if the pause was too long).
"""
from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from runtime.engine import Engine
from runtime.errors import ConfigError
from runtime.stream_block import BlockResult
from runtime.stream_state import StreamState

log = logging.getLogger(__name__)

MIN_LANES = 8
WORKER_LANES = (16, 64, 256)  # the smaller engines of step_block's partial rounds


@dataclass(slots=True)
class StreamResult:
    """One stream's output for one sample: ``i`` is the stream's sample index (0-based,
    counting accepted samples), ``seq``/``step`` as in ``Prediction``; ``y`` ``[units]``.
    ``rejected`` (NaN/Inf, state unchanged) results carry no ``y``."""

    stream: str
    i: int
    seq: int
    step: int
    y: np.ndarray | None
    t: float
    fault: bool = False
    rejected: bool = False


class LaneManager:
    """Streams <-> lanes of engines made by ``make_engine(lanes)``."""

    def __init__(self, make_engine: Callable[[int], Engine], max_streams: int,
                 idle_seconds: float = 300.0, max_parked: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if max_streams < 1:
            raise ConfigError(f"--max-streams must be at least 1, got {max_streams}")
        if not idle_seconds > 0:
            raise ConfigError(f"--stream-idle must be > 0 seconds, got {idle_seconds}")
        self.make_engine = make_engine
        self.max_streams = max_streams
        self.idle_seconds = float(idle_seconds)
        self.max_parked = max_parked if max_parked is not None else max(100_000, 10 * max_streams)
        self.clock = clock
        self.engine = make_engine(min(MIN_LANES, max_streams))
        if self.engine.policy.kind == "sliding":
            raise ConfigError("many streams cannot use a sliding:N reset policy (it takes N "
                              "lanes per stream); use window:N, gap:S or never")
        self.lane_of: dict[str, int] = {}
        self.stream_at: list[str | None] = [None] * self.engine.lanes
        self.samples: dict[str, int] = {}  # accepted samples per active stream
        self.last_seen: dict[str, float] = {}  # monotonic, per active stream
        self.parked: collections.OrderedDict[str, StreamState] = collections.OrderedDict()
        self.counters: collections.Counter[str] = collections.Counter()
        self.invokes = 0
        self._workers: dict[int, Engine] = {}

    # -- who is where --------------------------------------------------------------
    @property
    def active(self) -> int:
        return len(self.lane_of)

    def known(self) -> int:
        return len(self.lane_of) + len(self.parked)

    def _lane_for(self, stream: str, busy: set[int]) -> int | None:
        lane = self.lane_of.get(stream)
        if lane is not None:
            return lane
        lane = self._free_lane(busy)
        if lane is None:
            return None
        state = self.parked.pop(stream, None)
        self.engine.load_lane(lane, state)
        self.lane_of[stream] = lane
        self.stream_at[lane] = stream
        self.samples[stream] = 0 if state is None else state.samples
        self.counters["restored" if state is not None else "new_streams"] += 1
        if state is not None:
            log.debug("stream %s back in lane %d (%d samples seen)", stream, lane, state.samples)
        return lane

    def _free_lane(self, busy: set[int]) -> int | None:
        try:
            return self.stream_at.index(None)
        except ValueError:
            pass
        if self.engine.lanes < self.max_streams:
            self._grow(min(self.max_streams, 2 * self.engine.lanes))
            return self.stream_at.index(None)
        idle = [(self.last_seen[s], s) for s, lane in self.lane_of.items() if lane not in busy]
        if not idle:
            return None
        _, stream = min(idle)
        lane = self.lane_of[stream]
        self.park(stream)
        self.counters["displaced"] += 1
        return lane

    def _grow(self, lanes: int) -> None:
        old = self.engine
        states = old.lane_states(list(range(old.lanes)))
        new = self.make_engine(lanes)
        for lane, state in enumerate(states):
            new.load_lane(lane, state)
        new.samples_seen, new.rejected = old.samples_seen, old.rejected
        new.resets.update(old.resets)
        self.engine = new
        self.stream_at += [None] * (lanes - len(self.stream_at))
        log.info("engine grown to %d lanes (%d streams active)", lanes, self.active)

    def park(self, stream: str) -> None:
        """Take ``stream``'s state out of its lane and keep it (the lane is freed)."""
        lane = self.lane_of.pop(stream)
        state = self.engine.lane_state(lane)
        state.samples = self.samples.pop(stream)
        self.last_seen.pop(stream, None)
        self.stream_at[lane] = None
        self.engine.load_lane(lane, None)
        self.parked[stream] = state
        self.parked.move_to_end(stream)
        self.counters["parked"] += 1
        while len(self.parked) > self.max_parked:
            gone, _ = self.parked.popitem(last=False)
            self.counters["forgotten"] += 1
            log.warning("more than %d idle streams: the state of %s is dropped",
                        self.max_parked, gone)

    def forget(self, streams) -> None:
        """Drop these streams and their state entirely (another daemon serves them now)."""
        for stream in streams:
            if stream in self.lane_of:
                self.park(stream)
            self.parked.pop(stream, None)

    def evict_idle(self, now: float | None = None) -> list[str]:
        """Park every stream that sent nothing for ``idle_seconds``; their ids."""
        now = self.clock() if now is None else now
        gone = [s for s, seen in self.last_seen.items() if now - seen >= self.idle_seconds]
        for stream in gone:
            self.park(stream)
        if gone:
            log.info("%d idle stream(s) gave up their lanes (%d active, %d parked)",
                     len(gone), self.active, len(self.parked))
        return gone

    def reset(self, stream: str, reason: str = "explicit") -> None:
        """Zero ``stream``'s state (its next output has step 1 and the next sequence)."""
        lane = self._lane_for(stream, set())
        if lane is None:  # pragma: no cover - a reset never waits for a round
            return
        self.engine.reset(lane, reason)
        self.last_seen[stream] = self.clock()

    # -- stepping ------------------------------------------------------------------
    def step(self, samples: Iterable[tuple[str, np.ndarray, float]]) -> list[StreamResult]:
        """Step every ``(stream, values [F], unix time)``; results in stepping order."""
        pending: dict[str, collections.deque] = {}
        for stream, values, t in samples:
            pending.setdefault(stream, collections.deque()).append((values, t))
        out: list[StreamResult] = []
        while pending:
            out += self._round(pending)
        return out

    def _round(self, pending: dict[str, collections.deque]) -> list[StreamResult]:
        busy: set[int] = set()
        streams, lanes, rows, times = [], [], [], []
        lane_of = self.lane_of
        for stream in list(pending):
            lane = lane_of.get(stream)
            if lane is None:
                lane = self._lane_for(stream, busy)
                if lane is None:
                    break  # every lane is in this round: the rest waits for the next one
            busy.add(lane)
            queue = pending[stream]
            values, t = queue.popleft()
            if not queue:
                del pending[stream]
            streams.append(stream)
            lanes.append(lane)
            rows.append(values)
            times.append(t)
        eng = self.engine  # after any growth
        X = np.zeros((eng.lanes, eng.features), np.float32)
        mask = np.zeros(eng.lanes, bool)
        tv = np.zeros(eng.lanes)
        X[lanes] = rows
        mask[lanes] = True
        tv[lanes] = times
        preds = eng.step_lanes(X, mask, t=tv)
        self.invokes += 1
        return self._results(streams, lanes, times, preds)

    def _results(self, streams, lanes, times, preds) -> list[StreamResult]:
        now = self.clock()
        rejected, faults = preds.rejected[lanes].tolist(), preds.faults[lanes].tolist()
        seqs, steps, ys = preds.seq[lanes].tolist(), preds.steps[lanes].tolist(), preds.y[lanes]
        samples, last_seen = self.samples, self.last_seen
        out = []
        for k, stream in enumerate(streams):
            last_seen[stream] = now
            if rejected[k]:
                self.counters["rejected_non_finite"] += 1
                out.append(StreamResult(stream, -1, seqs[k], steps[k], None, times[k],
                                        rejected=True))
                continue
            i = samples[stream]
            samples[stream] = i + 1
            out.append(StreamResult(stream, i, seqs[k], steps[k], ys[k], times[k],
                                    fault=faults[k]))
        return out

    def step_block(self, streams: list, X: np.ndarray, t: float) -> BlockResult:
        """``step`` for a ``SampleBlock``'s columns: ``streams`` ``[n]``, ``X`` ``[n, F]``,
        one unix time ``t`` for all; the results in the block's order. A stream's k-th
        sample of the block goes into round k; each round is one invoke."""
        n = len(streams)
        lane_of = self.lane_of
        distinct = dict.fromkeys(streams)
        if len(distinct) > self.max_streams:  # more streams than lanes: the general path
            return self._block_by_step(streams, X, t)
        if not lane_of.keys() >= distinct.keys():
            busy = {lane_of[s] for s in distinct if s in lane_of}
            for s in distinct:
                if s not in lane_of:
                    busy.add(self._lane_for(s, busy))
        lanes = np.array(list(map(lane_of.__getitem__, streams)), np.int64)
        eng = self.engine  # after any growth
        y = np.empty((n, eng.output.units), np.float32)
        seq, steps = np.empty(n, np.int64), np.empty(n, np.int64)
        rejected = np.empty(n, bool)
        for idx in _rounds(lanes, len(distinct)):
            at = slice(None) if idx is None else idx
            y[at], seq[at], steps[at], rejected[at] = self._invoke(
                lanes if idx is None else lanes[idx], X if idx is None else X[idx], t)
        samples = self.samples
        ivals = [-1] * n
        if len(distinct) == n and not rejected.any():  # each stream once: no loop
            ivals = list(map(samples.__getitem__, streams))
            samples.update(zip(streams, map((1).__add__, ivals)))
        elif rejected.any():
            self.counters["rejected_non_finite"] += int(rejected.sum())
            rej = rejected.tolist()
            for k, s in enumerate(streams):
                if not rej[k]:
                    ivals[k] = samples[s]
                    samples[s] += 1
        else:
            for k, s in enumerate(streams):
                ivals[k] = i = samples[s]
                samples[s] = i + 1
        self.last_seen.update(dict.fromkeys(distinct, self.clock()))
        return BlockResult(streams, ivals, seq, steps, y, rejected)

    def _invoke(self, L: np.ndarray, X: np.ndarray, t: float):
        """One round: samples ``X`` ``[k, F]`` into lanes ``L`` ``[k]`` (distinct) ->
        ``y``, ``seq``, ``steps``, ``rejected`` of those lanes. A round that fills at most
        a quarter of the engine runs in a smaller engine (``WORKER_LANES``): the lanes'
        state goes there and back, so the invoke costs what ``k`` lanes cost, not all."""
        eng, k = self.engine, len(L)
        self.invokes += 1
        worker = self._worker(k)
        if worker is None:
            Xb = np.zeros((eng.lanes, eng.features), np.float32)
            mask = np.zeros(eng.lanes, bool)
            Xb[L] = X
            mask[L] = True
            p = eng.step_lanes(Xb, mask, t=t)
            return p.y[L], p.seq[L], p.steps[L], p.rejected[L]
        w = worker
        own = np.arange(k)
        eng.copy_lanes_to(w, L, own)
        seen, rejected, resets = w.samples_seen, w.rejected, collections.Counter(w.resets)
        Xb = np.zeros((w.lanes, eng.features), np.float32)
        mask = np.zeros(w.lanes, bool)
        Xb[:k] = X
        mask[:k] = True
        p = w.step_lanes(Xb, mask, t=t)
        w.copy_lanes_to(eng, own, L)
        eng.samples_seen += w.samples_seen - seen
        eng.rejected += w.rejected - rejected
        eng.resets.update(w.resets - resets)
        return p.y[:k], p.seq[:k], p.steps[:k], p.rejected[:k]

    def _worker(self, k: int) -> Engine | None:
        """The smallest worker engine of ``WORKER_LANES`` that holds ``k`` lanes, if it
        is at most a quarter of the engine (else None: the engine steps itself)."""
        for size in WORKER_LANES:
            if size >= k:
                if 4 * size > self.engine.lanes:
                    return None
                w = self._workers.get(size)
                if w is None:
                    w = self._workers[size] = self.make_engine(size)
                return w
        return None

    def _block_by_step(self, streams, X, t) -> BlockResult:
        results = {}
        for r, k in zip(self.step([(s, X[k], t) for k, s in enumerate(streams)]),
                        _stepping_order(streams, self)):
            results[k] = r
        rs = [results[k] for k in range(len(streams))]
        units = self.engine.output.units
        return BlockResult(list(streams), [r.i for r in rs],
                           np.array([r.seq for r in rs], np.int64),
                           np.array([r.step for r in rs], np.int64),
                           np.array([r.y if r.y is not None else np.full(units, np.nan) for r in rs],
                                    np.float32).reshape(len(rs), units),
                           np.array([r.rejected for r in rs], bool))

    # -- persistence ---------------------------------------------------------------
    def stream_states(self) -> dict[str, StreamState]:
        """Every known stream's state by id (active ones read from their lanes)."""
        out = dict(self.parked)
        streams = list(self.lane_of)
        for stream, state in zip(streams, self.engine.lane_states([self.lane_of[s] for s in streams])):
            state.samples = self.samples[stream]
            out[stream] = state
        return out

    def restore(self, states: dict[str, StreamState]) -> None:
        """Start from checkpointed streams: all parked, each takes a lane when it sends."""
        for stream, state in states.items():
            self.parked[stream] = state
        log.info("%d stream state(s) restored (they take lanes as they send)", len(states))


def _rounds(lanes: np.ndarray, distinct: int):
    """Index arrays of the samples in each round (a lane's k-th sample in round k);
    ``[None]`` when every sample has its own lane (one round, no indexing)."""
    n = len(lanes)
    if distinct == n:
        return [None]
    order = np.argsort(lanes, kind="stable")
    ranked = lanes[order]
    first = np.ones(n, bool)
    first[1:] = ranked[1:] != ranked[:-1]
    pos = np.arange(n)
    occurrence = np.empty(n, np.int64)
    occurrence[order] = pos - np.maximum.accumulate(np.where(first, pos, 0))
    return [np.flatnonzero(occurrence == r) for r in range(int(occurrence.max()) + 1)]


def _stepping_order(streams: list, manager: LaneManager):
    """The block positions in the order ``LaneManager.step`` returns their results."""
    pending: dict[str, collections.deque] = {}
    for k, s in enumerate(streams):
        pending.setdefault(s, collections.deque()).append(k)
    out = []
    while pending:  # as _round: each stream's oldest sample, streams in first-seen order
        taken = 0
        for s in list(pending):
            if taken == manager.max_streams:
                break
            out.append(pending[s].popleft())
            taken += 1
            if not pending[s]:
                del pending[s]
    return out
