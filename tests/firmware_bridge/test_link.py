"""The serial link over pyserial's loop:// and real pseudo-terminals.

Lines and frames go through the real ReaderThread; a pseudo-terminal's master is the
"device". Tests wait on events, queue timeouts or a sentinel sample (processing is in
order, so once the sentinel arrives everything before it has been counted).
"""
from __future__ import annotations

import logging
import os
import select
import struct
import time
import tty
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import cobs
from firmware_bridge.event_queue import EventQueue
from firmware_bridge.link import CobsFrameProtocol, Link, LinkCounters, TextLineProtocol, _Delivery
from firmware_bridge.reconnect import Backoff
from firmware_bridge.text import MAX_LINE, TextParser
from runtime.errors import PortError
from runtime.events import Reset, Sample
from runtime.ratelimit import RateLimitedLog

NAMES = ("ax", "ay", "az")
FAST = Backoff(0.02, 0.1)
SENTINEL = b"-9,-9,-9\n"


def plug_pty(link: Path) -> int:
    """A new pseudo-terminal behind the symlink ``link``; returns its master fd."""
    master, slave = os.openpty()
    tty.setraw(slave)
    device = os.ttyname(slave)
    os.close(slave)
    tmp = link.with_name(link.name + ".new")
    os.symlink(device, tmp)
    os.replace(tmp, link)
    return master


@pytest.fixture
def pty_port(tmp_path):
    link = tmp_path / "ttyDEVICE"
    masters = [plug_pty(link)]
    yield link, masters
    for fd in masters:
        try:
            os.close(fd)
        except OSError:
            pass


def collect(link: Link, n: int, timeout: float = 5.0) -> list:
    events = []
    deadline = time.monotonic() + timeout
    while len(events) < n and (event := link.get(max(0.0, deadline - time.monotonic()))) is not None:
        events.append(event)
    return events


def until_sentinel(link: Link, timeout: float = 5.0) -> list:
    """Events before the sentinel sample (which must arrive)."""
    events = []
    deadline = time.monotonic() + timeout
    while (event := link.get(max(0.0, deadline - time.monotonic()))) is not None:
        if isinstance(event, Sample) and event.values.tolist() == [-9.0, -9.0, -9.0]:
            return events
        events.append(event)
    raise AssertionError(f"sentinel never arrived; got {events}")


def values(events) -> list[list[float]]:
    return [e.values.tolist() for e in events if isinstance(e, Sample)]


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)
    return predicate()


# ----------------------------------------------------------------------------- text


def test_every_sample_arrives_once_in_order_over_a_pty(pty_port):
    path, (master,) = pty_port
    rng = np.random.default_rng(1)
    data = rng.normal(size=(300, 3)).astype(np.float32)
    stream = b"5,6\n" + b"".join(",".join(str(v) for v in row).encode() + b"\r\n" for row in data)
    with Link.open(str(path), feature_names=NAMES, queue_size=1000) as link:
        assert link.wait_connected(5) and link.connected
        i = 0
        while i < len(stream):  # uneven chunks: lines split anywhere
            n = int(rng.integers(1, 64))
            os.write(master, stream[i:i + n])
            i += n
        events = collect(link, 300)
        assert link.get(0.05) is None
    assert np.array(values(events), np.float32).tobytes() == data.tobytes()
    assert link.counters["samples"] == 300 and link.counters.rejected == {}


def test_first_line_is_discarded_even_when_valid():
    with Link.open("loop://", feature_names=NAMES) as link:
        link.write(b"7,7,7\n1,2,3\n")
        assert values(collect(link, 1)) == [[1.0, 2.0, 3.0]]


def test_garbage_is_counted_by_reason_and_never_becomes_a_sample(pty_port):
    path, (master,) = pty_port
    lines = [
        b"junk-first-line", b"1,2,3", b"1,two,3", b"1,2", b"1,2,3,4", b"nan,1,2", b"1,inf,2", b"2,3,4",
        b"9" * 3000, b"bx:1 ay:2 az:3", b"\xff\xfe\x80", bytes(range(11, 256)), b"#reset", b"3,4,5",
        b"# a comment", b"", b"ax:4 ay:5 az:6",
    ]
    with Link.open(str(path), feature_names=NAMES) as link:
        link.wait_connected(5)
        os.write(master, b"\n".join(lines) + b"\n" + SENTINEL)
        events = until_sentinel(link)
    assert values(events) == [[1, 2, 3], [2, 3, 4], [3, 4, 5], [4, 5, 6]]
    assert sum(isinstance(e, Reset) for e in events) == 1
    assert link.counters.rejected == {
        "not_numeric": 1, "field_count": 2, "non_finite": 2, "line_too_long": 1, "unknown_name": 1,
        "bad_encoding": 2,
    }


