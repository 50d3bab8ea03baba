"""The bounded event queue between the reader thread and the consumer."""
from __future__ import annotations

import threading
import time

import pytest

from firmware_bridge.event_queue import EventQueue


def test_batches_keep_their_order_and_the_bound_is_in_items():
    q = EventQueue(5)
    assert q.put_many([1, 2, 3]) == 3
    assert q.put_many([4, 5, 6, 7]) == 2  # room for two: the first two are taken
    assert len(q) == 5
    assert q.get_many(2) == [1, 2]
    assert q.get_many(10) == [3, 4, 5]
    assert q.get_many(10, timeout=0) == []


def test_get_waits_for_the_first_item_then_returns_what_is_there():
    q = EventQueue(10)
    threading.Timer(0.05, q.put_many, args=([1, 2],)).start()
    assert q.get_many(10, timeout=5) == [1, 2]
    t0 = time.monotonic()
    assert q.get_many(10, timeout=0.05) == []
    assert time.monotonic() - t0 >= 0.04


def test_a_full_queue_takes_new_items_once_the_consumer_makes_room():
    q = EventQueue(2)
    q.put_many([1, 2])
    threading.Timer(0.05, q.get_many, args=(1,)).start()
    assert q.put_many([3, 4], timeout=0.5) == 1  # one slot freed; the wait for more times out
    assert q.get_many(10) == [2, 3]


def test_a_full_queue_without_a_timeout_takes_nothing():
    q = EventQueue(1)
    q.put_many(["a"])
    assert q.put_many(["b", "c"], timeout=0) == 0
    assert q.get_many(5) == ["a"]


def test_size_must_be_positive():
    with pytest.raises(ValueError, match="maxsize must be at least 1"):
        EventQueue(0)
