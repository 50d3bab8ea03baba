"""The C framing library, compiled with gcc: its unit tests, and byte-exact agreement
with firmware_bridge.cobs in both directions (C encodes -> Python decodes, Python
encodes PREDICTION -> C decodes byte by byte), including damaged input."""
from __future__ import annotations

import math
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge.cobs import (
    HELLO, PREDICTION, RESET, SAMPLE, Frame, FrameDecoder, cobs_decode, decode_packet,
    encode_frame, hello_payload, parse_prediction, parse_sample, prediction_payload,
    sample_payload,
)
from runtime.errors import FrameError

C_DIR = Path(__file__).resolve().parents[2] / "firmware_bridge" / "c"
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@pytest.fixture(scope="module")
def binaries(tmp_path_factory, compile_c) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("c-frame")
    return {
        "unit": compile_c(out / "test_frame", "tests/test_frame.c", "stepwise_frame.c"),
        "tool": compile_c(out / "frame_tool", "tests/frame_tool.c", "stepwise_frame.c"),
    }


def c_encode(binaries, script: list[str], start_seq: int, cap: int | None = None) -> list[str]:
    args = [str(binaries["tool"]), "encode", str(start_seq)] + ([str(cap)] if cap else [])
    result = subprocess.run(args, input="\n".join(script) + "\n", capture_output=True, text=True, check=True)
    return result.stdout.splitlines()


def c_decode(binaries, stream: bytes) -> list[str]:
    result = subprocess.run([str(binaries["tool"]), "decode"], input=stream.hex(),
                            capture_output=True, text=True, check=True)
    return result.stdout.splitlines()


def packet(frame_bytes: bytes) -> bytes:
    return frame_bytes[:-1]


def exact(values) -> list[float]:
    """Values as float32 would hold them (what C and the wire carry)."""
    return [struct.unpack("<f", struct.pack("<f", v))[0] for v in values]


def test_c_unit_tests_pass(binaries):
    result = subprocess.run([str(binaries["unit"])], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout


def test_c_frames_decode_in_python_with_wrapping_seq(binaries):
    values = exact([0.1, -2.5e-3, 12345.678])
    lines = c_encode(binaries, ["hello 3", "sample " + " ".join(map(repr, values)), "reset",
                                "sample nan 1 2"], start_seq=65534)
    assert lines[-1] == "seq 2"
    frames = [bytes.fromhex(line) for line in lines[:3]]
    decoded = [decode_packet(packet(f), feature_count=3) for f in frames]
    assert [(d.type, d.seq) for d in decoded] == [(HELLO, 65534), (SAMPLE, 65535), (RESET, 0)]
    assert parse_sample(decoded[1]) == tuple(values)
    assert frames[0] == encode_frame(HELLO, 65534, hello_payload(1, 3))
    assert frames[1] == encode_frame(SAMPLE, 65535, sample_payload(values))
    with pytest.raises(FrameError) as info:
        decode_packet(packet(bytes.fromhex(lines[3])))
    assert info.value.reason == "non_finite"


@FUZZ
@given(st.lists(st.lists(f32, min_size=1, max_size=62), min_size=1, max_size=8), st.integers(0, 65535))
def test_c_sample_frames_match_python_byte_for_byte(binaries, samples, start):
    lines = c_encode(binaries, ["sample " + " ".join(map(repr, s)) for s in samples], start)
    expected = [encode_frame(SAMPLE, start + i, sample_payload(s)).hex() for i, s in enumerate(samples)]
    assert lines == expected + [f"seq {(start + len(samples)) % 65536}"]
    events = FrameDecoder().feed(b"".join(bytes.fromhex(line) for line in lines[:-1]))
    assert [parse_sample(e) for e in events] == [tuple(s) for s in samples]


def test_c_encoder_refuses_without_advancing_seq(binaries):
    lines = c_encode(binaries, ["sample " + " ".join(["1"] * 63), "sample", "hello 0"], start_seq=5)
    assert lines == ["error features", "error features", "error features", "seq 5"]
    lines = c_encode(binaries, ["sample 1 2 3", "reset"], start_seq=5, cap=19)  # SAMPLE(3) needs 19
    assert lines[0] == encode_frame(SAMPLE, 5, sample_payload([1, 2, 3])).hex()
    lines = c_encode(binaries, ["sample 1 2 3", "reset"], start_seq=5, cap=18)
    assert lines == ["error buffer", encode_frame(RESET, 5).hex(), "seq 6"]


def c_line_for(frame: Frame) -> str:
    p = parse_prediction(frame)
    return f"prediction {frame.seq} {p.class_index} {len(p.outputs)} {frame.payload[2:].hex()}"


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 65535), st.integers(0, 255), st.lists(f32, min_size=1, max_size=62)),
                min_size=1, max_size=6))