def test_over_long_line_in_pieces_is_counted_once_and_skipped(pty_port):
    path, (master,) = pty_port
    with Link.open(str(path), feature_names=NAMES) as link:
        link.wait_connected(5)
        os.write(master, b"\n")
        for _ in range(50):
            os.write(master, b"1," * 50)  # 5000 bytes, no newline
        os.write(master, b"1,2,3\n1,2,3\n" + SENTINEL)  # the first "1,2,3" ends the long line
        events = until_sentinel(link)
    assert values(events) == [[1, 2, 3]]
    assert link.counters.rejected == {"line_too_long": 1}


def test_header_and_name_value_lines():
    with Link.open("loop://", feature_names=NAMES) as link:
        link.write(b"xx\naz,ax,ay\n3,1,2\nay:2 az:3 ax:1\n#reset\n6\t4\t5\n" + b"-9 -9 -9\n")
        events = until_sentinel(link)
    assert [type(e).__name__ for e in events] == ["Sample", "Sample", "Reset", "Sample"]
    assert values(events) == [[1, 2, 3], [1, 2, 3], [4, 5, 6]]
    assert all(e.seq is None and e.received > 0 for e in events)


# ----------------------------------------------------------------------------- cobs


def frame(type_: int, seq: int, payload: bytes = b"") -> bytes:
    return cobs.encode_frame(type_, seq, payload)


def sample(seq: int, *v: float) -> bytes:
    return frame(cobs.SAMPLE, seq, struct.pack(f"<{len(v)}f", *v))


def hello(seq: int, features: int = 3, version: int = 1) -> bytes:
    return frame(cobs.HELLO, seq, bytes((version, features)))


def test_cobs_frames_gaps_and_rejections():
    bad_crc = bytearray(cobs.encode_body(cobs.SAMPLE, 8, struct.pack("<3f", 1, 1, 1)))
    bad_crc[-1] ^= 0x40
    stream = (
        b"\x00" + hello(0) + sample(1, 1, 2, 3) + sample(2, 2, 3, 4)
        + sample(5, 3, 4, 5)  # 3 and 4 lost
        + frame(cobs.RESET, 6) + b"\x00\x00\x00"  # empty frames: ignored
        + sample(7, 1, 2) + cobs.cobs_encode(bytes(bad_crc)) + b"\x00" + sample(9, 1, float("nan"), 2)
        + frame(cobs.PREDICTION, 10, cobs.prediction_payload(0, [0.5])) + b"\x05\x01\x02\x00"
        + b"\x07" * 400 + b"\x00" + sample(11, 4, 5, 6) + sample(12, -9, -9, -9)
    )
    with Link.open("loop://", "cobs", feature_names=NAMES) as link:
        link.write(stream)
        events = until_sentinel(link)
    assert values(events) == [[1, 2, 3], [2, 3, 4], [3, 4, 5], [4, 5, 6]]
    assert [e.seq for e in events] == [1, 2, 5, 6, 11]
    assert isinstance(events[3], Reset)
    assert link.counters.rejected == {
        "length": 1, "crc": 1, "non_finite": 1, "unknown_type": 1, "cobs": 1, "frame_too_long": 1,
    }
    assert link.counters["dropped"] == 2 + 4  # 3, 4 lost; 7..10 rejected
    assert link.counters["hellos"] == 1


def test_cobs_hello_mismatch_refuses_samples_until_a_matching_hello():
    stream = (
        b"\x00" + hello(0, features=4) + sample(1, 1, 2, 3) + frame(cobs.RESET, 2)
        + hello(3, version=2) + sample(4, 1, 2, 3)
        + hello(5) + sample(6, 1, 2, 3) + sample(7, -9, -9, -9)
    )
    with Link.open("loop://", "cobs", feature_names=NAMES) as link:
        link.write(stream)
        events = until_sentinel(link)
    assert values(events) == [[1, 2, 3]] and events[0].seq == 6
    assert link.counters.rejected == {"hello_mismatch": 5}
    assert link.counters["dropped"] == 0  # a HELLO restarts the sequence tracking


