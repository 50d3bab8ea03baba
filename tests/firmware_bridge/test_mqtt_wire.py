"""MQTT packets split in bulk, and the bulk source's shared parse against TextParser."""
from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge.mqtt_bulk import BulkMqttSource
from firmware_bridge.mqtt_wire import (
    PacketSplitter, ProtocolError, mqtt_string, publish_packets, puback_packets, varint,
)
from firmware_bridge.text import TextParser
from runtime.errors import FrameError
from runtime.events import Reset, Sample, SampleBlock

NAMES = ("ax", "ay", "az")


def stream_of_packets():
    topics = [mqtt_string(f"p/s{k}/sample") for k in range(3)]
    payloads = [b"1,2,3", b"x" * 300, b""]  # a two-byte remaining length, an empty payload
    qos0 = publish_packets(topics, payloads, None)
    qos1 = publish_packets(topics[:1], [b"4,5,6"], [513])
    return b"".join(qos0 + qos1) + puback_packets([7, 65535]) + b"\xd0\x00" + b"\x20\x02\x00\x00"


def test_splitter_finds_every_packet_whatever_the_read_boundaries():
    data = stream_of_packets()
    for cut in range(1, len(data)):
        sp = PacketSplitter(1000)
        a, b = sp.feed(data[:cut]), sp.feed(data[cut:])
        pubs = a.publishes + b.publishes
        assert pubs == [(b"p/s0/sample", b"1,2,3"), (b"p/s1/sample", b"x" * 300),
                        (b"p/s2/sample", b""), (b"p/s0/sample", b"4,5,6")], cut
        assert a.qos1_ids + b.qos1_ids == [513]
        assert a.acked + b.acked == [7, 65535]
        assert a.pings + b.pings == 1 and (a.connack, b.connack) in ((None, 0), (0, None))


def test_an_oversized_publish_is_reported_by_topic_and_skipped_as_it_streams_in():
    big = publish_packets([mqtt_string("p/big/sample")], [b"9" * 5000], None)[0]
    after = publish_packets([mqtt_string("p/s0/sample")], [b"1,2,3"], None)[0]
    sp = PacketSplitter(1000)
    got = [sp.feed(big[k:k + 700]) for k in range(0, len(big), 700)] + [sp.feed(after)]
    pubs = [p for g in got for p in g.publishes]
    assert pubs == [(b"p/big/sample", None), (b"p/s0/sample", b"1,2,3")]
    assert len(sp._buf) == 0


def test_splitter_refuses_what_a_broker_never_sends_this_client():
    with pytest.raises(ProtocolError, match="QoS 2"):
        PacketSplitter(1000).feed(b"\x34\x07\x00\x03a/b\x00\x01")
    with pytest.raises(ProtocolError, match="0x82"):
        PacketSplitter(1000).feed(b"\x82\x02\x00\x01")
    with pytest.raises(ProtocolError, match="4 bytes"):
        PacketSplitter(1000).feed(b"\x30\xff\xff\xff\xff\x01")
    assert varint(127) == b"\x7f" and varint(128) == b"\x80\x01" and varint(16384) == b"\x80\x80\x01"


PAYLOADS = [b"1,2,3", b"0.5,-1e-3,+2.", b"1,,2,3", b"1,2,", b"1e,2,3", b"nan,1,2", b"1e39,0,0",
            b"4,5,6\n7,8,9", b"az,ax,ay", b"10,20,30", b"ax:1 ay:2 az:3", b"#reset", b"e,E,e",
            b"1,2", b".5,5.,-.5", b"1,2,3\r", b"\xff,1,2", b" 1,2,3"]


def reference(payload_seq):
    """What per-stream TextParsers make of each (stream, payload), line by line."""
    parsers, out, rejects = {}, [], []
    for stream, payload in payload_seq:
        p = parsers.setdefault(stream, TextParser(NAMES))
        for line in payload.split(b"\n"):
            try:
                ev = p.parse_line(line)
            except FrameError as e:
                rejects.append((stream, e.reason))
                continue
            if type(ev) is Sample:
                out.append((stream, ev.values.tolist()))
            elif type(ev) is Reset:
                out.append((stream, "reset"))
    return out, rejects


def bulk(payload_seq):
    src = BulkMqttSource("mqtt://127.0.0.1:1/p", NAMES)
    pubs = [(f"p/{s}/sample".encode(), pl) for s, pl in payload_seq]
    out = []
    for e in src._events(pubs, 1.0):
        if type(e) is SampleBlock:
            assert e.values.dtype == np.float32
            out += [(s, x.tolist()) for s, x in zip(e.streams, e.values)]
        else:
            out.append((e[0], "reset"))
    rejects = sorted((s, r) for s in {s for s, _ in payload_seq} for r, n in src.rejects.of(s).items()
                     for _ in range(n))
    return out, rejects


@pytest.mark.parametrize("seed", range(6))
def test_bulk_parse_equals_text_parser_on_mixed_payloads(seed):
    rng = np.random.default_rng(seed)
    seq = [(f"s{rng.integers(3)}", PAYLOADS[rng.integers(len(PAYLOADS))]) for _ in range(60)]
    want, want_rejects = reference(seq)
    got, got_rejects = bulk(seq)
    assert got == want
    assert got_rejects == sorted(want_rejects)


def test_bulk_parse_of_random_numbers_is_exact():
    rng = np.random.default_rng(1)
    rows = (rng.normal(size=(500, 3)) * 10.0 ** rng.integers(-8, 8, size=(500, 1))).astype(np.float32)
    seq = [(f"s{k % 7}", ",".join(repr(float(v)) for v in row).encode()) for k, row in enumerate(rows)]
    got, _ = bulk(seq)
    assert np.array_equal(np.array([v for _, v in got], np.float32), rows)


def test_feature_names_made_of_number_characters_turn_the_shared_parse_off():
    src = BulkMqttSource("mqtt://127.0.0.1:1/p", ("e", "E", "x"))
    assert not src._fast_ok
    out = src._events([(b"p/a/sample", b"E,e,x"), (b"p/a/sample", b"1,2,3")], 1.0)
    assert [x.tolist() for x in out[0].values] == [[2, 1, 3]]  # the header took effect


def test_a_read_of_plain_lines_of_known_streams_takes_the_loop_free_path_with_the_same_result():
    src = BulkMqttSource("mqtt://127.0.0.1:1/p", NAMES)
    rows = np.random.default_rng(2).normal(size=(40, 3)).astype(np.float32)
    pubs = [(f"p/s{k % 4}/sample".encode(), ",".join(repr(float(v)) for v in r).encode())
            for k, r in enumerate(rows)]
    first = src._events(pubs[:4], 1.0)  # routes learned on the way
    assert src._all_plain(pubs, 2.0) is not None
    block, = src._events(pubs, 2.0)
    assert block.streams == [f"s{k % 4}" for k in range(40)] and block.received == 2.0
    assert np.array_equal(block.values, rows) and np.array_equal(first[0].values, rows[:4])
    assert src.counters["messages"] == 4 + 40 + 40
    header = [(b"p/s1/sample", b"az,ax,ay")]
    src._events(header, 3.0)  # s1's columns change: its plain lines need its parser again
    assert src._all_plain(pubs[:4], 4.0) is None
    block, = src._events(pubs[:4], 4.0)
    assert block.values[1].tolist() == rows[1][[1, 2, 0]].tolist()
    assert src._all_plain([(b"p/s0/sample", b"1,2,3"), (b"p/s0/reset", b"")], 5.0) is None
