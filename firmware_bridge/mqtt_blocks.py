"""Many MQTT messages -> one ``SampleBlock``: the bulk source's parse (no I/O).

``BlockIntake._events(publishes, received)`` takes the ``(topic, payload)`` pairs of one
socket read. Usually every message is a sample of a known, accepted stream whose payload
is one plain numeric line: then the block is made with no Python loop at all
(``_all_plain``: the payloads joined and split once, ``float()`` on each token, as
``TextParser`` does). Otherwise each message is taken in turn: plain lines still share
one conversion, anything else (several lines, a header, ``name:value`` pairs, a bad
line) goes through the stream's own ``TextParser``, in order, and a reset splits the
block. The two paths give the same samples and rejects (tests hold them together).
"""
from __future__ import annotations

from itertools import repeat
from typing import Callable

import numpy as np

from firmware_bridge.mqtt import StreamIntake
from firmware_bridge.text import FLOAT32_OVERFLOW
from runtime.events import Reset, Sample, SampleBlock

_NUMERIC = b"0123456789+-.eE,"  # what a payload of the shared fast path is made of
MAX_TOPICS = 200_000  # routes cached (topic -> stream, kind)


class BlockIntake(StreamIntake):
    def __init__(self, url: str, feature_names, accept: Callable[[str], bool] | None):
        super().__init__(url, feature_names, accept)
        self._routes: dict[bytes, tuple[str, str | None]] = {}
        self._custom: set[str] = set()  # streams whose header changed their column order
        # a header line could pass for numbers if a feature name were made of their
        # characters: then every payload takes the parser's path
        self._fast_ok = not any(set(n.encode()) <= set(_NUMERIC) for n in self.feature_names)

    def _events(self, publishes: list, received: float) -> list:
        """PUBLISHes -> ``SampleBlock``s and ``(stream, Reset)`` in order."""
        block = self._all_plain(publishes, received)
        if block is not None:
            return [block]
        out: list = []
        streams: list = []
        rows: list = []  # a row's values, or None: from the shared fast parse
        fast: list = []  # payloads of the fast rows, in order
        routes, counters, custom = self._routes, self.counters, self._custom
        commas = len(self.feature_names) - 1
        fast_ok = self._fast_ok
        messages = 0
        for topic, payload in publishes:
            route = routes.get(topic)
            if route is None:
                route = self._route(topic.decode("utf-8", "replace"))
                if len(routes) < MAX_TOPICS:
                    routes[topic] = route
            stream, kind = route
            if kind is None:
                counters[stream] += 1
                continue
            messages += 1
            if payload is None:
                self.rejects.count(stream, "payload_too_large")
            elif kind == "reset":
                self._flush(out, streams, rows, fast, received)
                streams, rows, fast = [], [], []
                out.append((stream, Reset(None, received)))
            elif (fast_ok and stream not in custom and payload.count(b",") == commas
                  and not payload.translate(None, _NUMERIC)):
                streams.append(stream)
                rows.append(None)
                fast.append(payload)
            else:
                for s, event in self._parse_one(stream, payload, received):
                    if type(event) is Sample:
                        streams.append(s)
                        rows.append(event.values)
                    else:
                        self._flush(out, streams, rows, fast, received)
                        streams, rows, fast = [], [], []
                        out.append((s, event))
        counters["messages"] += messages
        self._flush(out, streams, rows, fast, received)
        return out

    def _all_plain(self, publishes: list, received: float) -> SampleBlock | None:
        """The usual read, with no Python loop: every message a sample of a known,
        accepted stream whose payload is one plain numeric line. None otherwise (then
        ``_events`` takes each message in turn)."""
        if not self._fast_ok:
            return None
        topics, payloads = zip(*publishes)
        routes = list(map(self._routes.get, topics))
        if None in routes or None in payloads:
            return None
        streams, kinds = zip(*routes)
        F = len(self.feature_names)
        if kinds.count("sample") != len(kinds) or \
                list(map(bytes.count, payloads, repeat(b","))).count(F - 1) != len(payloads):
            return None
        if self._custom and not self._custom.isdisjoint(streams):
            return None
        joined = b",".join(payloads)
        if joined.translate(None, _NUMERIC):
            return None
        values = _numbers([joined], F * len(payloads))
        if values is None:
            return None
        self.counters["messages"] += len(payloads)
        return SampleBlock(list(streams), values.reshape(len(payloads), F), received)

    def _parse_one(self, stream: str, payload: bytes, received: float) -> list:
        events = self._parse(stream, payload, received)
        parser = self._parsers.get(stream)
        if parser is not None and parser._permutation is not None:
            self._custom.add(stream)
        else:
            self._custom.discard(stream)
        return events

    def _flush(self, out: list, streams: list, rows: list, fast: list, received: float) -> None:
        if not streams:
            return
        F = len(self.feature_names)
        X = np.empty((len(streams), F), np.float32)
        if fast:
            values = _numbers(fast, F)
            if values is None:  # some fast row is not what it looked like: one by one
                streams, rows = self._one_by_one(streams, rows, fast, received)
                if not streams:
                    return
                X = np.empty((len(streams), F), np.float32)
            else:
                at = [k for k, r in enumerate(rows) if r is None]
                X[at] = values
        for k, r in enumerate(rows):
            if r is not None:
                X[k] = r
        out.append(SampleBlock(streams, X, received))

    def _one_by_one(self, streams, rows, fast, received):
        """The rows of a block whose shared parse failed, each on its own. A fast row
        that is no sample can only be rejected (no feature name is made of number
        characters, so it is never a header): its parser's column order is not used."""
        it = iter(fast)
        s_out, r_out = [], []
        for stream, row in zip(streams, rows):
            if row is None:
                payload = next(it)
                values = _numbers([payload], len(self.feature_names))
                if values is not None:
                    s_out.append(stream)
                    r_out.append(values[0])
                    continue
                for s, event in self._parse_one(stream, payload, received):
                    if type(event) is Sample:  # a one-line payload: never a reset
                        s_out.append(s)
                        r_out.append(event.values)
                continue
            s_out.append(stream)
            r_out.append(row)
        return s_out, r_out

    def set_accept(self, accept: Callable[[str], bool] | None) -> None:
        """Change which streams this daemon keeps (a shard hand-off); cached routes go."""
        super().set_accept(accept)
        self._routes.clear()


def _numbers(payloads: list, features: int) -> np.ndarray | None:
    """Payloads of ``features`` comma-separated number tokens -> ``[n, features]``
    float32, with ``float()`` on each token as ``TextParser`` does; None if any token is
    not a number or a value is beyond float32 (those rows take the parser's path)."""
    try:
        values = np.array(list(map(float, b",".join(payloads).split(b","))), np.float64)
    except ValueError:
        return None
    if values.size != len(payloads) * features or \
            (values.size and np.abs(values).max() >= FLOAT32_OVERFLOW):
        return None
    return values.astype(np.float32).reshape(len(payloads), features)
