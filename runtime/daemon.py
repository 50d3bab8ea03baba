"""The daemon behind ``stepwise serve``: samples in, predictions out, state kept across restarts.

One processing loop in the main thread: take every waiting event from the sample source
(``runtime.events.SampleSource``; the serial link delivers samples from pyserial's reader
thread into a bounded queue; up to ``BATCH`` at a time), step the engine for each, write
their JSON lines (and the replies to the device) with one write, then checkpoint when due
and ping the watchdog. The source is handed in by the caller (``run(source)``), so this
module knows no port or wire format. Signal handlers only record the signal; the loop
logs it, and the samples already taken always finish: SIGTERM/SIGINT -> checkpoint,
exit 0; SIGHUP -> reopen the output file (log rotation).
"""
from __future__ import annotations

import collections
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from runtime.engine import Engine
from runtime.errors import DataError
from runtime.events import Reset, Sample, SampleSource
from runtime.output import Output
from runtime.records import record_line
from runtime.store import StateStore
from runtime.signals import SignalledLoop
from runtime.systemd import Notifier

log = logging.getLogger(__name__)

BATCH = 256  # events taken from the link per turn of the loop


@dataclass(frozen=True)
class ServeOptions:
    artifacts: Path
    port: str
    baud: int = 115200
    protocol: str = "text"
    state_dir: Path = Path("state")
    checkpoint_interval: float = 60.0
    reset: str | None = None
    variant: str | None = None
    output: Path | None = None  # None: stdout
    reply: bool = False  # text mode: a "p=... c=..." line back per sample (cobs always replies)
    status_interval: float = 60.0
    backend: str | None = None
    warmup: bool = True  # False: warm-up outputs (zero-padded windows) are not written
    http: tuple[str, int] | None = None  # the live view's address (None: off)


