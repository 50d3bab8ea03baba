"""``stepwise watch``: the live chart in a terminal (plain ANSI, fine over SSH).

Sources: a running daemon's live view (``http://HOST:PORT/``, its server-sent events) or
a JSON-lines file of predictions (``serve --output``/``replay``; followed as it grows,
``-`` for standard input). The screen shows the last samples per feature (live view
only: the JSON lines carry no inputs), each class's probability against the decision
threshold, the current label and the daemon's counters.
"""
from __future__ import annotations

import collections
import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import IO, Iterator

from runtime.errors import DataError

log = logging.getLogger(__name__)

BLOCKS = "▁▂▃▄▅▆▇█"
ASCII = " .:-=+*#"
MAX_LINE = 1 << 20  # a JSON line longer than this is skipped


@dataclass
class WatchState:
    """What the screen shows: the last ``width`` points and the newest counters."""

    width: int = 60
    meta: dict = field(default_factory=dict)
    points: collections.deque = field(default_factory=collections.deque)
    counters: dict = field(default_factory=dict)
    streams: set = field(default_factory=set)
    skipped: int = 0

    def add(self, p: list) -> None:
        self.points.append(p)
        while len(self.points) > self.width:
            self.points.popleft()

    def apply(self, event: str, data, stream: str | None = None) -> None:
        """One live-view event (``state``/``points``/``counters``) or a JSON ``record``."""
        if event == "state":
            self.meta = data.get("meta", {})
            self.counters = data.get("counters", {})
            self.streams.update(data.get("streams", []))
            for name, pts in data.get("history", {}).items():
                if stream in (None, name):
                    for p in pts:
                        self.add(p)
        elif event == "points":
            self.streams.add(data["stream"])
            if stream in (None, data["stream"]):
                for p in data["points"]:
                    self.add(p)
        elif event == "counters":
            self.counters = data
        elif event == "record":
            y = data.get("y")
            if isinstance(y, list) and isinstance(data.get("i"), int):
                self.add([data["i"], data.get("seq", 0), data.get("step", 0), data.get("x") or [], y,
                          str(data.get("label", ""))])
            else:
                self.skipped += 1


def spark(values: list, lo: float, hi: float, chars: str = BLOCKS) -> str:
    """One character per value, scaled from ``lo`` (lowest) to ``hi`` (highest);
    a missing value is a space."""
    span = (hi - lo) or 1.0
    top = len(chars) - 1
    return "".join(" " if v is None else chars[max(0, min(top, int(round((v - lo) / span * top))))]
                   for v in values)


def render(state: WatchState, source: str, chars: str = BLOCKS) -> list[str]:
    """The screen as lines of text (no escape codes)."""
    pts = list(state.points)
    meta = state.meta
    last = pts[-1] if pts else None
    lines = [f"stepwise watch  {source}" + (f"  [{meta.get('variant')}, {meta.get('reset')}]" if meta else "")]
    lines.append(f"label: {last[5] if last else '-'}   sample {last[0] if last else '-'}   "
                 f"step {last[2] if last else '-'}" + (f"   streams: {', '.join(sorted(state.streams))}"
                                                       if len(state.streams) > 1 else ""))
    names = meta.get("features") or []
    if pts and pts[-1][3]:
        lines.append("samples (raw units, each row scaled to its own min..max):")
        for f in range(len(pts[-1][3])):
            vals = [p[3][f] if f < len(p[3]) else None for p in pts]
            seen = [v for v in vals if v is not None]
            if not seen:
                continue
            name = names[f] if f < len(names) else f"x{f}"
            lines.append(f"  {name:>10.10} {spark(vals, min(seen), max(seen), chars)}  "
                         f"{seen[-1]:>10.4g}  [{min(seen):.3g} .. {max(seen):.3g}]")
    if pts:
        threshold = meta.get("threshold", 0.5 if len(pts[-1][4]) == 1 else None)
        classes = meta.get("classes") or []
        lines.append("prediction (probability, 0..1)" + (f", threshold {threshold:g}:" if threshold is not None else ":"))
        for u in range(len(pts[-1][4])):
            vals = [p[4][u] if u < len(p[4]) else None for p in pts]
            name = _class_name(classes, u, len(pts[-1][4]))
            mark = "" if threshold is None or vals[-1] is None else ("  >= threshold" if vals[-1] >= threshold
                                                                     else "  < threshold")
            lines.append(f"  {name:>10.10} {spark(vals, 0.0, 1.0, chars)}  {_num(vals[-1])}{mark}")
    else:
        lines.append("waiting for predictions...")
    if state.counters:
        shown = {k: v for k, v in sorted(state.counters.items()) if isinstance(v, (int, float)) and v is not True}
        lines.append("counters: " + " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                             for k, v in shown.items() if k != "last_checkpoint"))
        when = state.counters.get("last_checkpoint")
        lines.append("last checkpoint: " + (f"{max(0.0, time.time() - when):.1f} s ago" if when else "none yet"))
    if state.skipped:
        lines.append(f"skipped {state.skipped} line(s) that are not prediction records")
    return lines


def _class_name(classes: list, unit: int, units: int) -> str:
    if units == 1:
        return f"P({classes[1]})" if len(classes) == 2 else "P(1)"
    return f"P({classes[unit]})" if unit < len(classes) else f"P({unit})"


def _num(v) -> str:
    return "   -  " if v is None else f"{v:.4f}"


def events_url(source: str) -> str:
    base = source if source.endswith("/") or source.endswith("/events") else source + "/"
    return base if base.endswith("/events") else base + "events"


def iter_sse(source: str, timeout: float = 30.0) -> Iterator[tuple[str, object]]:
    """(event, data) from a live view's event stream, until it closes."""
    try:
        response = urllib.request.urlopen(events_url(source), timeout=timeout)
    except (urllib.error.URLError, OSError) as e:
        raise DataError(f"{source}: cannot reach the live view ({getattr(e, 'reason', e)})") from None
    event, data = None, []
    with response:
        for raw in response:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                if event and data:
                    yield event, json.loads("\n".join(data))
                event, data = None, []
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())


