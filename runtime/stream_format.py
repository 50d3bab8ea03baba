"""The many-stream checkpoint format: every stream's state by stream id, bytes only.

Version 2 of the checkpoint file (version 1, one engine's lanes, is
``runtime.store_format``; both start with the same magic, so either reader names the
other's files by version). All integers little-endian::

    offset size  field
    0      8     magic b"STPWCKPT"
    8      2     format version (u16, 2)
    10     2     flags (u16, 0; reserved)
    12     4     header length in bytes (u32): fixed part + state table + stream table
    16     32    model sha256 (raw bytes of the model file's digest)
    48     8     samples seen, all streams (u64)
    56     8     timestamp (f64, unix time the state was captured)
    64     8     payload length in bytes (u64)
    72     4     number of streams (u32, may be 0)
    76     2     number of states (u16)
    78     4     CRC32 (zlib.crc32 over every byte of the file except these four)
    82     ...   state table, per state: u8 name length, name (UTF-8), u8 ndim, ndim x u32
           ...   stream table, per stream: u8 id length, id (UTF-8), u64 samples,
                 u64 steps since reset, u64 resets, f64 time of the last sample (NaN: none)
    header ...   payload: each state as float32 [streams, *shape], in manifest order

Problems raise ``CheckpointError`` with the reasons of ``runtime.store_format``.
"""
from __future__ import annotations

import math
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from runtime.contract import StateSpec
from runtime.errors import StateCorruptError
from runtime.store_format import (
    BAD_MAGIC, MAGIC, MALFORMED, NON_FINITE, OTHER_MODEL, TRUNCATED, UNSUPPORTED_VERSION,
    WRONG_SHAPE, WRONG_STATES, CheckpointError, _Reader, check_extent, sha256_bytes,
)
from runtime.stream_state import StreamState

STREAMS_VERSION = 2
FIXED2 = struct.Struct("<8sHHI32sQdQIHI")
CRC2_OFFSET = FIXED2.size - 4
STREAM_ROW = struct.Struct("<QQQd")
assert FIXED2.size == 82


@dataclass
class StreamsSnapshot:
    """Every stream's state at one instant; ``samples_seen`` counts all streams."""

    streams: dict[str, StreamState]
    samples_seen: int = 0
    timestamp: float = 0.0
    extra: dict[str, int] = field(default_factory=dict)
    model_sha256: str = ""  # as read from a file


def file_version(data: bytes) -> int | None:
    """The format version of checkpoint bytes, or None if they are no checkpoint."""
    if len(data) < 10 or data[:8] != MAGIC:
        return None
    return struct.unpack_from("<H", data, 8)[0]


def encode_streams(snap: StreamsSnapshot, model_sha256: str, states: Sequence[StateSpec]) -> bytes:
    """The version-2 file for ``snap``; StateCorruptError if a stream does not fit
    ``states`` or holds a non-finite value."""
    sha = sha256_bytes(model_sha256)
    ids = list(snap.streams)
    table = b"".join(_name(s.name) + struct.pack(f"<B{len(s.shape)}I", len(s.shape), *s.shape)
                     for s in states)
    rows = []
    for sid in ids:
        st = snap.streams[sid]
        if not (0 <= st.samples < 2**63 and 0 <= st.steps < 2**63 and 0 <= st.seq < 2**63):
            raise StateCorruptError(f"stream {sid!r}: counters out of range")
        rows.append(_name(sid) + STREAM_ROW.pack(st.samples, st.steps, st.seq, st.last_t))
    payload = b"".join(_stacked(snap, ids, spec).tobytes() for spec in states)
    variable = table + b"".join(rows)
    header_len = FIXED2.size + len(variable)
    fixed = FIXED2.pack(MAGIC, STREAMS_VERSION, 0, header_len, sha, int(snap.samples_seen),
                        float(snap.timestamp), len(payload), len(ids), len(states), 0)
    body = fixed[:CRC2_OFFSET]
    crc = zlib.crc32(payload, zlib.crc32(variable, zlib.crc32(body)))
    return body + struct.pack("<I", crc) + variable + payload


def _stacked(snap: StreamsSnapshot, ids: list[str], spec: StateSpec) -> np.ndarray:
    """``[streams, *shape]`` '<f4' of one state over ``ids``."""
    if not ids:
        return np.empty((0, *spec.shape), "<f4")
    try:
        out = np.array([snap.streams[sid].states[spec.name] for sid in ids], "<f4")
    except (KeyError, ValueError):
        out = None
    if out is None or out.shape[1:] != tuple(spec.shape):
        bad = next((sid for sid in ids if tuple(np.shape(snap.streams[sid].states.get(
            spec.name))) != tuple(spec.shape)), "?")
        raise StateCorruptError(f"stream {bad!r}: state {spec.name!r} missing or not "
                                f"{list(spec.shape)}")
    if not np.isfinite(out).all():
        raise StateCorruptError(f"refusing to persist non-finite values in state {spec.name!r}")
    return out.reshape(len(ids), *spec.shape)


