"""The ``cobs`` binary wire protocol (docs/PROTOCOL.md): pure bytes in, frames out.

A frame on the wire is ``cobs_encode(body) + b"\\x00"`` where
``body = type (u8) | seq (u16 LE) | payload | crc16 (u16 LE over type..payload)``.

Two ways to decode, both with no I/O:

- ``decode_packet(packet)``: one packet, i.e. the bytes between two ``0x00``
  delimiters (what ``serial.threaded.Packetizer.handle_packet`` receives with
  ``TERMINATOR = b"\\x00"``). Returns a ``Frame``, ``None`` for an empty packet,
  or raises ``FrameError(reason, detail)``.
- ``FrameDecoder.feed(chunk)``: arbitrary byte chunks in, an ordered list of
  ``Frame`` and ``FrameError`` objects out (never raises for bad input); it buffers
  at most ``max_frame`` bytes and discards oversized input up to the next ``0x00``.

Rejection reasons are the counter keys of PROTOCOL.md: ``cobs``, ``crc``, ``short``,
``unknown_type``, ``length``, ``non_finite``, ``frame_too_long`` (here) and
``hello_mismatch`` (``check_hello``, for the daemon).
"""
from __future__ import annotations

import binascii
import math
import struct
from dataclasses import dataclass
from typing import Iterable, Optional, Union

from runtime.errors import FrameError

HELLO = 0x01
SAMPLE = 0x02
RESET = 0x03
PREDICTION = 0x04
FRAME_TYPES = {HELLO: "HELLO", SAMPLE: "SAMPLE", RESET: "RESET", PREDICTION: "PREDICTION"}

PROTOCOL_VERSION = 1
DELIMITER = b"\x00"
HEADER_SIZE = 3  # type + seq
CRC_SIZE = 2
MIN_BODY = HEADER_SIZE + CRC_SIZE  # 5: shorter bodies are rejected as "short"
MAX_BODY = 256  # decoded body cap
MAX_ENCODED = 259  # encoded frame cap, delimiter excluded
MAX_FEATURES = (MAX_BODY - MIN_BODY) // 4  # 62
MAX_OUTPUTS = (MAX_BODY - MIN_BODY - 2) // 4  # 62

REASONS = (
    "cobs", "crc", "short", "unknown_type", "length", "non_finite",
    "frame_too_long", "hello_mismatch",
)


# ----------------------------------------------------------------------------- COBS


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (Cheshire & Baker); the result contains no ``0x00``.

    A run of 254 non-zero bytes that ends the data is not followed by a ``0x01``
    block (the form of the reference encoder); ``cobs_decode`` accepts both forms.
    """
    out = bytearray()
    segments = bytes(data).split(b"\x00")
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        full_blocks = len(segment) // 254
        for block in range(full_blocks):
            out.append(0xFF)
            out += segment[block * 254:(block + 1) * 254]
        rest = segment[full_blocks * 254:]
        if index == last and full_blocks and not rest:
            break
        out.append(len(rest) + 1)
        out += rest
    return bytes(out)


def cobs_decode(data: bytes, limit: Optional[int] = None) -> bytes:
    """Decode one COBS packet (delimiter excluded); raises ``FrameError("cobs")``.

    With ``limit``, raises ``FrameError("frame_too_long")`` as soon as the output
    would exceed ``limit`` bytes (as a byte-at-a-time receiver with that buffer would).
    """
    data = bytes(data)
    limit = len(data) if limit is None else limit
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise FrameError("cobs", f"zero byte inside the frame at offset {i}")
        end = i + code
        block = data[i + 1:end]
        if len(out) + len(block) > limit:
            raise FrameError("frame_too_long", f"decodes to more than {limit} bytes")
        if end > n:
            raise FrameError("cobs", f"block at offset {i} runs {end - n} byte(s) past the end")
        if 0 in block:
            raise FrameError("cobs", f"zero byte inside the block at offset {i}")
        out += block
        i = end
        if code != 0xFF and i < n:
            if len(out) >= limit:
                raise FrameError("frame_too_long", f"decodes to more than {limit} bytes")
            out.append(0)
    return bytes(out)


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF); ``crc16(b"123456789") == 0x29B1``."""
    return binascii.crc_hqx(data, 0xFFFF)


# ----------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class Frame:
    """One decoded, CRC-checked frame; ``payload`` excludes header and CRC."""

    type: int
    seq: int
    payload: bytes

    @property
    def type_name(self) -> str:
        return FRAME_TYPES.get(self.type, f"0x{self.type:02x}")


@dataclass(frozen=True)
class Hello:
    version: int
    feature_count: int


@dataclass(frozen=True)
class Prediction:
    class_index: int
    outputs: tuple[float, ...]