def test_cobs_sequence_wraps_at_65536():
    stream = b"".join(sample(s, 1, 1, 1) for s in (65534, 65535, 0, 1)) + sample(4, -9, -9, -9)
    with Link.open("loop://", "cobs", feature_names=NAMES) as link:
        link.write(stream)
        assert len(until_sentinel(link)) == 4
    assert link.counters["dropped"] == 2


# ----------------------------------------------------------------------------- queue, logs, writes


def test_full_queue_drops_new_events_and_counts_overflow():
    with Link.open("loop://", feature_names=NAMES, queue_size=3, put_timeout=0) as link:
        link.write(b"\n" + b"".join(f"{i},0,0\n".encode() for i in range(10)))
        assert wait_until(lambda: link.counters["samples"] + link.counters["overflow"] == 10)
        assert link.counters["overflow"] == 7
        assert [v[0] for v in values(collect(link, 3))] == [0, 1, 2]
        link.write(b"10,0,0\n")
        assert values(collect(link, 1)) == [[10, 0, 0]]


def test_rejections_are_logged_at_most_once_per_interval(caplog):
    caplog.set_level(logging.WARNING, logger="firmware_bridge.link")
    with Link.open("loop://", feature_names=NAMES, log_interval=60) as link:
        link.write(b"\n" + b"x,y,z\n" * 20 + b"1,2\n" + SENTINEL)
        until_sentinel(link)
    assert link.counters.rejected == {"not_numeric": 20, "field_count": 1}
    messages = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(messages) == 2 and any("not_numeric" in m for m in messages)


def test_rate_limited_log_reports_what_it_suppressed(caplog):
    now = [0.0]
    limiter = RateLimitedLog(logging.getLogger("t.limit"), interval=10, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="t.limit")
    assert limiter.warning("k", "bad %s", 1)
    now[0] = 5
    assert not limiter.warning("k", "bad %s", 2) and not limiter.warning("k", "bad %s", 3)
    assert limiter.warning("other", "other key")
    now[0] = 10
    assert limiter.warning("k", "bad %s", 4)
    assert [r.getMessage() for r in caplog.records] == [
        "bad 1", "other key", "bad 4 (2 more suppressed in the last 10 s)",
    ]


def read_master(master: int, n: int, timeout: float = 5.0) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while len(out) < n and select.select([master], [], [], max(0.0, deadline - time.monotonic()))[0]:
        out += os.read(master, n - len(out))
    return out


@pytest.mark.parametrize("protocol", ["text", "cobs"])
def test_write_prediction_back_to_the_device(pty_port, protocol):
    path, (master,) = pty_port
    with Link.open(str(path), protocol, feature_names=NAMES) as link:
        link.wait_connected(5)
        assert link.write_prediction([0.25, 0.75], 1, "walk", seq=42)
        expected = (b"p=0.25,0.75 c=walk\n" if protocol == "text"
                    else frame(cobs.PREDICTION, 42, cobs.prediction_payload(1, [0.25, 0.75])))
        assert read_master(master, len(expected)) == expected
    assert link.counters["writes"] == 1


def test_open_errors_name_the_port(tmp_path):
    with pytest.raises(PortError, match="ttyNOPE") as e:
        Link.open(str(tmp_path / "ttyNOPE"), feature_names=NAMES)
    assert e.value.exit_code == 7
    with pytest.raises(PortError, match="bogus://"):
        Link.open("bogus://x", feature_names=NAMES)
    with pytest.raises(ValueError, match="protocol"):
        Link.open("loop://", "xml", feature_names=NAMES)


def test_close_closes_the_port(pty_port):
    path, (master,) = pty_port
    poller = select.poll()
    poller.register(master, select.POLLOUT)
    link = Link.open(str(path), feature_names=NAMES)
    assert link.wait_connected(5)
    assert not poller.poll(0)[0][1] & select.POLLHUP
    link.close()
    link.close()
    assert poller.poll(0)[0][1] & select.POLLHUP
    assert not link.connected and not link.write(b"x") and link.counters["write_errors"] == 1


# ----------------------------------------------------------------------------- reconnect


def test_waits_for_a_port_that_is_not_there_yet(tmp_path):
    path = tmp_path / "ttyLATE"
    with Link.open(str(path), feature_names=NAMES, require_port=False, backoff=FAST) as link:
        assert not link.wait_connected(0.1)
        master = plug_pty(path)
        try:
            assert link.wait_connected(5)
            os.write(master, b"\n1,2,3\n")
            assert values(collect(link, 1)) == [[1, 2, 3]]
            assert link.reconnects == 0
        finally:
            os.close(master)


