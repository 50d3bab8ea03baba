"""``stepwise serve`` for many streams: one engine, one lane per active stream.

The source is injected: any object with ``get_many(limit, timeout)`` returning
``(stream id, event)`` pairs (``runtime.events.Sample``, or any other event: a reset),
``publish(stream, line)`` for the prediction, ``status()`` and ``close()``
(``firmware_bridge.mqtt.MqttSource``, ``firmware_bridge.multiport.PortsSource``). One
loop in the main thread: take what is waiting, step every pending stream together
(``runtime.lanes``), publish each prediction (and write it to ``--output`` if given),
then park idle streams, checkpoint when due (every stream, one file per owned shard),
update the metrics. SIGTERM/SIGINT -> final checkpoint, exit 0.
"""
from __future__ import annotations

import collections
import json
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from runtime.engine import Engine
from runtime.events import Sample, SampleBlock
from runtime.lanes import LaneManager, StreamResult
from runtime.output import Output
from runtime.records import record_line
from runtime.shard import ShardSpec, shard_dir
from runtime.shard_lease import ShardLeases
from runtime.shard_serving import ShardServing
from runtime.stream_block import LineWriter
from runtime.stream_discovery import discovery_config, discovery_topic
from runtime.stream_format import StreamsSnapshot
from runtime.stream_store import StreamStore
from runtime.signals import SignalledLoop
from runtime.systemd import Notifier

log = logging.getLogger(__name__)

BATCH = 8192  # events taken from the source per turn of the loop
IDLE_CHECK = 1.0  # seconds between looks for idle streams


@dataclass(frozen=True)
class MultiServeOptions:
    artifacts: Path
    state_dir: Path = Path("state")
    checkpoint_interval: float = 60.0
    reset: str | None = None
    variant: str | None = None
    backend: str | None = None
    max_streams: int = 1024
    stream_idle: float = 300.0
    shard: ShardSpec = ShardSpec((0,), 1)
    output: Path | None = None  # JSON lines of every stream (reopened on SIGHUP)
    stdout: bool = False  # without ``output``: the JSON lines to stdout (else only published)
    status_interval: float = 60.0
    legacy_stream: str | None = None  # the stream a single-stream checkpoint becomes
    lease: float = 0.0  # seconds: hand shards over live (runtime.shard_lease); 0: off
    ha_discovery: str | None = None  # Home Assistant discovery prefix (runtime.stream_discovery)


class _Line:
    """What ``record_line`` reads of a prediction."""

    __slots__ = ("y", "step", "label")

    def __init__(self, r: StreamResult, label: str):
        self.y, self.step, self.label = r.y, r.step, label