class Daemon(SignalledLoop):
    def __init__(self, opts: ServeOptions, notifier: Notifier | None = None):
        self.opts = opts
        self.notifier = notifier or Notifier()
        self.engine = Engine.load(opts.artifacts, variant=opts.variant, reset=opts.reset, backend=opts.backend)
        self.contract = self.engine.contract
        self.store = StateStore(opts.state_dir, self.engine.model_sha256, self.contract.states,
                                interval=opts.checkpoint_interval, lanes=self.engine.lanes)
        self.counters: collections.Counter[str] = collections.Counter()
        self.seq = 0  # explicit resets from the device: the sequence index in the output
        self._stop: int | None = None  # the signal number that asked to stop
        self._reopen = False
        self._observer = None  # see observe()
        self._observed: list | None = None
        self.last_checkpoint: float | None = None  # unix time of the newest checkpoint written or restored
        self._restore()
        self._saved_mark = (self.engine.samples_seen, self.seq, sum(self.engine.resets.values()))

    def _restore(self) -> None:
        snap = self.store.restore()
        if snap is None:
            log.info("no checkpoint to restore in %s: fresh state", self.opts.state_dir)
            return
        self.engine.restore(snap)
        self.seq = int(snap.extra.get("seq", 0))
        self.last_checkpoint = snap.timestamp or None
        log.info("state restored: %d samples seen, sequence %d, steps %s", snap.samples_seen,
                 self.seq, snap.steps.tolist())

    def _checkpoint_if_changed(self) -> None:
        """The timer's checkpoint, skipped while nothing changed (no flash wear when idle)."""
        mark = (self.engine.samples_seen, self.seq, sum(self.engine.resets.values()))
        if mark != self._saved_mark and self.store.maybe_checkpoint(self.snapshot):
            self._saved_mark = mark
            self.last_checkpoint = time.time()

    def snapshot(self):
        snap = self.engine.snapshot()
        snap.extra["seq"] = self.seq
        return snap

    def observe(self, observer) -> None:
        """Call ``observer(stream, batch, status)`` after each turn of the loop: ``batch``
        the samples it answered, ``[(i, seq, values [features], Prediction)]``, and
        ``status`` a callable returning the counters (``live_status``). The observer runs
        on the loop's thread, after the turn's output is written: it must not block."""
        self._observer, self._observed = observer, []

    # -- the loop --------------------------------------------------------------------
    def run(self, source: SampleSource) -> int:
        """Serve ``source`` until SIGTERM/SIGINT; ``source`` is closed on the way out."""
        out = self.output = Output(self.opts.output)
        self.source = source
        self.notifier.ready(self.status())
        log.info("serving %s on %s (%s, %s); state in %s", self.engine.variant, self.opts.port,
                 self.opts.protocol, self.engine.policy, self.opts.state_dir)
        next_status = time.monotonic() + self.opts.status_interval
        try:
            while self._stop is None:
                events = source.get_many(BATCH, timeout=0.2)
                if self._reopen:
                    self._reopen = False
                    out.reopen()
                out.write_lines([line for event in events if (line := self.handle(event, source))])
                if self._observer is not None:
                    self._observer("default", self._observed, self.live_status)
                    self._observed = []
                self._checkpoint_if_changed()
                self.notifier.watchdog_due()
                if time.monotonic() >= next_status:
                    next_status = time.monotonic() + self.opts.status_interval
                    self.notifier.status(self.status())
                    log.info("counters: %s", self.status())
        finally:
            if self._stop is not None:
                log.info("%s received: the samples taken are finished", signal.Signals(self._stop).name)
            self.notifier.stopping()
            ok = self.store.checkpoint(self.snapshot())
            log.info("shutdown checkpoint %s; %s", "written" if ok else "FAILED", self.status())
            source.close()
            out.close()
        return 0

    def handle(self, event, source: SampleSource) -> str | None:
        """Step one event; the sample's output line (``None`` for anything else)."""
        if event.seq is not None:
            self.engine.last_frame_seq = event.seq  # checkpoints carry the last frame taken
        if type(event) is not Sample:
            if isinstance(event, Reset):
                self.engine.reset(reason="device")
                self.seq += 1
                self.counters["resets"] += 1
            return None
        self.counters["samples"] += 1
        try:
            pred = self.engine.step(event.values)
        except DataError as e:  # NaN/Inf or a wrong shape: never reaches the state
            self.counters["rejected_sample"] += 1
            log.warning("sample rejected: %s", e)
            return None
        self.counters["predictions"] += 1
        if self._observed is not None:
            self._observed.append((self.engine.samples_seen - 1, self.seq, event.values, pred))
        if pred.fault:
            self.counters["state_faults"] += 1
        extra = f', "t": {round(time.time(), 6)!r}'
        if event.seq is not None:
            extra += f', "frame": {event.seq}'
        if pred.warmup and not self.opts.warmup:
            return None
        if self.opts.protocol == "cobs" or self.opts.reply:
            y = pred.y
            source.write_prediction(y.tolist(), self.contract.output.class_of(y), pred.label, seq=event.seq)
        return record_line(self.engine.samples_seen - 1, self.seq, pred, extra)

    def status_dict(self) -> dict[str, int]:
        counters = getattr(getattr(self, "source", None), "counters", None)
        parts = {**self.counters, "checkpoints": self.store.checkpoints,
                 "checkpoint_failures": self.store.failures}
        output = getattr(self, "output", None)
        if output is not None:
            parts |= {"output_errors": output.errors, "output_lost": output.lost}
        if counters is not None:
            snap = counters.snapshot()
            parts |= {f"link_{k}": v for k, v in snap.items() if isinstance(v, int)}
            parts |= {f"rejected_{k}": v for k, v in snap.get("rejected", {}).items()}
        return parts

    def live_status(self) -> dict:
        """``status_dict`` and the unix time of the last checkpoint (None before one)."""
        return self.status_dict() | {"last_checkpoint": self.last_checkpoint}

    def status(self) -> str:
        return " ".join(f"{k}={v}" for k, v in sorted(self.status_dict().items()))
