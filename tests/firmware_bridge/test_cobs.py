"""The cobs wire protocol in Python: known vectors, round trips, every rejection, fuzzing."""
from __future__ import annotations

import math
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge import cobs
from firmware_bridge.cobs import (
    HELLO, PREDICTION, RESET, SAMPLE, Frame, FrameDecoder, SequenceTracker, check_hello,
    cobs_decode, cobs_encode, crc16, decode_packet, encode_frame, hello_payload,
    parse_hello, parse_prediction, parse_sample, prediction_payload, sample_payload,
)
from runtime.errors import FrameError, StepwiseError

# Wikipedia "Consistent Overhead Byte Stuffing", encoding examples (delimiter excluded).
R254 = bytes(range(1, 255))
COBS_VECTORS = [
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (R254, b"\xff" + R254),
    (b"\x00" + R254, b"\x01\xff" + R254),
    (bytes(range(1, 256)), b"\xff" + R254 + b"\x02\xff"),
    (bytes(range(2, 256)) + b"\x00", b"\xff" + bytes(range(2, 256)) + b"\x01\x01"),
    (bytes(range(3, 256)) + b"\x00\x01", b"\xfe" + bytes(range(3, 256)) + b"\x02\x01"),
    (b"", b"\x01"),
]


def packet(frame_bytes: bytes) -> bytes:
    assert frame_bytes.endswith(b"\x00") and frame_bytes.count(0) == 1
    return frame_bytes[:-1]


def raw_frame(body_without_crc: bytes, crc: int | None = None) -> bytes:
    crc = crc16(body_without_crc) if crc is None else crc
    return cobs_encode(body_without_crc + struct.pack("<H", crc)) + b"\x00"


def kind(event):
    return event.reason if isinstance(event, FrameError) else event.type


def reason_of(data: bytes, **kwargs) -> str:
    with pytest.raises(FrameError) as info:
        decode_packet(data, **kwargs)
    return info.value.reason


@pytest.mark.parametrize("raw, encoded", COBS_VECTORS)
def test_cobs_known_vectors(raw, encoded):
    assert cobs_encode(raw) == encoded
    assert cobs_decode(encoded) == raw


def test_cobs_decode_accepts_trailing_empty_block_after_full_block():
    assert cobs_decode(b"\xff" + R254 + b"\x01") == R254


def test_crc16_check_value():
    assert crc16(b"123456789") == 0x29B1


def test_encode_frame_exact_bytes():
    # RESET, seq 0x0102: body 03 02 01 + crc16 LE
    crc = crc16(b"\x03\x02\x01")
    expected = cobs_encode(b"\x03\x02\x01" + struct.pack("<H", crc)) + b"\x00"
    assert encode_frame(RESET, 0x0102) == expected
    assert decode_packet(packet(expected)) == Frame(RESET, 0x0102, b"")


@pytest.mark.parametrize("type_, payload", [
    (HELLO, hello_payload(1, 3)),
    (SAMPLE, sample_payload([0.5, -1.25, 3e4])),
    (RESET, b""),
    (PREDICTION, prediction_payload(1, [0.25, 0.75])),
])
def test_round_trip_every_type(type_, payload):
    frame = decode_packet(packet(encode_frame(type_, 65535, payload)))
    assert frame == Frame(type_, 65535, payload)


def test_payload_parsers_return_typed_values():
    hello = parse_hello(decode_packet(packet(encode_frame(HELLO, 0, hello_payload(1, 3)))))
    assert (hello.version, hello.feature_count) == (1, 3)
    sample = decode_packet(packet(encode_frame(SAMPLE, 1, sample_payload([0.5, -2.0, 1.0]))), feature_count=3)
    assert parse_sample(sample, 3) == (0.5, -2.0, 1.0)
    pred = parse_prediction(decode_packet(packet(encode_frame(PREDICTION, 9, prediction_payload(2, [0.125, 0.5, 0.375])))))
    assert pred.class_index == 2 and pred.outputs == (0.125, 0.5, 0.375)
    assert struct.pack("<f", 0.5) == sample_payload([0.5])  # float32 little-endian