def test_python_predictions_decode_in_c(binaries, predictions):
    frames = [encode_frame(PREDICTION, seq, prediction_payload(c, outs)) for seq, c, outs in predictions]
    lines = c_decode(binaries, b"".join(frames))
    assert lines == [c_line_for(decode_packet(packet(f))) for f in frames]
    for line, (_, _, outs) in zip(lines, predictions):
        raw = bytes.fromhex(line.split()[-1])
        assert list(struct.unpack(f"<{len(outs)}f", raw)) == exact(outs)


GOOD = encode_frame(PREDICTION, 77, prediction_payload(1, [0.25, 0.75]))


def corrupted(frame: bytes, index: int) -> bytes:
    data = bytearray(frame)
    data[index] ^= 0x40
    return bytes(data)


@pytest.mark.parametrize("bad, reason", [
    (GOOD[:-4] + b"\x00", "cobs"),  # truncated, then the flush delimiter
    (GOOD[:4] + b"\x00", "cobs"),
    (b"\x03\x04\x01\x00", "short"),
    (corrupted(GOOD, len(GOOD) - 3), "crc"),
    (corrupted(GOOD, 0), "cobs"),
    (encode_frame(SAMPLE, 1, sample_payload([1.0])), "unknown_type"),
    (encode_frame(HELLO, 1, hello_payload(1, 3)), "unknown_type"),
    (encode_frame(PREDICTION, 1, b"\x00\x02" + bytes(4)), "length"),
    (encode_frame(PREDICTION, 1, prediction_payload(0, [math.nan])), "non_finite"),
    (b"\x01" * 300 + b"\x00", "frame_too_long"),
    (b"\xff" * 259 + b"\x00", "frame_too_long"),  # within the encoded cap, body over 256
])
def test_c_decoder_rejects_then_recovers(binaries, bad, reason):
    lines = c_decode(binaries, bad + GOOD + b"\x00\x00" + GOOD)
    good = c_line_for(decode_packet(packet(GOOD)))
    assert lines == [f"error {reason}", good, good]


def expected_c_line(pkt: bytes) -> str | None:
    """What the C decoder (PREDICTION only) reports for one packet, from the Python decoder."""
    try:
        frame = decode_packet(pkt)
    except FrameError as error:
        if error.reason in ("length", "non_finite") and cobs_decode(pkt)[0] != PREDICTION:
            return "error unknown_type"
        return f"error {error.reason}"
    if frame is None:
        return None
    return c_line_for(frame) if frame.type == PREDICTION else "error unknown_type"


predictions = st.builds(lambda s, c, o: encode_frame(PREDICTION, s, prediction_payload(c, o)),
                        st.integers(0, 65535), st.integers(0, 255), st.lists(f32, min_size=1, max_size=62))
damaged = st.builds(lambda f, i, x: f[:i] + bytes([x]) + f[i + 1:], predictions, st.integers(0, 300),
                    st.integers(1, 255))
pieces = st.one_of(
    predictions, damaged,
    st.builds(lambda f, i: f[:i], predictions, st.integers(0, 300)),  # truncated
    st.builds(lambda s: encode_frame(SAMPLE, s, sample_payload([1.5, 2.5])), st.integers(0, 65535)),
    st.binary(max_size=40),
    st.builds(lambda n, b: bytes([b]) * n, st.integers(200, 600), st.integers(1, 255)),  # oversized
)