def encode_body(type: int, seq: int, payload: bytes = b"") -> bytes:
    """``type | seq | payload | crc``, not COBS-encoded. ``seq`` is taken mod 65536."""
    if not 0 <= type <= 0xFF:
        raise FrameError("unknown_type", f"frame type {type} does not fit in one byte")
    head = struct.pack("<BH", type, seq % 65536) + bytes(payload)
    body = head + struct.pack("<H", crc16(head))
    if len(body) > MAX_BODY:
        raise FrameError("frame_too_long", f"body of {len(body)} bytes exceeds {MAX_BODY}")
    return body


def encode_frame(type: int, seq: int, payload: bytes = b"") -> bytes:
    """A complete wire frame: COBS-encoded body followed by the ``0x00`` delimiter."""
    return cobs_encode(encode_body(type, seq, payload)) + DELIMITER


def hello_payload(version: int = PROTOCOL_VERSION, features: int = 0) -> bytes:
    """HELLO payload: ``u8 version, u8 feature_count`` (``features`` is the count)."""
    if not (0 <= version <= 0xFF and 0 <= features <= 0xFF):
        raise FrameError("length", f"HELLO fields must fit in a byte: {version}, {features}")
    return bytes((version, features))


def sample_payload(values: Iterable[float]) -> bytes:
    """SAMPLE payload: float32 LE per feature. Non-finite values are encoded as given."""
    values = [float(v) for v in values]
    if not 1 <= len(values) <= MAX_FEATURES:
        raise FrameError("length", f"a SAMPLE carries 1..{MAX_FEATURES} values, got {len(values)}")
    return struct.pack(f"<{len(values)}f", *values)


def prediction_payload(class_index: int, outputs: Iterable[float]) -> bytes:
    """PREDICTION payload: ``u8 class_index, u8 n_outputs, n_outputs x float32 LE``."""
    outputs = [float(v) for v in outputs]
    if not 0 <= class_index <= 0xFF:
        raise FrameError("length", f"class index {class_index} does not fit in a byte")
    if not 1 <= len(outputs) <= MAX_OUTPUTS:
        raise FrameError("length", f"a PREDICTION carries 1..{MAX_OUTPUTS} outputs, got {len(outputs)}")
    return struct.pack(f"<BB{len(outputs)}f", class_index, len(outputs), *outputs)


def _floats(data: bytes) -> tuple[float, ...]:
    values = struct.unpack(f"<{len(data) // 4}f", data)
    for i, v in enumerate(values):
        if not math.isfinite(v):
            raise FrameError("non_finite", f"value {i} is {v}")
    return values


def _check_payload(frame: Frame, feature_count: Optional[int]) -> None:
    """Raise ``length``/``non_finite`` unless the payload suits the frame type."""
    size = len(frame.payload)
    if frame.type == HELLO and size != 2:
        raise FrameError("length", f"HELLO payload is {size} bytes, expected 2")
    if frame.type == RESET and size != 0:
        raise FrameError("length", f"RESET payload is {size} bytes, expected 0")
    if frame.type == SAMPLE:
        expected = None if feature_count is None else 4 * feature_count
        if size == 0 or size % 4 or (expected is not None and size != expected):
            want = f"{expected}" if expected is not None else "a non-zero multiple of 4"
            raise FrameError("length", f"SAMPLE payload is {size} bytes, expected {want}")
        _floats(frame.payload)
    if frame.type == PREDICTION:
        n = frame.payload[1] if size >= 2 else 0
        if size < 2 or n == 0 or size != 2 + 4 * n:
            raise FrameError("length", f"PREDICTION payload is {size} bytes for {n} outputs")
        _floats(frame.payload[2:])


def decode_packet(packet: bytes, feature_count: Optional[int] = None) -> Optional[Frame]:
    """Decode the bytes between two delimiters into a checked ``Frame``.

    Returns ``None`` for an empty packet (ignored silently by the protocol). When
    ``feature_count`` is given, a SAMPLE must carry exactly that many values.
    Raises ``FrameError`` with one of the PROTOCOL.md reasons.
    """
    if not packet:
        return None
    if len(packet) > MAX_ENCODED:
        raise FrameError("frame_too_long", f"{len(packet)} encoded bytes exceed {MAX_ENCODED}")
    body = cobs_decode(packet, limit=MAX_BODY)
    if len(body) < MIN_BODY:
        raise FrameError("short", f"{len(body)} decoded bytes, at least {MIN_BODY} needed")
    (expected,) = struct.unpack_from("<H", body, len(body) - CRC_SIZE)
    actual = crc16(body[:-CRC_SIZE])
    if actual != expected:
        raise FrameError("crc", f"frame says 0x{expected:04x}, computed 0x{actual:04x}")
    type_, seq = struct.unpack_from("<BH", body)
    if type_ not in FRAME_TYPES:
        raise FrameError("unknown_type", f"type 0x{type_:02x}")
    frame = Frame(type_, seq, body[HEADER_SIZE:-CRC_SIZE])
    _check_payload(frame, feature_count)
    return frame


