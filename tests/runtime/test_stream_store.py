"""Every stream's state in one checkpoint: format, rejection, legacy files, power cuts."""
from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.errors import StateCorruptError
from runtime.snapshot import StateSnapshot
from runtime.store import CURRENT, StateStore
from runtime.store_format import CheckpointError, encode_checkpoint
from runtime.stream_format import StreamsSnapshot, decode_streams, encode_streams
from runtime.stream_state import StreamState
from runtime.stream_store import StreamStore
from tests.runtime import test_store_powerloss as powerloss
from tests.runtime.test_store_powerloss import SHA, SPECS

OTHER = "0" * 64


def streams(seed: int, n: int = 200) -> StreamsSnapshot:
    rng = np.random.default_rng(seed)
    out = {}
    for k in range(n):
        sid = f"sensor-{seed}-{k}" if k % 7 else f"z.{k}:ü"  # UTF-8 ids too
        out[sid] = StreamState({s.name: rng.normal(size=s.shape).astype(np.float32)
                                for s in SPECS}, steps=int(rng.integers(0, 99)), seq=k % 5,
                               samples=int(rng.integers(0, 10**9)),
                               last_t=math.nan if k % 3 == 0 else 1.7e9 + k / 8)
    return StreamsSnapshot(out, samples_seen=1000 * seed, timestamp=1.7e9 + seed)


def same(a, b) -> bool:
    if a is None or set(a.streams) != set(b.streams):
        return False
    for sid, x in b.streams.items():
        y = a.streams[sid]
        if (y.steps, y.seq, y.samples) != (x.steps, x.seq, x.samples) or not (
                y.last_t == x.last_t or (math.isnan(y.last_t) and math.isnan(x.last_t))):
            return False
        if any(not np.array_equal(y.states[k], x.states[k]) for k in x.states):
            return False
    return (a.samples_seen, a.timestamp) == (b.samples_seen, b.timestamp)


def test_roundtrip_bytes_and_empty():
    snap = streams(1)
    data = encode_streams(snap, SHA, SPECS)
    assert same(decode_streams(data, SHA, SPECS), snap)
    assert encode_streams(snap, SHA, SPECS) == data  # deterministic bytes
    empty = StreamsSnapshot({}, timestamp=5.0)
    assert decode_streams(encode_streams(empty, SHA, SPECS), SHA, SPECS).streams == {}


@pytest.mark.parametrize("damage, reason", [
    (lambda d: d[:-1], "truncated"), (lambda d: d + b"\0", "oversized"),
    (lambda d: d[:100] + bytes([d[100] ^ 1]) + d[101:], "crc-mismatch"),
    (lambda d: b"NOTACKPT" + d[8:], "bad-magic"), (lambda d: d[:30], "truncated"),
])
def test_damaged_files_are_rejected_with_a_reason(damage, reason):
    data = encode_streams(streams(2, 5), SHA, SPECS)
    with pytest.raises(CheckpointError) as e:
        decode_streams(damage(data), SHA, SPECS)
    assert e.value.reason == reason
    with pytest.raises(CheckpointError, match="other-model"):
        decode_streams(data, OTHER, SPECS)
    with pytest.raises(CheckpointError, match="wrong-states"):
        decode_streams(data, SHA, SPECS[:3])


def test_non_finite_stream_state_is_never_written():
    snap = streams(3, 4)
    next(iter(snap.streams.values())).states["lstm1_h"][2] = np.nan
    with pytest.raises(StateCorruptError, match="non-finite"):
        encode_streams(snap, SHA, SPECS)


def test_store_restores_every_stream_and_rejects_other_models(tmp_path):
    snap = streams(4)
    assert StreamStore(tmp_path, SHA, SPECS).checkpoint(snap)
    assert same(StreamStore(tmp_path, SHA, SPECS).restore(), snap)
    assert StreamStore(tmp_path, OTHER, SPECS).restore() is None
    assert [p.name.split(".")[2] for p in (tmp_path / "rejected").iterdir()] == ["other-model"]


def test_single_stream_checkpoint_still_loads_as_a_named_stream(tmp_path):
    rng = np.random.default_rng(5)
    one = StateSnapshot({s.name: rng.normal(size=(1, *s.shape)).astype(np.float32) for s in SPECS},
                        steps=np.array([6]), samples_seen=42, timestamp=1.7e9,
                        extra={"seq": 3, "last_sample_ms": 1_700_000_000_500})
    assert StateStore(tmp_path, SHA, SPECS, lanes=1).checkpoint(one)
    got = StreamStore(tmp_path, SHA, SPECS, legacy_stream="port0").restore()
    st = got.streams["port0"]
    assert (st.steps, st.seq, st.samples, st.last_t) == (6, 3, 42, 1_700_000_000.5)
    assert all(np.array_equal(st.states[k], one.states[k][0]) for k in one.states)
    # without a stream to give it to, the single-stream file is moved aside, not lost
    assert StreamStore(tmp_path, SHA, SPECS).restore() is None
    assert any(p.name.startswith(CURRENT) for p in (tmp_path / "rejected").iterdir())
    # and a single-stream daemon still reads its own format
    two = tmp_path / "b"
    StateStore(two, SHA, SPECS, lanes=1).checkpoint(one)
    assert StateStore(two, SHA, SPECS, lanes=1).restore().samples_seen == 42
    assert encode_checkpoint(one, SHA, SPECS)[8:10] == b"\x01\x00"


def test_every_power_cut_leaves_the_old_or_the_new_set_of_streams(tmp_path, monkeypatch):
    """The power-loss harness of the single-stream store, run on many-stream checkpoints."""
    older, old, new, nxt = (streams(seed) for seed in (11, 12, 13, 14))
    for name, value in (("OLDER", older), ("OLD", old), ("NEW", new), ("NEXT", nxt),
                        ("same", same),
                        ("NAMES", {id(older): "OLDER", id(old): "OLD", id(new): "NEW"})):
        monkeypatch.setattr(powerloss, name, value)
    violations, seen = powerloss.crash_and_restore(StreamStore, tmp_path)
    assert violations == []
    assert seen["images"] == seen["restored OLD"] + seen["restored NEW"] > 40, seen
    assert min(seen["restored NEW"], seen["with a temp file"], seen["without state.ckpt"]) > 0


def test_state_show_describes_a_many_stream_checkpoint(tmp_path):
    from runtime.state_report import format_report
    from runtime.store import describe_state_dir

    snap = streams(6, 30)
    StreamStore(tmp_path, SHA, SPECS).checkpoint(snap)
    info = describe_state_dir(tmp_path, models={"variant float32": SHA}, states=SPECS)
    c = info["checkpoint"]
    assert (c["valid"], c["streams"], c["samples_seen"], c["format_version"]) == (True, 30, 6000, 2)
    assert c["stream_ids"] == list(snap.streams)[:20] and c["match"]["matches"]
    other = describe_state_dir(tmp_path, models={"variant float32": OTHER}, states=SPECS)
    assert not other["checkpoint"]["match"]["matches"]
    info["manifest"] = "artifacts/manifest.json"
    text = "\n".join(format_report(info))
    assert "streams:         30: z.0:ü, sensor-6-1, sensor-6-2" in text and ", ..." in text
    assert "yes, variant float32" in text