def test_largest_frames_fit_the_caps():
    frame = encode_frame(SAMPLE, 7, sample_payload([1.0] * cobs.MAX_FEATURES))
    assert len(frame) - 1 <= cobs.MAX_ENCODED
    assert len(parse_sample(decode_packet(packet(frame)))) == 62
    with pytest.raises(FrameError) as info:
        sample_payload([1.0] * 63)
    assert info.value.reason == "length"
    with pytest.raises(FrameError) as info:
        encode_frame(SAMPLE, 0, bytes(300))
    assert info.value.reason == "frame_too_long"


def test_empty_packet_is_ignored():
    assert decode_packet(b"") is None
    assert FrameDecoder().feed(b"\x00\x00\x00") == []


@pytest.mark.parametrize("data, reason", [
    (b"\x05\x01\x02", "cobs"),  # block runs past the end
    (b"\x02\x01\x00\x03", "cobs"),  # zero inside a packet
    (cobs_encode(b"\x03\x00\x00\x00"), "short"),
    (packet(raw_frame(b"\x03\x00\x00", crc=0x1234)), "crc"),
    (packet(raw_frame(b"\x09\x00\x00")), "unknown_type"),
    (packet(raw_frame(b"\x03\x00\x00\x07")), "length"),  # RESET with payload
    (packet(raw_frame(b"\x01\x00\x00\x01")), "length"),  # HELLO too short
    (packet(raw_frame(b"\x02\x00\x00" + b"\x00" * 6)), "length"),  # SAMPLE not float-sized
    (packet(raw_frame(b"\x02\x00\x00")), "length"),  # SAMPLE without values
    (packet(raw_frame(b"\x04\x00\x00\x01\x02" + b"\x00" * 4)), "length"),  # n_outputs says 2
    (packet(encode_frame(SAMPLE, 0, sample_payload([1.0, math.nan]))), "non_finite"),
    (packet(encode_frame(SAMPLE, 0, sample_payload([math.inf]))), "non_finite"),
    (packet(encode_frame(PREDICTION, 0, prediction_payload(0, [-math.inf]))), "non_finite"),
    (b"\x01" * 260, "frame_too_long"),
    (cobs_encode(bytes(range(1, 256)) + b"\x01\x02"), "frame_too_long"),  # 257-byte body
])
def test_every_rejection_reason(data, reason):
    assert reason_of(data) == reason


def test_sample_length_checked_against_feature_count():
    data = packet(encode_frame(SAMPLE, 0, sample_payload([1.0, 2.0])))
    assert reason_of(data, feature_count=3) == "length"
    assert decode_packet(data, feature_count=2).seq == 0


def test_check_hello_reports_mismatch():
    good = decode_packet(packet(encode_frame(HELLO, 0, hello_payload(1, 3))))
    assert check_hello(good, 3).feature_count == 3
    for frame, count in [(good, 4), (decode_packet(packet(encode_frame(HELLO, 0, hello_payload(2, 3)))), 3)]:
        with pytest.raises(FrameError) as info:
            check_hello(frame, count)
        assert info.value.reason == "hello_mismatch" and isinstance(info.value, StepwiseError)


def test_decoder_handles_split_chunks_and_reports_in_order():
    stream = (encode_frame(HELLO, 0, hello_payload(1, 2)) + b"\x07\x07\x00"
              + encode_frame(SAMPLE, 1, sample_payload([1.0, 2.0])) + encode_frame(RESET, 2))
    decoder = FrameDecoder()
    events = []
    for i in range(len(stream)):
        events += decoder.feed(stream[i:i + 1])
    assert [kind(e) for e in events] == [HELLO, "cobs", SAMPLE, RESET]
    assert [kind(e) for e in FrameDecoder().feed(stream)] == [kind(e) for e in events]
    assert events[2] == Frame(SAMPLE, 1, sample_payload([1.0, 2.0]))