@pytest.mark.parametrize("protocol", ["text", "cobs"])
def test_unplug_and_replug_under_the_same_path(pty_port, protocol, caplog):
    caplog.set_level(logging.INFO, logger="firmware_bridge.link")
    path, masters = pty_port
    first = b"\n1,2,3\n" if protocol == "text" else b"\x00" + sample(100, 1, 2, 3)
    second = b"partial\n4,5,6\n" if protocol == "text" else b"\x00" + sample(7, 4, 5, 6) + sample(8, 5, 6, 7)
    with Link.open(str(path), protocol, feature_names=NAMES, backoff=FAST) as link:
        assert link.wait_connected(5)
        os.write(masters[0], first)
        assert values(collect(link, 1)) == [[1, 2, 3]]

        path.unlink()  # unplug: the device node goes away and reads fail
        os.close(masters.pop())
        assert link.wait_connected(5, connected=False)
        assert not link.write_prediction([0.5], 0, "0")
        assert wait_until(lambda: "cannot be opened" in caplog.text)

        masters.append(plug_pty(path))  # replug: a new device behind the same path
        assert link.wait_connected(5)
        os.write(masters[0], second)
        got = collect(link, 2 if protocol == "cobs" else 1)
    assert values(got) == ([[4, 5, 6], [5, 6, 7]] if protocol == "cobs" else [[4, 5, 6]])
    assert link.reconnects == 1 and link.counters["disconnects"] == 1
    assert link.counters["dropped"] == 0  # seq 100 -> 7 is a new connection, not a gap
    assert "lost" in caplog.text and "is back" in caplog.text


# ----------------------------------------------------------------------------- chunking (no I/O)

def feed(protocol_for, stream: bytes, cuts: list[int]):
    """Feed ``stream`` cut at ``cuts`` into a fresh protocol; (events, rejected, max buffer)."""
    events: EventQueue = EventQueue(100_000)
    counters = LinkCounters()
    delivery = _Delivery(events, counters, RateLimitedLog(logging.getLogger("t.feed"), 3600), 0)
    protocol = protocol_for(delivery)
    biggest = 0
    for a, b in zip([0, *cuts], [*cuts, len(stream)]):
        protocol.data_received(stream[a:b])
        biggest = max(biggest, len(protocol.buffer) if hasattr(protocol, "buffer") else 0)
    out = [("reset",) if isinstance(e, Reset) else (e.seq, e.values.tobytes())
           for e in events.get_many(100_000, 0)]
    return out, counters.rejected, biggest


_pieces = st.sampled_from([
    b"1,2,3\n", b"4 5 6\r\n", b"#reset\n", b"x\n", b"nan,1,2\n", b"\n", b"\r\n", b"ax:1 ay:2 az:3\n",
    b"7" * 700, b"8" * 1500 + b"\n", b"\xff\n", b"az,ay,ax\n", b"1,2", b",3\n",
])


@settings(max_examples=150, deadline=None)
@given(st.lists(_pieces, max_size=30).map(b"".join), st.data())
def test_text_events_do_not_depend_on_how_bytes_are_chunked(stream, data):
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=20)))
    make = lambda d: TextLineProtocol(TextParser(NAMES), d, lambda exc: None)  # noqa: E731
    whole = feed(make, stream, [])
    chunked = feed(make, stream, cuts)
    assert chunked[:2] == whole[:2]
    assert chunked[2] <= MAX_LINE + 1


_frames = st.sampled_from([
    sample(1, 1, 2, 3), sample(2, 4, 5, 6), sample(9, 1, 1, 1), frame(cobs.RESET, 3), hello(0), hello(0, 5),
    b"\x00", b"\x05\x01\x00", b"\x09" * 600 + b"\x00", sample(4, 1, 2), b"\x03\x01",
])


@settings(max_examples=150, deadline=None)
@given(st.lists(_frames, max_size=30).map(b"".join), st.data())
def test_cobs_events_do_not_depend_on_how_bytes_are_chunked(stream, data):
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=20)))
    make = lambda d: CobsFrameProtocol(3, d, lambda exc: None)  # noqa: E731
    assert feed(make, stream, cuts)[:2] == feed(make, stream, [])[:2]
