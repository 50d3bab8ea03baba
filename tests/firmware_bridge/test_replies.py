"""The bounded reply queue: handing a reply in never waits for the port."""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter

import pytest

from firmware_bridge.replies import ReplyWriter
from runtime.ratelimit import RateLimitedLog


def writer(send, maxsize=4):
    counts: Counter[str] = Counter()
    w = ReplyWriter(send, (OSError,), lambda key: counts.update([key]),
                    RateLimitedLog(logging.getLogger("t.replies"), 3600), "ttyTEST", maxsize=maxsize)
    w.start()
    return w, counts


def test_a_port_that_never_takes_a_write_costs_replies_not_time():
    release = threading.Event()
    w, counts = writer(lambda data: release.wait())
    started = time.perf_counter()
    accepted = [w.put(b"%d" % i) for i in range(1000)]
    took = time.perf_counter() - started
    assert sum(accepted) <= 5 and counts["replies_dropped"] == 1000 - sum(accepted)
    assert took < 1.0  # a blocking write would have waited here
    release.set()
    w.stop()


def test_replies_are_sent_in_order_and_failures_counted():
    sent: list[bytes] = []
    done = threading.Event()

    def send(data):
        if data == b"bad":
            raise OSError("write timeout")
        sent.append(data)
        if data == b"last":
            done.set()

    w, counts = writer(send, maxsize=100)
    for data in (b"a", b"bad", b"b", b"last"):
        assert w.put(data)
    assert done.wait(5)
    w.stop()
    assert sent == [b"a", b"b", b"last"]
    assert counts == {"writes": 3, "write_errors": 1}


def test_queue_needs_room():
    with pytest.raises(ValueError, match="at least 1"):
        ReplyWriter(lambda d: None, (OSError,), lambda k: None, RateLimitedLog(logging.getLogger("t"), 1), "x", 0)