def test_decoder_discards_oversized_input_up_to_next_delimiter():
    decoder = FrameDecoder(max_frame=cobs.MAX_ENCODED)
    events = decoder.feed(b"\x01" * 300)
    assert [e.reason for e in events] == ["frame_too_long"]
    assert decoder.buffered == 0
    assert decoder.feed(b"\x01" * 1000) == []  # still discarding, nothing buffered
    assert decoder.buffered == 0
    tail = encode_frame(RESET, 5)
    assert decoder.feed(b"\x00" + tail) == [Frame(RESET, 5, b"")]


def test_sequence_tracker_counts_gaps_with_wrap_and_hello_restart():
    tracker = SequenceTracker()
    lost = [tracker.observe(Frame(t, s, b"")) for t, s in
            [(SAMPLE, 65534), (SAMPLE, 65535), (SAMPLE, 2), (HELLO, 100), (SAMPLE, 101), (SAMPLE, 101)]]
    assert lost == [0, 0, 2, 0, 0, 65535]
    assert tracker.dropped == 2 + 65535
    tracker.reset()
    assert tracker.observe(Frame(SAMPLE, 9, b"")) == 0


# ----------------------------------------------------------------------------- fuzzing

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
frames = st.one_of(
    st.builds(lambda s, n: encode_frame(HELLO, s, hello_payload(1, n)), st.integers(0, 65535), st.integers(0, 62)),
    st.builds(lambda s, v: encode_frame(SAMPLE, s, sample_payload(v)), st.integers(0, 65535),
              st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=62)),
    st.builds(lambda s: encode_frame(RESET, s), st.integers(0, 65535)),
)


def feed_in_chunks(decoder: FrameDecoder, data: bytes, cuts: list[int]) -> list:
    events, start = [], 0
    for cut in sorted(c % (len(data) + 1) for c in cuts) + [len(data)]:
        events += decoder.feed(data[start:max(cut, start)])
        assert decoder.buffered <= decoder.max_frame
        start = max(cut, start)
    return events


@FUZZ
@given(st.binary(max_size=2000), st.lists(st.integers(0, 4000), max_size=8), st.integers(1, 300))
def test_fuzz_random_bytes_never_raise_and_stay_bounded(data, cuts, cap):
    decoder = FrameDecoder(max_frame=cap)
    for event in feed_in_chunks(decoder, data, cuts):
        assert isinstance(event, (Frame, FrameError))
        if isinstance(event, FrameError):
            assert event.reason in cobs.REASONS


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_decode_packet_raises_only_frame_errors(data):
    try:
        frame = decode_packet(data)
    except FrameError as error:
        assert error.reason in cobs.REASONS
    else:
        assert frame is None or frame.type in cobs.FRAME_TYPES


@FUZZ
@given(st.lists(frames, min_size=1, max_size=6), st.binary(max_size=600),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
       st.lists(st.integers(0, 4000), max_size=6))
def test_fuzz_mutated_streams_then_valid_frames_still_decode(good, garbage, flips, cuts):
    stream = bytearray(b"".join(good) + garbage)
    for position, value in flips:
        stream[position % len(stream)] = value
    decoder = FrameDecoder()
    feed_in_chunks(decoder, bytes(stream), cuts)
    # A leading 0x00 flushes whatever the garbage left: every good frame decodes again.
    events = decoder.feed(b"\x00" + b"".join(good))
    # The flush may reject what the garbage left (one event at most), never more.
    leftover = [e for e in events[:1] if isinstance(e, FrameError)]
    assert events[len(leftover):] == [decode_packet(packet(f)) for f in good]


@FUZZ
@given(st.binary(max_size=1200))
def test_fuzz_cobs_round_trip_has_no_zero_and_bounded_overhead(data):
    encoded = cobs_encode(data)
    assert 0 not in encoded
    assert len(encoded) <= len(data) + 1 + len(data) // 254
    assert cobs_decode(encoded) == data