@FUZZ
@given(st.lists(pieces, min_size=1, max_size=8))
def test_c_decoder_agrees_with_python_on_damaged_streams(binaries, parts):
    stream = b"".join(parts) + b"\x00" + GOOD
    expected = [line for line in map(expected_c_line, stream.split(b"\x00")[:-1]) if line]
    assert c_decode(binaries, stream) == expected
    assert expected[-1].startswith("prediction 77 ")


# ----------------------------------------------------------------------------- the sketch

SKETCH_HOST = "tests/sketch_host.cpp"


def f32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def test_arduino_sketch_on_host_streams_frames_and_drives_led(tmp_path):
    """The example sketch, built against a mock Arduino core: HELLO, 50 Hz SAMPLEs, a
    RESET per button press, and the LED following decoded PREDICTION classes."""
    lib = tmp_path / "stepwise_frame.o"
    subprocess.run(["gcc", *CFLAGS, "-c", "-o", str(lib), str(C_DIR / "stepwise_frame.c")], check=True)
    host = tmp_path / "sketch_host"
    result = subprocess.run(["g++", "-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic",
                             f"-I{C_DIR / 'tests' / 'arduino_mock'}", f"-I{C_DIR}", "-o", str(host),
                             str(C_DIR / SKETCH_HOST), str(lib)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

    def prediction(seq: int, cls: int) -> str:
        return encode_frame(PREDICTION, seq, prediction_payload(cls, [0.1, 0.9])).hex()

    broken = corrupted(bytes.fromhex(prediction(6, 0)), 5).hex()
    arrivals = [f"100:070700{prediction(5, 1)}", f"200:{broken}", f"250:{prediction(7, 0)}",
                f"600:00{prediction(8, 2)}"]
    result = subprocess.run([str(host), "1000", "300", "400", *arrivals], capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.startswith("led")] == ["led 0 0", "led 100 1", "led 250 0", "led 600 1"]

    tx = bytes.fromhex(lines[-1].removeprefix("tx "))
    assert tx[0] == 0  # flush byte before the first frame
    events = FrameDecoder(feature_count=3).feed(tx)
    assert all(isinstance(e, Frame) for e in events)
    assert [e.seq for e in events] == list(range(len(events)))
    assert events[0] == Frame(HELLO, 0, hello_payload(1, 3))
    samples = [e for e in events if e.type == SAMPLE]
    assert len(samples) == 50 and [e.type for e in events].count(RESET) == 1
    scale = f32(5.0 / 1023.0)
    for j, frame in enumerate(samples):
        counts = [(100 * (i + 1) + (20 * j) // 20) % 1024 for i in range(3)]
        assert parse_sample(frame, 3) == tuple(f32(c * scale) for c in counts)
    reset_at = [e.type for e in events].index(RESET)
    assert events[reset_at - 1].type == SAMPLE and reset_at == 1 + 17  # pressed at 300, debounced at 330


def test_smaller_decoder_buffer_takes_what_fits_and_drops_the_rest(tmp_path):
    tool = tmp_path / "frame_tool_small"
    result = subprocess.run(["gcc", *CFLAGS, "-DSW_DECODER_BODY_SIZE=11", "-o", str(tool),
                             str(C_DIR / "tests/frame_tool.c"), str(C_DIR / "stepwise_frame.c")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    one = encode_frame(PREDICTION, 3, prediction_payload(1, [0.5]))  # body 7 + 4 = 11 bytes
    two = encode_frame(PREDICTION, 4, prediction_payload(1, [0.5, 0.5]))
    lines = subprocess.run([str(tool), "decode"], input=(two + one).hex(), capture_output=True,
                           text=True, check=True).stdout.splitlines()
    assert lines == ["error frame_too_long", c_line_for(decode_packet(packet(one)))]