def _name(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 255:
        raise StateCorruptError(f"name longer than 255 bytes: {text[:40]!r}...")
    return bytes([len(raw)]) + raw


def decode_streams(data: bytes, model_sha256: str | None,
                   states: Sequence[StateSpec] | None) -> StreamsSnapshot:
    """Integrity checks, model and layout checks against ``model_sha256`` and ``states``
    (None: not checked, for inspection), then the snapshot."""
    n = len(data)
    if n < FIXED2.size or data[:8] != MAGIC:
        raise CheckpointError(BAD_MAGIC if data[:8] != MAGIC[:min(n, 8)] else TRUNCATED,
                              f"not a complete checkpoint header ({n} bytes)")
    (_, version, _, header_len, sha, samples, ts, payload_len, n_streams, n_states,
     crc) = FIXED2.unpack_from(data)
    if version != STREAMS_VERSION:
        raise CheckpointError(UNSUPPORTED_VERSION, f"format version {version}, expected "
                                                   f"{STREAMS_VERSION} (many streams)")
    total = header_len + payload_len
    if header_len < FIXED2.size:
        raise CheckpointError(TRUNCATED, f"file is {n} bytes, its header declares {total}")
    check_extent(data, total, CRC2_OFFSET, crc)
    if model_sha256 is not None and sha.hex() != model_sha256.lower():
        raise CheckpointError(OTHER_MODEL, f"checkpoint is for model {sha.hex()[:12]}..., "
                                           f"this model is {model_sha256.lower()[:12]}...")
    cur = _Reader(data, FIXED2.size, header_len)  # the version-1 header reader
    layout = [cur.state_entry() for _ in range(n_states)]
    if states is not None:
        _check_layout(layout, states)
    rows = [(cur.name(), STREAM_ROW.unpack(cur.take(STREAM_ROW.size))) for _ in range(n_streams)]
    if cur.pos != header_len or len({sid for sid, _ in rows}) != n_streams:
        raise CheckpointError(MALFORMED, "header layout is inconsistent or repeats a stream id")
    need = 4 * n_streams * sum(math.prod(s) for _, s in layout)
    if need != payload_len:
        raise CheckpointError(MALFORMED, f"payload is {payload_len} bytes, needs {need}")
    arrays, offset = {}, header_len
    for name, shape in layout:
        count = n_streams * math.prod(shape)
        arr = np.frombuffer(data, "<f4", count, offset).astype(np.float32)
        offset += 4 * count
        if not np.isfinite(arr).all():
            raise CheckpointError(NON_FINITE, f"state {name!r} holds NaN or Inf")
        arrays[name] = arr.reshape(n_streams, *shape)
    streams = {}
    for k, (sid, (nsamp, steps, seq, last_t)) in enumerate(rows):
        streams[sid] = StreamState({name: arrays[name][k].copy() for name, _ in layout},
                                   steps=steps, seq=seq, samples=nsamp, last_t=last_t)
    return StreamsSnapshot(streams, samples_seen=samples, timestamp=ts,
                           model_sha256=sha.hex())


def describe_streams(data: bytes, models=None, states=None, now: float | None = None) -> dict:
    """``stepwise state show``'s entry for a many-stream checkpoint: counters, age, the
    stream ids (the first 20), and with ``models`` (label -> sha256) whether it matches."""
    entry: dict = {"bytes": len(data), "format_version": STREAMS_VERSION}
    try:
        snap = decode_streams(data, None, None)
    except CheckpointError as e:
        return {**entry, "valid": False, "reason": e.reason, "error": str(e)}
    sha = snap.model_sha256
    now = time.time() if now is None else now
    ids = list(snap.streams)
    entry.update(valid=True, model_sha256=sha, samples_seen=snap.samples_seen,
                 timestamp=snap.timestamp, age_seconds=now - snap.timestamp,
                 streams=len(ids), stream_ids=ids[:20])
    if models:
        label = next((k for k, v in models.items() if v.lower() == sha), None)
        detail = f"matches {label}" if label else f"checkpoint is for model {sha[:12]}..."
        if label and states is not None:
            try:
                decode_streams(data, sha, states)
            except CheckpointError as e:
                label, detail = None, str(e)
        entry["match"] = {"matches": label is not None, "model": label, "detail": detail}
    return entry


def _check_layout(layout, states: Sequence[StateSpec]) -> None:
    have, want = [n for n, _ in layout], [s.name for s in states]
    if have != want:
        raise CheckpointError(WRONG_STATES, f"checkpoint has states {have}, the model has {want}")
    for (name, shape), spec in zip(layout, states):
        if tuple(shape) != tuple(spec.shape):
            raise CheckpointError(WRONG_SHAPE, f"state {name!r} is {list(shape)} in the "
                                               f"checkpoint, {list(spec.shape)} in the model")
