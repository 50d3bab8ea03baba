"""The state checkpoint file format: pure functions, bytes <-> ``StateSnapshot``.

Version 1 layout, all integers little-endian::

    offset size  field
    0      8     magic b"STPWCKPT"
    8      2     format version (u16, 1)
    10     2     flags (u16, 0; reserved)
    12     4     header length in bytes (u32): fixed part + state table + extras + steps
    16     32    model sha256 (raw bytes of the model file's digest)
    48     8     samples seen (u64)
    56     4     last frame sequence number (i32, -1 for none)
    60     4     lanes (u32, >= 1)
    64     8     timestamp (f64, unix time the state was captured)
    72     8     payload length in bytes (u64)
    80     2     number of states (u16)
    82     2     number of extra counters (u16)
    84     4     CRC32 (zlib.crc32 over every byte of the file except these four)
    88     ...   state table, per state: u8 name length, name (UTF-8), u8 ndim, ndim x u32
           ...   extra counters, each: u8 key length, key (UTF-8), i64 value
           ...   per-lane steps since reset: lanes x u64
    header ...   payload: each state as float32 [lanes, *shape], in manifest order

The file describes its own layout, so ``stepwise state show`` can read it without the
manifest; ``decode_checkpoint`` then checks that layout against the model's
``StateSpec`` list. Never pickle. Every problem raises ``CheckpointError`` whose
``reason`` is one of the short keys below (used in the name of a moved-aside file).
"""
from __future__ import annotations

import math
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from runtime.contract import StateSpec
from runtime.errors import ContractError, StateCorruptError
from runtime.snapshot import StateSnapshot

MAGIC = b"STPWCKPT"
FORMAT_VERSION = 1
FIXED = struct.Struct("<8sHHI32sQiIdQHHI")
CRC_OFFSET = 84
assert FIXED.size == 88 and CRC_OFFSET == FIXED.size - 4

# reasons (CheckpointError.reason)
BAD_MAGIC = "bad-magic"
UNSUPPORTED_VERSION = "unsupported-version"
TRUNCATED = "truncated"
OVERSIZED = "oversized"
CRC_MISMATCH = "crc-mismatch"
MALFORMED = "malformed"
NON_FINITE = "non-finite"
OTHER_MODEL = "other-model"
WRONG_STATES = "wrong-states"
WRONG_SHAPE = "wrong-shape"
WRONG_LANES = "wrong-lanes"
BAD_VALUES = "bad-values"  # a valid CRC over a non-finite or absurd timestamp or counter

MAX_TIMESTAMP = 32503680000.0  # 3000-01-01: later is no clock reading
MAX_COUNT = 2**63 - 1


