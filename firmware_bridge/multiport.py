"""Several serial ports as one source of ``(stream, event)`` pairs: each port a stream.

Each port is a ``Link`` (its own reader thread, reconnects); one small thread per port
moves its events into a shared bounded queue tagged with the port's URL, which is the
stream id. Predictions are not sent back over the ports (``publish`` only counts them);
the daemon writes them to its output.
"""
from __future__ import annotations

import collections
import logging
import threading
from typing import Optional, Sequence

from firmware_bridge.event_queue import EventQueue
from firmware_bridge.link import Link

log = logging.getLogger(__name__)


class PortsSource:
    def __init__(self, urls: Sequence[str], feature_names, *, protocol: str = "text",
                 baudrate: int = 115200, queue_size: int = 65536):
        if len(set(urls)) != len(urls):
            raise ValueError(f"a port is given twice: {list(urls)}")
        self.queue: EventQueue = EventQueue(queue_size)
        self.counters: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self.links = {url: Link.open(url, protocol, baudrate, feature_names=feature_names,
                                     write_timeout=0.05) for url in urls}
        self._pumps = [threading.Thread(target=self._pump, args=(url, link), daemon=True,
                                        name=f"port-{url}") for url, link in self.links.items()]
        for t in self._pumps:
            t.start()

    def _pump(self, url: str, link: Link) -> None:
        while not self._stop.is_set():
            events = link.get_many(256, timeout=0.1)
            if events:
                pairs = [(url, e) for e in events]
                while pairs and not self._stop.is_set():  # wait for room: nothing dropped
                    pairs = pairs[self.queue.put_many(pairs, timeout=0.1):]

    def get_many(self, limit: int, timeout: Optional[float] = None) -> list:
        return self.queue.get_many(limit, timeout)

    def publish(self, stream: str, payload) -> bool:
        self.counters["predictions"] += 1
        return True

    def status(self) -> dict[str, int]:
        out = dict(self.counters)
        for url, link in self.links.items():
            for k, v in link.counters.snapshot().items():
                if isinstance(v, int):
                    out[f"link_{k}"] = out.get(f"link_{k}", 0) + v
        return out

    def close(self) -> None:
        self._stop.set()
        for t in self._pumps:
            t.join(1.0)
        for link in self.links.values():
            link.close()