def iter_jsonl(f: IO[bytes], follow: bool, poll: float = 0.2) -> Iterator[tuple[str, object]]:
    """("record", dict) per JSON line of ``f`` (("skip", None) for a bad one); with
    ``follow``, waits for more at the end (a file that is still being written)."""
    pending = b""
    while True:
        chunk = f.readline(MAX_LINE)
        if not chunk:
            if not follow:
                return
            yield "idle", None
            time.sleep(poll)
            continue
        pending += chunk
        if not pending.endswith(b"\n") and len(pending) < MAX_LINE:
            continue  # a line still being written
        line, pending = pending, b""
        try:
            record = json.loads(line)
        except ValueError:
            yield "skip", None
            continue
        yield ("record", record) if isinstance(record, dict) else ("skip", None)


@dataclass(frozen=True)
class WatchOptions:
    source: str  # http(s) URL of a live view, a JSON-lines path, or "-" (standard input)
    stream: str | None = None  # live view: only this stream
    width: int = 60  # points shown per row
    follow: bool = True  # files: wait for more at the end
    once: bool = False  # print one frame (after the live view's state, or the whole file) and stop
    interval: float = 0.25  # seconds between redraws
    ascii: bool = False  # '.:-=+*#' instead of block characters


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def watch(opts: WatchOptions, out: IO[str], stdin: IO[bytes] | None = None) -> int:
    """Draw frames on ``out`` until the source ends (or one, with ``once``)."""
    state = WatchState(width=opts.width)
    chars = ASCII if opts.ascii else BLOCKS
    redraw = out.isatty() and not opts.once  # in place: cursor home, each line cleared to its end

    def draw() -> None:
        lines = render(state, opts.source, chars)
        if redraw:
            out.write("\x1b[H" + "".join(f"{line}\x1b[K\n" for line in lines) + "\x1b[J")
        else:
            out.write("\n".join(lines) + "\n\n")
        out.flush()

    if is_url(opts.source):
        events = iter_sse(opts.source)
        return _loop(events, state, opts, draw, stop_after="state" if opts.once else None)
    if opts.source == "-":
        return _loop(iter_jsonl(stdin, follow=False), state, opts, draw)  # a pipe blocks until data or its end
    try:
        f = open(opts.source, "rb")
    except OSError as e:
        raise DataError(f"{opts.source}: cannot read: {e.strerror}") from None
    with f:
        return _loop(iter_jsonl(f, follow=opts.follow and not opts.once), state, opts, draw)


def _loop(events, state: WatchState, opts: WatchOptions, draw, stop_after: str | None = None) -> int:
    last = 0.0
    try:
        for event, data in events:
            if event == "skip":
                state.skipped += 1
            elif event != "idle":
                state.apply(event, data, opts.stream)
            if event == stop_after:
                break
            now = time.monotonic()
            if not opts.once and now - last >= opts.interval:
                draw()
                last = now
    except KeyboardInterrupt:
        pass
    draw()
    return 0