class CheckpointError(StateCorruptError):
    """A checkpoint cannot be used; ``reason`` is one of this module's reason keys."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Checkpoint:
    """A parsed, integrity-checked checkpoint (not yet matched against a model)."""

    version: int
    model_sha256: str
    samples_seen: int
    last_frame_seq: int
    timestamp: float
    steps: np.ndarray  # [lanes] int64
    layout: tuple[tuple[str, tuple[int, ...]], ...]  # (state name, shape) in file order
    tensors: dict[str, np.ndarray]  # name -> float32 [lanes, *shape]
    extra: dict[str, int]
    nbytes: int

    @property
    def lanes(self) -> int:
        return int(self.steps.shape[0])

    def snapshot(self) -> StateSnapshot:
        return StateSnapshot(
            states={k: v.copy() for k, v in self.tensors.items()}, steps=self.steps.copy(),
            samples_seen=self.samples_seen, last_frame_seq=self.last_frame_seq,
            timestamp=self.timestamp, extra=dict(self.extra),
        )


def sha256_bytes(model_sha256: str) -> bytes:
    """The 32 raw bytes of a hex digest; ContractError if it is not one."""
    try:
        raw = bytes.fromhex(model_sha256)
    except (TypeError, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ContractError(f"model sha256 must be 64 hex digits, got {model_sha256!r}")
    return raw


# -- encode ------------------------------------------------------------------------
def encode_checkpoint(snapshot: StateSnapshot, model_sha256: str,
                      states: Sequence[StateSpec]) -> bytes:
    """The checkpoint file for ``snapshot``; StateCorruptError if it does not fit ``states``
    or holds a non-finite value (non-finite values never leave the state)."""
    sha = sha256_bytes(model_sha256)
    steps, arrays = _checked_arrays(snapshot, states)
    lanes = int(steps.shape[0])
    if not -(2**31) <= snapshot.last_frame_seq < 2**31 or not 0 <= snapshot.samples_seen < 2**64:
        raise StateCorruptError(
            f"snapshot counters out of range: samples_seen {snapshot.samples_seen}, "
            f"last_frame_seq {snapshot.last_frame_seq}")
    table = b"".join(_pack_name(s.name) + struct.pack(f"<B{len(s.shape)}I", len(s.shape), *s.shape)
                     for s in states)
    extras = b"".join(_pack_name(k) + struct.pack("<q", int(v))
                      for k, v in sorted(snapshot.extra.items()))
    variable = table + extras + steps.astype("<u8").tobytes()
    payload = b"".join(a.tobytes() for a in arrays)
    header_len = FIXED.size + len(variable)
    fixed = FIXED.pack(MAGIC, FORMAT_VERSION, 0, header_len, sha, int(snapshot.samples_seen),
                       int(snapshot.last_frame_seq), lanes, float(snapshot.timestamp),
                       len(payload), len(states), len(snapshot.extra), 0)
    body = fixed[:CRC_OFFSET]
    crc = zlib.crc32(payload, zlib.crc32(variable, zlib.crc32(body)))
    return body + struct.pack("<I", crc) + variable + payload


def _checked_arrays(snapshot: StateSnapshot, states: Sequence[StateSpec]):
    """``steps`` [lanes] and each state as contiguous '<f4' [lanes, *shape], in manifest order."""
    want = [s.name for s in states]
    have = set(snapshot.states)
    if have != set(want):
        raise StateCorruptError(
            f"snapshot states do not match the model: missing {sorted(set(want) - have)}, "
            f"unexpected {sorted(have - set(want))}")
    steps = np.asarray(snapshot.steps)
    if steps.ndim != 1 or steps.shape[0] < 1 or (steps < 0).any():
        raise StateCorruptError(f"snapshot steps must be [lanes] >= 0, got {steps!r}")
    arrays = []
    for spec in states:
        arr = np.asarray(snapshot.states[spec.name])
        if arr.shape != (steps.shape[0], *spec.shape):
            raise StateCorruptError(
                f"snapshot state {spec.name!r} has shape {list(arr.shape)}, the model "
                f"needs {[steps.shape[0], *spec.shape]} ([lanes, *shape])")
        arr = np.ascontiguousarray(arr, dtype="<f4")
        if not np.isfinite(arr).all():
            raise StateCorruptError(f"refusing to persist non-finite values in state {spec.name!r}")
        arrays.append(arr)
    return steps, arrays


def _pack_name(name: str) -> bytes:
    raw = name.encode("utf-8")
    if len(raw) > 255:
        raise StateCorruptError(f"name longer than 255 bytes: {name[:40]!r}...")
    return bytes([len(raw)]) + raw


# -- parse -------------------------------------------------------------------------
def check_extent(data: bytes, total: int, crc_offset: int, crc: int) -> None:
    """The file is exactly the ``total`` bytes its header declares, and the CRC32 of every
    byte but the four at ``crc_offset`` is ``crc`` (both checkpoint format versions)."""
    n = len(data)
    if n < total:
        raise CheckpointError(TRUNCATED, f"file is {n} bytes, its header declares {total}")
    if n > total:
        raise CheckpointError(OVERSIZED, f"file is {n} bytes, its header declares {total}")
    actual = zlib.crc32(data[crc_offset + 4:], zlib.crc32(data[:crc_offset]))
    if actual != crc:
        raise CheckpointError(CRC_MISMATCH, f"stored CRC32 {crc:#010x}, computed {actual:#010x}")


def parse_checkpoint(data: bytes) -> Checkpoint:
    """Integrity checks (magic, version, lengths, CRC, layout, finiteness) and parse."""
    n = len(data)
    if data[:len(MAGIC)] != MAGIC[:n]:
        raise CheckpointError(BAD_MAGIC, f"file does not start with {MAGIC!r} "
                                         f"(found {bytes(data[:len(MAGIC)])!r})")
    if n < FIXED.size:
        raise CheckpointError(TRUNCATED, f"file is {n} bytes, shorter than the "
                                         f"{FIXED.size}-byte header")
    (_, version, _, header_len, sha, samples, last_seq, lanes, ts, payload_len,
     n_states, n_extra, crc) = FIXED.unpack_from(data)
    if version != FORMAT_VERSION:
        raise CheckpointError(UNSUPPORTED_VERSION, f"format version {version}, this stepwise "
                                                   f"reads version {FORMAT_VERSION}")
    if header_len < FIXED.size:
        raise CheckpointError(MALFORMED, f"header length {header_len} < {FIXED.size}")
    check_extent(data, header_len + payload_len, CRC_OFFSET, crc)
    reader = _Reader(data, FIXED.size, header_len)
    layout = tuple(reader.state_entry() for _ in range(n_states))
    extra = {reader.name(): reader.unpack("<q")[0] for _ in range(n_extra)}
    raw_steps = np.frombuffer(reader.take(8 * lanes), dtype="<u8")
    if reader.pos != header_len or lanes < 1 or raw_steps.max() >= 2**63:
        raise CheckpointError(MALFORMED, f"header layout is inconsistent (lanes {lanes}, "
                                         f"{header_len - reader.pos} bytes left over)")
    _check_values(ts, samples)
    tensors = _tensors(data, header_len, payload_len, layout, lanes)
    return Checkpoint(version=version, model_sha256=sha.hex(), samples_seen=samples,
                      last_frame_seq=last_seq, timestamp=ts, steps=raw_steps.astype(np.int64),
                      layout=layout, tensors=tensors, extra=extra, nbytes=n)


def _check_values(timestamp: float, samples: int) -> None:
    """A timestamp is a clock reading (finite, 1970..3000); the sample count fits an int64."""
    if not (math.isfinite(timestamp) and 0.0 <= timestamp <= MAX_TIMESTAMP):
        raise CheckpointError(BAD_VALUES, f"timestamp {timestamp!r} is no clock reading")
    if samples > MAX_COUNT:
        raise CheckpointError(BAD_VALUES, f"samples seen {samples} is out of range")


def _tensors(data: bytes, offset: int, payload_len: int, layout, lanes: int):
    need = 4 * lanes * sum(math.prod(shape) for _, shape in layout)
    if need != payload_len:
        raise CheckpointError(MALFORMED, f"payload is {payload_len} bytes, the state table "
                                         f"needs {need}")
    tensors = {}
    for name, shape in layout:
        count = lanes * math.prod(shape)
        arr = np.frombuffer(data, dtype="<f4", count=count, offset=offset)
        offset += 4 * count
        if not np.isfinite(arr).all():
            raise CheckpointError(NON_FINITE, f"state {name!r} holds NaN or Inf")
        tensors[name] = arr.astype(np.float32).reshape(lanes, *shape)
    return tensors


class _Reader:
    """Bounded cursor over the variable part of the header."""

    def __init__(self, data: bytes, pos: int, end: int):
        self.data, self.pos, self.end = data, pos, end

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise CheckpointError(MALFORMED, "state table runs past the header length")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def name(self) -> str:
        try:
            return self.take(self.unpack("<B")[0]).decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(MALFORMED, "a name in the header is not UTF-8") from None

    def state_entry(self) -> tuple[str, tuple[int, ...]]:
        name = self.name()
        ndim = self.unpack("<B")[0]
        return name, tuple(self.unpack(f"<{ndim}I"))


# -- match -------------------------------------------------------------------------
def check_matches(ckpt: Checkpoint, model_sha256: str,
                  states: Sequence[StateSpec] | None = None, lanes: int | None = None) -> None:
    """CheckpointError unless ``ckpt`` was written for this model, state layout and lanes."""
    if ckpt.model_sha256 != model_sha256.lower():
        raise CheckpointError(OTHER_MODEL, f"checkpoint is for model {ckpt.model_sha256[:12]}"
                                           f"..., this model is {model_sha256.lower()[:12]}...")
    if states is not None:
        have = [name for name, _ in ckpt.layout]
        want = [s.name for s in states]
        if have != want:
            raise CheckpointError(WRONG_STATES,
                                  f"checkpoint has states {have}, the model has {want}")
        for (name, shape), spec in zip(ckpt.layout, states):
            if tuple(shape) != tuple(spec.shape):
                raise CheckpointError(WRONG_SHAPE, f"state {name!r} is {list(shape)} in the "
                                                   f"checkpoint, {list(spec.shape)} in the model")
    if lanes is not None and ckpt.lanes != lanes:
        raise CheckpointError(WRONG_LANES, f"checkpoint has {ckpt.lanes} lanes, this engine "
                                           f"runs {lanes}")


def decode_checkpoint(data: bytes, model_sha256: str, states: Sequence[StateSpec],
                      lanes: int | None = None) -> StateSnapshot:
    """The snapshot in ``data``; CheckpointError (a StateCorruptError) with the reason."""
    ckpt = parse_checkpoint(data)
    check_matches(ckpt, model_sha256, states, lanes)
    return ckpt.snapshot()


def summarize(ckpt: Checkpoint, now: float | None = None) -> dict[str, Any]:
    """Plain-JSON description: counters, age, model hash, per-tensor L2 norms."""
    now = time.time() if now is None else now
    return {
        "format_version": ckpt.version, "model_sha256": ckpt.model_sha256,
        "samples_seen": ckpt.samples_seen, "last_frame_seq": ckpt.last_frame_seq,
        "lanes": ckpt.lanes, "steps": [int(s) for s in ckpt.steps],
        "timestamp": ckpt.timestamp, "age_seconds": now - ckpt.timestamp,
        "extra": dict(ckpt.extra),
        "tensors": [_tensor_summary(name, shape, ckpt.tensors[name])
                    for name, shape in ckpt.layout],
    }


def _tensor_summary(name: str, shape: tuple[int, ...], arr: np.ndarray) -> dict[str, Any]:
    flat = arr.reshape(arr.shape[0], -1).astype(np.float64)
    return {"name": name, "shape": list(shape), "l2": float(np.linalg.norm(flat)),
            "l2_per_lane": [float(v) for v in np.linalg.norm(flat, axis=1)],
            "max_abs": float(np.abs(flat).max()) if flat.size else 0.0}


def describe_checkpoint(data: bytes | OSError, models: Mapping[str, str] | None = None,
                        states: Sequence[StateSpec] | None = None, lanes: int | None = None,
                        now: float | None = None) -> dict[str, Any]:
    """``summarize`` of a file's bytes (or the error reading it), ``valid`` and the reason
    if not; with ``models`` (label -> sha256) a ``match`` entry from ``match_models``."""
    if isinstance(data, OSError):
        return {"valid": False, "reason": "unreadable", "error": str(data)}
    entry: dict[str, Any] = {"bytes": len(data)}
    try:
        ckpt = parse_checkpoint(data)
    except CheckpointError as e:
        return {**entry, "valid": False, "reason": e.reason, "error": str(e)}
    entry.update(valid=True, **summarize(ckpt, now))
    if models:
        entry["match"] = match_models(ckpt, models, states, lanes)
    return entry


def match_models(ckpt: Checkpoint, models: Mapping[str, str],
                 states: Sequence[StateSpec] | None = None,
                 lanes: int | None = None) -> dict[str, Any]:
    """Whether ``ckpt`` fits one of ``models`` (label -> sha256): matches, model, detail."""
    for label, sha in models.items():
        try:
            check_matches(ckpt, sha, states, lanes)
        except CheckpointError as e:
            if e.reason != OTHER_MODEL:
                return {"matches": False, "model": label, "reason": e.reason, "detail": str(e)}
            continue
        return {"matches": True, "model": label, "reason": None, "detail": f"matches {label}"}
    known = ", ".join(f"{label} ({sha[:12]}...)" for label, sha in models.items())
    return {"matches": False, "model": None, "reason": OTHER_MODEL,
            "detail": f"checkpoint is for model {ckpt.model_sha256[:12]}..., not {known}"}
