"""The live view's side of the daemon: a decimated copy of the samples and predictions.

The daemon's loop calls ``LiveFeed.observe`` once per batch. It keeps at most
``max_rate`` points per second per stream (evenly spaced over the batch), turns only
those into plain lists, and appends them to a bounded hand-off queue; when the queue is
full the points are dropped and counted. Nothing in it blocks, takes a lock or touches a
socket: a slow or absent browser costs the sample path nothing.

``LiveHub`` runs on the server's side (its own thread): it drains the hand-off queue,
keeps the last ``history`` points per stream for pages that connect later, and fans the
points out to each connected client's own bounded queue (a client that does not read
loses points, counted per client, and nobody else does).
"""
from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass, field

COUNTERS = "\0counters"  # hand-off queue key of a counters snapshot (never a stream name)


@dataclass(frozen=True)
class LiveOptions:
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port
    history: int = 600  # points kept per stream: the chart's last N samples
    max_rate: float = 50.0  # points per second per stream handed to the view
    queue: int = 2048  # hand-off queue bound (batches)
    client_queue: int = 256  # per-client queue bound (messages)
    max_clients: int = 8
    counters_interval: float = 0.5  # seconds between counters snapshots


@dataclass(frozen=True)
class LiveMeta:
    """What a page needs to draw: names, classes and the decision threshold."""

    features: tuple[str, ...]
    classes: tuple[str, ...]
    kind: str
    threshold: float | None
    variant: str = ""
    reset: str = ""

    def to_dict(self) -> dict:
        return {"features": list(self.features), "classes": list(self.classes), "kind": self.kind,
                "threshold": self.threshold, "variant": self.variant, "reset": self.reset}


def point(i: int, seq: int, values, pred) -> list:
    """One chart point: ``[i, seq, step, [x per feature], [y per output], label]``
    (plain values: the engine's arrays are reused by its next step)."""
    return [int(i), int(seq), int(pred.step), [float(v) for v in values],
            [float(v) if math.isfinite(v) else None for v in pred.y.tolist()], pred.label]


class LiveFeed:
    """Daemon side. ``observe(stream, batch, status)``: ``batch`` a list of
    ``(i, seq, values [features], prediction)``; ``status`` a callable returning the
    daemon's counters (called at most every ``counters_interval`` seconds)."""

    def __init__(self, opts: LiveOptions = LiveOptions(), clock=time.monotonic):
        self.opts = opts
        self._clock = clock
        self.handoff: collections.deque = collections.deque()
        self._tokens: dict[str, tuple[float, float]] = {}  # stream -> (tokens, when)
        self._next_counters = 0.0
        self.offered = 0  # samples seen
        self.kept = 0  # points handed over
        self.dropped = 0  # points lost because the hand-off queue was full

    def observe(self, stream: str, batch: list, status=None) -> None:
        if not batch and status is None:
            return
        now = self._clock()
        self.offered += len(batch)
        if batch:
            chosen = self._decimate(stream, batch, now)
            if chosen:
                self._put(stream, [point(*item) for item in chosen])
        if status is not None and now >= self._next_counters:
            self._next_counters = now + self.opts.counters_interval
            self._put(COUNTERS, {**status(), **self.counters()}, count=False)

    def _decimate(self, stream: str, batch: list, now: float) -> list:
        """At most ``max_rate`` per second (a token bucket, bursts up to one second)."""
        rate = self.opts.max_rate
        tokens, when = self._tokens.get(stream, (rate, now))
        tokens = min(rate, tokens + (now - when) * rate)
        keep = min(len(batch), int(tokens))
        self._tokens[stream] = (tokens - keep, now)
        if keep <= 0:
            return []
        stride = len(batch) / keep
        return [batch[min(len(batch) - 1, int((k + 1) * stride) - 1)] for k in range(keep)]

    def _put(self, key: str, item, count: bool = True) -> None:
        n = len(item) if count else 0
        if len(self.handoff) >= self.opts.queue:
            self.dropped += n
            return
        self.handoff.append((key, item))
        self.kept += n

    def counters(self) -> dict:
        return {"live_offered": self.offered, "live_kept": self.kept, "live_dropped": self.dropped}


@dataclass
class Client:
    """One connected page or watcher: its own bounded queue of (event, data) messages."""

    stream: str | None  # None: every stream
    limit: int
    queue: collections.deque = field(default_factory=collections.deque)
    dropped: int = 0
    wake: threading.Event = field(default_factory=threading.Event)

    def offer(self, message: tuple[str, object]) -> None:
        if len(self.queue) >= self.limit:
            self.dropped += 1
        else:
            self.queue.append(message)
        self.wake.set()


class LiveHub:
    """Server side: drains a ``LiveFeed``, keeps history, fans out to clients."""

    def __init__(self, feed: LiveFeed, meta: LiveMeta):
        self.feed, self.meta, self.opts = feed, meta, feed.opts
        self.history: dict[str, collections.deque] = {}
        self.counters: dict = {}
        self.clients: list[Client] = []
        self._lock = threading.Lock()  # clients and history (server threads only)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, period: float = 0.05) -> None:
        self._thread = threading.Thread(target=self._run, args=(period,), name="live-hub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _run(self, period: float) -> None:
        while not self._stop.wait(period):
            self.drain()

    def drain(self) -> int:
        """Move everything waiting in the hand-off queue to history and clients."""
        moved, handoff = 0, self.feed.handoff
        while handoff:
            key, item = handoff.popleft()
            moved += 1
            with self._lock:
                if key == COUNTERS:
                    self.counters = item | {"live_clients": len(self.clients),
                                            "live_client_dropped": sum(c.dropped for c in self.clients)}
                    message = ("counters", self.counters)
                else:
                    ring = self.history.setdefault(key, collections.deque(maxlen=self.opts.history))
                    ring.extend(item)
                    message = ("points", {"stream": key, "points": item})
                for client in self.clients:
                    if client.stream is None or message[0] == "counters" or client.stream == key:
                        client.offer(message)
        return moved

    def subscribe(self, stream: str | None) -> Client | None:
        """A new client (None when ``max_clients`` are connected)."""
        with self._lock:
            if len(self.clients) >= self.opts.max_clients:
                return None
            client = Client(stream, self.opts.client_queue)
            self.clients.append(client)
            return client

    def unsubscribe(self, client: Client) -> None:
        with self._lock:
            if client in self.clients:
                self.clients.remove(client)

    def snapshot(self, stream: str | None = None) -> dict:
        """Meta, the streams seen, the history (of ``stream`` or all) and the counters."""
        with self._lock:
            history = {s: list(ring) for s, ring in self.history.items() if stream in (None, s)}
            return {"meta": self.meta.to_dict(), "window": self.opts.history, "streams": sorted(self.history),
                    "history": history,
                    "counters": dict(self.counters)}