# ----------------------------------------------------------------------------- payloads


def _expect(frame: Frame, type_: int) -> None:
    if frame.type != type_:
        raise FrameError("unknown_type", f"expected {FRAME_TYPES[type_]}, got {frame.type_name}")


def parse_hello(frame: Frame) -> Hello:
    """The HELLO fields; raises ``FrameError`` for another type or a bad payload."""
    _expect(frame, HELLO)
    _check_payload(frame, None)
    return Hello(version=frame.payload[0], feature_count=frame.payload[1])


def parse_sample(frame: Frame, feature_count: Optional[int] = None) -> tuple[float, ...]:
    """The SAMPLE values ``[feature_count]`` as floats (finite, checked)."""
    _expect(frame, SAMPLE)
    _check_payload(frame, feature_count)
    return _floats(frame.payload)


def parse_prediction(frame: Frame) -> Prediction:
    """The PREDICTION class index and outputs ``[n_outputs]`` (finite, checked)."""
    _expect(frame, PREDICTION)
    _check_payload(frame, None)
    return Prediction(class_index=frame.payload[0], outputs=_floats(frame.payload[2:]))


def check_hello(frame: Frame, feature_count: int) -> Hello:
    """The HELLO if it matches this protocol version and ``feature_count``.

    Raises ``FrameError("hello_mismatch")`` otherwise; the daemon then refuses
    SAMPLE frames until a matching HELLO arrives.
    """
    hello = parse_hello(frame)
    if hello.version != PROTOCOL_VERSION:
        raise FrameError("hello_mismatch", f"protocol version {hello.version}, expected {PROTOCOL_VERSION}")
    if hello.feature_count != feature_count:
        raise FrameError(
            "hello_mismatch",
            f"device sends {hello.feature_count} features, the model expects {feature_count}",
        )
    return hello


# ----------------------------------------------------------------------------- streams


class FrameDecoder:
    """Incremental decoder: feed byte chunks, get ``Frame``/``FrameError`` events in order.

    At most ``max_frame`` undelimited bytes are ever buffered; a longer frame yields one
    ``FrameError("frame_too_long")`` and is discarded up to the next ``0x00``.
    """

    def __init__(self, max_frame: int = MAX_ENCODED, feature_count: Optional[int] = None):
        if max_frame < 1:
            raise ValueError(f"max_frame must be positive, got {max_frame}")
        self.max_frame = max_frame
        self.feature_count = feature_count
        self._buffer = bytearray()
        self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes of a partial frame held now (never more than ``max_frame``)."""
        return len(self._buffer)

    def reset(self) -> None:
        """Forget any partial frame (e.g. after reopening the port)."""
        self._buffer.clear()
        self._discarding = False

    def feed(self, data: bytes) -> list[Union[Frame, FrameError]]:
        """Consume ``data``; return the frames completed and rejections, in stream order."""
        data = bytes(data)
        events: list[Union[Frame, FrameError]] = []
        start = 0
        while start <= len(data):
            end = data.find(0, start)
            stop = len(data) if end < 0 else end
            self._take(data[start:stop], events)
            if end < 0:
                break
            self._delimiter(events)
            start = end + 1
        return events

    def _take(self, chunk: bytes, events: list) -> None:
        if self._discarding or not chunk:
            return
        if len(self._buffer) + len(chunk) > self.max_frame:
            size = len(self._buffer) + len(chunk)
            events.append(FrameError("frame_too_long", f"over {self.max_frame} bytes without a delimiter ({size}+)"))
            self._buffer.clear()
            self._discarding = True
            return
        self._buffer += chunk

    def _delimiter(self, events: list) -> None:
        if self._discarding:
            self._discarding = False
            return
        packet = bytes(self._buffer)
        self._buffer.clear()
        try:
            frame = decode_packet(packet, self.feature_count)
        except FrameError as error:
            events.append(error)
        else:
            if frame is not None:
                events.append(frame)


class SequenceTracker:
    """Counts frames lost between accepted frames (uint16 seq, wraps); HELLO restarts it."""

    def __init__(self) -> None:
        self.last_seq: Optional[int] = None
        self.dropped = 0

    def observe(self, frame: Frame) -> int:
        """Record an accepted frame; return how many frames were lost just before it."""
        lost = 0
        if frame.type != HELLO and self.last_seq is not None:
            lost = (frame.seq - self.last_seq - 1) % 65536
        self.last_seq = frame.seq
        self.dropped += lost
        return lost

    def reset(self) -> None:
        """Start over: the next frame is treated as the first (dropped total is kept)."""
        self.last_seq = None
