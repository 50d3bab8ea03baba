"""Fuzzing the checkpoint reader: random bytes, and valid checkpoints with bytes changed
and the CRC recomputed (so the damage reaches the layout parser, not only the CRC check).
Only ``CheckpointError`` ever comes out; the store restores nothing it cannot trust."""
from __future__ import annotations

import hashlib
import json
import struct
import zlib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.contract import StateSpec
from runtime.snapshot import StateSnapshot
from runtime.store import CURRENT, StateStore, describe_state_dir
from runtime.store_format import CheckpointError, encode_checkpoint, parse_checkpoint

SHA = hashlib.sha256(b"fuzzed model").hexdigest()
SPECS = (StateSpec("h", "h", "h_out", (4,), "lstm", "h"), StateSpec("c", "c", "c_out", (4,), "lstm", "c"))
GOOD = encode_checkpoint(StateSnapshot(
    states={"h": np.ones((2, 4), np.float32), "c": np.zeros((2, 4), np.float32)}, steps=np.array([3, 5]),
    samples_seen=8, last_frame_seq=7, timestamp=1.7e9, extra={"seq": 2}), SHA, SPECS)


def _with_crc(data: bytearray) -> bytes:
    if len(data) >= 88:
        struct.pack_into("<I", data, 84, zlib.crc32(bytes(data[88:]), zlib.crc32(bytes(data[:84]))))
    return bytes(data)


@st.composite
def damaged(draw) -> bytes:
    data = bytearray(GOOD)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    if draw(st.booleans()):
        data += draw(st.binary(max_size=64))
    return _with_crc(data) if draw(st.booleans()) else bytes(data)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=300), damaged()))
def test_fuzz_parse_raises_only_checkpoint_errors(data):
    try:
        ckpt = parse_checkpoint(data)
    except CheckpointError as e:
        assert e.reason and "\n" not in str(e)
        return
    assert all(np.isfinite(t).all() for t in ckpt.tensors.values())
    assert np.isfinite(ckpt.timestamp) and ckpt.lanes >= 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=damaged())
def test_fuzz_restore_and_show_never_raise(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("state")
    (folder / CURRENT).write_bytes(data)
    json.dumps(describe_state_dir(folder, models={"this": SHA}, states=SPECS), allow_nan=False)  # state show
    snap = StateStore(folder, SHA, SPECS, lanes=2).restore()
    if snap is not None:
        assert set(snap.states) == {"h", "c"} and snap.steps.shape == (2,)