class MultiDaemon(SignalledLoop, ShardServing):
    def __init__(self, opts: MultiServeOptions, notifier: Notifier | None = None, metrics=None):
        self.opts = opts
        self.notifier = notifier or Notifier()
        self.metrics = metrics
        self.lanes = LaneManager(self._engine, opts.max_streams, opts.stream_idle)
        engine = self.lanes.engine
        self.output_spec = engine.output
        self._writer = LineWriter(engine.output)
        self.output = None  # the --output file while running
        self.stores: dict[int, StreamStore] = {}  # per shard served now
        self.leases = None if not opts.lease else ShardLeases(
            opts.state_dir, opts.shard.owned, opts.shard.count, opts.lease)
        self.source = None  # set by run(); told when the shards served change
        self._announced: set[str] = set()  # streams whose discovery config went out
        self.counters: collections.Counter[str] = collections.Counter()
        self._stop: int | None = None  # the signal number that asked to stop
        self._reopen = False
        self._synced: dict[str, int] = {}  # source reject counts already in the metrics
        self._observer = None  # see observe()
        self._observed: dict[str, list] = {}
        self.last_checkpoint: float | None = None  # unix time of the newest checkpoint written
        states = {}
        for shard in opts.shard.owned:
            if self.leases is None or self.leases.acquire(shard):
                states |= self._load_shard(shard)
            else:
                log.info("shard %d/%d is served by %s: waiting for it to hand the shard back",
                         shard, opts.shard.count, self.leases.holder(shard))
        self.lanes.restore(states)
        if self.leases is not None:
            self.leases.heartbeat(set(self.stores), force=True)
        self._saved_mark = self._mark()

    def _engine(self, lanes: int) -> Engine:
        o = self.opts
        return Engine.load(o.artifacts, variant=o.variant, lanes=lanes, reset=o.reset,
                           backend=o.backend)

    def _dir(self, shard: int) -> Path:
        count = self.opts.shard.count
        return self.opts.state_dir if count == 1 else shard_dir(self.opts.state_dir, shard, count)

    def _mark(self):
        return (self.lanes.engine.samples_seen, self.counters["resets"],
                self.lanes.counters["parked"], sum(self.lanes.engine.resets.values()))

    # -- checkpoints -----------------------------------------------------------------
    def checkpoint(self) -> bool:
        """Every stream's state, one file per owned shard; True if all were written."""
        states = self.lanes.stream_states()
        by_shard: dict[int, dict] = {i: {} for i in self.stores}
        for stream, state in states.items():
            by_shard.setdefault(self.opts.shard.of(stream), {})[stream] = state
        ok = True
        for shard, store in self.stores.items():
            mine = by_shard[shard]
            snap = StreamsSnapshot(mine, samples_seen=sum(s.samples for s in mine.values()),
                                   timestamp=time.time())
            t0 = time.perf_counter()
            written = store.checkpoint(snap)
            if self.metrics is not None:
                self.metrics.checkpointed(time.perf_counter() - t0, written)
            ok &= written
        if ok:
            self.last_checkpoint = time.time()
        return ok

    def _checkpoint_if_due(self) -> None:
        if not self.stores:
            return
        store = next(iter(self.stores.values()))
        mark = self._mark()
        if mark != self._saved_mark and store.due():
            self.checkpoint()
            self._saved_mark = mark

    def observe(self, observer) -> None:
        """Call ``observer(stream, batch, status)`` after each turn of the loop, once per
        stream that had samples: ``batch`` ``[(i, seq, values [features], prediction)]``
        (``prediction`` with ``y``, ``step``, ``label``), ``status`` a callable returning
        the counters (on the turn's first call only). It runs on the loop's thread, after
        the turn's output is written: it must not block."""
        self._observer = observer

    def _notify(self, source) -> None:
        status = lambda: self.status_dict(source) | {"last_checkpoint": self.last_checkpoint}  # noqa: E731
        for stream, batch in self._observed.items():
            self._observer(stream, batch, status)
            status = None
        if status is not None:
            self._observer("", [], status)  # the counters also move on a quiet turn
        self._observed = {}

    # -- the loop --------------------------------------------------------------------
    def run(self, source) -> int:
        # a source whose network thread runs Python (paho-mqtt) hands the GIL to this loop
        # for every burst of messages: it asks for a short switch interval, or a burst
        # waits out the 5 ms default per turn; one whose thread is C (libmosquitto) only
        # calls in per message and does better with the default
        interval = getattr(source, "switch_interval", None)
        if interval:
            sys.setswitchinterval(interval)
        self.source = source
        out = self.output = Output(self.opts.output) if self.opts.output or self.opts.stdout else None
        self.notifier.ready(self.status(source))
        log.info("serving up to %d streams (shard %s, reset %s); state in %s",
                 self.opts.max_streams, self.opts.shard, self.lanes.engine.policy,
                 self.opts.state_dir)
        next_idle = next_status = next_lease = time.monotonic()
        try:
            while self._stop is None:
                events = source.get_many(BATCH, timeout=0.05)
                if events:
                    lines = self.handle(events, source)
                    if out is not None:
                        out.write_lines(lines)
                if self._observer is not None:
                    self._notify(source)
                if self._reopen and out is not None:
                    self._reopen = False
                    out.reopen()
                now = time.monotonic()
                if now >= next_idle:
                    next_idle = now + IDLE_CHECK
                    self.lanes.evict_idle(now)
                    self._update_gauges(source)
                if self.leases is not None and now >= next_lease:
                    next_lease = now + self.leases.seconds / 3  # well inside every lease
                    self._hand_over()
                self._checkpoint_if_due()
                self.notifier.watchdog_due()
                if now >= next_status:
                    next_status = now + self.opts.status_interval
                    self.notifier.status(self.status(source))
                    log.info("counters: %s", self.status(source))
        finally:
            if self._stop is not None:
                log.info("%s received: finishing the current batch", signal.Signals(self._stop).name)
            self.notifier.stopping()
            ok = self.checkpoint()
            log.info("shutdown checkpoint %s; %s", "written" if ok else "FAILED",
                     self.status(source))
            if self.leases is not None and ok:  # the state is on disk: a peer may take over
                self.leases.leave(list(self.stores))
            source.close()
            if out is not None:
                out.close()
        return 0

    def handle(self, events, source) -> list[str]:
        """Step a batch of ``(stream, event)`` pairs and ``SampleBlock``s; publish and
        return the output lines."""
        lines: list[str] = []
        samples = []
        wall_minus_mono = time.time() - time.monotonic()
        for item in events:
            if type(item) is SampleBlock:
                lines += self._step(samples, source)
                samples = []
                lines += self._step_block(item, item.received + wall_minus_mono, source)
                continue
            stream, event = item
            if type(event) is not Sample:  # a reset: the samples before it are stepped first
                lines += self._step(samples, source)
                samples = []
                self.lanes.reset(stream, "device")
                self.counters["resets"] += 1
                if self.metrics is not None:
                    self.metrics.resets.inc()
                continue
            received = event.received
            samples.append((stream, event.values,
                            received + wall_minus_mono if received else time.time()))
        lines += self._step(samples, source)
        return lines

    def _step(self, samples, source) -> list[str]:
        if not samples:
            return []
        if self.opts.ha_discovery:
            self._announce([s for s, _, _ in samples], source)
        t0 = time.perf_counter()
        rounds = self.lanes.invokes
        results = self.lanes.step(samples)
        self._observe_step(t0, rounds, len(samples))
        label_of = self.output_spec.label_of
        now = f', "t": {round(time.time(), 6)!r}}}\n'
        lines = []
        values = None
        if self._observer is not None:  # each stream's results come in its samples' order
            values = {}
            for stream, x, _ in samples:
                values.setdefault(stream, collections.deque()).append(x)
        for r in results:
            x = values[r.stream].popleft() if values is not None else None
            if r.rejected:
                self.counters["rejected_non_finite"] += 1
                if self.metrics is not None:
                    self.metrics.rejects.labels("non_finite").inc()
                continue
            pred = _Line(r, label_of(r.y))
            if values is not None:
                self._observed.setdefault(r.stream, []).append((r.i, r.seq, x, pred))
            line = f'{{"stream": {json.dumps(r.stream)}, ' + record_line(r.i, r.seq, pred)[1:-2] + now
            source.publish(r.stream, line[:-1])
            lines.append(line)
        self.counters["predictions"] += len(lines)
        if self.metrics is not None:
            self.metrics.predictions.inc(len(lines))
        return lines

    def _announce(self, streams, source) -> None:
        """Home Assistant discovery: one retained config message per stream first seen."""
        new = [s for s in dict.fromkeys(streams) if s not in self._announced]
        prefix = source.address.prefix
        for stream in new:
            self._announced.add(stream)
            source.publish_retained(
                discovery_topic(self.opts.ha_discovery, prefix, stream),
                discovery_config(prefix, stream, self.lanes.engine.model_sha256))

    def _step_block(self, block: SampleBlock, t: float, source) -> list[str]:
        if self.opts.ha_discovery:
            self._announce(block.streams, source)
        if self._observer is not None:  # the live view takes per-sample records
            return self._step([(s, x, t) for s, x in zip(block.streams, block.values)], source)
        t0 = time.perf_counter()
        rounds = self.lanes.invokes
        res = self.lanes.step_block(block.streams, block.values, t)
        self._observe_step(t0, rounds, len(block))
        n_rejected = int(res.rejected.sum())
        if n_rejected:
            self.counters["rejected_non_finite"] += n_rejected
            if self.metrics is not None:
                self.metrics.rejects.labels("non_finite").inc(n_rejected)
        streams, lines = self._writer.lines(res, time.time())
        publish_many = getattr(source, "publish_many", None)
        if publish_many is not None:
            publish_many(streams, lines)
        else:
            for stream, line in zip(streams, lines):
                source.publish(stream, line)
        self.counters["predictions"] += len(lines)
        if self.metrics is not None:
            self.metrics.predictions.inc(len(lines))
        return [line + "\n" for line in lines] if self.output is not None else lines

    def _observe_step(self, t0: float, rounds: int, samples: int) -> None:
        if self.metrics is None:
            return
        n_rounds = max(1, self.lanes.invokes - rounds)
        per = (time.perf_counter() - t0) / n_rounds
        for _ in range(n_rounds):
            self.metrics.step_seconds.observe(per)
        self.metrics.samples.inc(samples)

    def _update_gauges(self, source) -> None:
        if self.metrics is None:
            return
        m = self.metrics
        m.active_streams.set(self.lanes.active)
        m.known_streams.set(self.lanes.known())
        m.lanes.set(self.lanes.engine.lanes)
        connected = getattr(source, "connected", None)
        if connected is not None:
            m.broker_connected.set(1 if connected.is_set() else 0)
        rejects = getattr(source, "rejects", None)
        totals = rejects.snapshot() if rejects is not None else {}
        for reason, n in totals.items():  # the source's counts, carried into the metric
            seen = self._synced.get(reason, 0)
            if n > seen:
                m.rejects.labels(reason).inc(n - seen)
                self._synced[reason] = n

    def status_dict(self, source=None) -> dict:
        parts = {**self.counters, **{f"lanes_{k}": v for k, v in self.lanes.counters.items()},
                 "active_streams": self.lanes.active, "known_streams": self.lanes.known(),
                 "checkpoints": sum(s.checkpoints for s in self.stores.values()),
                 "checkpoint_failures": sum(s.failures for s in self.stores.values())}
        if source is not None:
            parts |= {f"source_{k}": v for k, v in source.status().items()}
        output = getattr(self, "output", None)
        if output is not None:
            parts |= {"output_errors": output.errors, "output_lost": output.lost}
        return parts

    def status(self, source=None) -> str:
        return " ".join(f"{k}={v}" for k, v in sorted(self.status_dict(source).items()))
