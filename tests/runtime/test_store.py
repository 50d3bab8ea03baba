"""The checkpoint format and the StateStore: round trips, rejects, timer, clear, faults.

Real files in tmp_path with real fsync; power cuts are in ``test_store_powerloss.py``.
Disk full and read-only use real conditions (a 64 KiB tmpfs, a read-only remount) when
this machine lets the tests mount, as root with CAP_SYS_ADMIN can on the project's test
machines and CI; the "injected" variant of the ``medium`` fixture (and the fallback where
mounting is not allowed) raises the same OSErrors (ENOSPC, EROFS) through the store's
FileSystem layer, so the store sees the same errno either way.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from runtime.contract import StateSpec
from runtime.errors import ConfigError, ContractError, StateCorruptError
from runtime.snapshot import StateSnapshot
from runtime.atomic import FileSystem
from runtime.store import CURRENT, PREVIOUS, TEMP, StateStore, describe_state_dir
from runtime.store_format import (
    CRC_OFFSET, CheckpointError, decode_checkpoint, encode_checkpoint, parse_checkpoint,
)

SHA = hashlib.sha256(b"model A").hexdigest()
OTHER_SHA = hashlib.sha256(b"model B").hexdigest()


def spec(name: str, n: int, kind: str) -> StateSpec:
    return StateSpec(name=name, input=name, output=name + "_out", shape=(n,),
                     layer=name.rsplit("_", 1)[0], kind=kind)


SPECS = (spec("lstm1_h", 8, "h"), spec("lstm1_c", 8, "c"),
         spec("lstm2_h", 4, "h"), spec("lstm2_c", 4, "c"))


def make_snapshot(seed: int, lanes: int = 1, specs=SPECS) -> StateSnapshot:
    rng = np.random.default_rng(seed)
    return StateSnapshot(
        states={s.name: rng.normal(size=(lanes, *s.shape)).astype(np.float32) for s in specs},
        steps=rng.integers(0, 50, size=lanes), samples_seen=1000 * seed + 7,
        last_frame_seq=seed % 3 - 1, timestamp=1.7e9 + seed, extra={"dropped": seed},
    )


def assert_same(a: StateSnapshot | None, b: StateSnapshot) -> None:
    assert a is not None
    assert set(a.states) == set(b.states)
    for name in b.states:
        np.testing.assert_array_equal(a.states[name], b.states[name])
        assert a.states[name].dtype == np.float32
    np.testing.assert_array_equal(a.steps, b.steps)
    assert (a.samples_seen, a.last_frame_seq, a.timestamp, a.extra) == (
        b.samples_seen, b.last_frame_seq, b.timestamp, b.extra)


def rejected(state_dir) -> dict[str, bytes]:
    folder = state_dir / "rejected"
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else {}


# -- format ------------------------------------------------------------------------
@pytest.mark.parametrize("lanes", [1, 3])
def test_round_trip_is_exact(lanes):
    snap = make_snapshot(5, lanes)
    assert_same(decode_checkpoint(encode_checkpoint(snap, SHA, SPECS), SHA, SPECS, lanes), snap)


def test_bytes_on_disk_follow_the_documented_layout():
    snap = make_snapshot(2, lanes=2)
    snap.states = dict(reversed(list(snap.states.items())))  # dict order must not matter
    data = encode_checkpoint(snap, SHA, SPECS)
    (magic, version, _, header_len, sha, samples, seq, lanes, ts, payload_len, n_states,
     n_extra, crc) = struct.unpack_from("<8sHHI32sQiIdQHHI", data)
    assert (magic, version, sha, samples, seq, lanes, ts) == (
        b"STPWCKPT", 1, bytes.fromhex(SHA), 2007, 1, 2, 1.7e9 + 2)
    assert (n_states, n_extra, len(data)) == (4, 1, header_len + payload_len)
    assert crc == zlib.crc32(data[:84] + data[88:])
    steps = np.frombuffer(data[header_len - 16:header_len], "<u8")
    np.testing.assert_array_equal(steps, snap.steps)
    payload = np.frombuffer(data[header_len:], "<f4")
    expected = np.concatenate([snap.states[s.name].ravel() for s in SPECS])  # manifest order
    np.testing.assert_array_equal(payload, expected)


def test_encode_refuses_a_snapshot_that_does_not_fit():
    snap = make_snapshot(1)
    del snap.states["lstm2_c"]
    with pytest.raises(StateCorruptError, match=r"missing \['lstm2_c'\]"):
        encode_checkpoint(snap, SHA, SPECS)
    snap = make_snapshot(1)
    snap.states["lstm1_h"] = np.zeros((1, 9), np.float32)
    with pytest.raises(StateCorruptError, match=r"'lstm1_h' has shape \[1, 9\].*\[1, 8\]"):
        encode_checkpoint(snap, SHA, SPECS)
    with pytest.raises(ContractError, match="64 hex digits"):
        encode_checkpoint(make_snapshot(1), "abc", SPECS)


def _resealed(data: bytes, offset: int, value: bytes) -> bytes:
    """``data`` with ``value`` at ``offset`` and a CRC that matches again."""
    out = bytearray(data)
    out[offset:offset + len(value)] = value
    out[CRC_OFFSET:CRC_OFFSET + 4] = struct.pack("<I", zlib.crc32(out[:84] + out[88:]))
    return bytes(out)


def test_decode_names_the_reason():
    data = encode_checkpoint(make_snapshot(3), SHA, SPECS)
    cases = [
        (b"PK\x03\x04" + data[4:], "bad-magic", "does not start with"),
        (_resealed(data, 8, struct.pack("<H", 7)), "unsupported-version", "format version 7"),
        (data[:-1], "truncated", f"file is {len(data) - 1} bytes, its header declares {len(data)}"),
        (data[:40], "truncated", "shorter than the 88-byte header"),
        (data + b"\0", "oversized", f"declares {len(data)}"),
        (data[:-1] + bytes([data[-1] ^ 1]), "crc-mismatch", "stored CRC32 0x"),
        (_resealed(data, len(data) - 4, struct.pack("<f", np.nan)), "non-finite", "lstm2_c"),
        (_resealed(data, len(data) - 4, struct.pack("<f", -np.inf)), "non-finite", "NaN or Inf"),
    ]
    for blob, reason, text in cases:
        with pytest.raises(CheckpointError) as info:
            decode_checkpoint(blob, SHA, SPECS)
        assert info.value.reason == reason and text in str(info.value), (reason, str(info.value))


def test_decode_checks_model_names_shapes_and_lanes():
    data = encode_checkpoint(make_snapshot(3, lanes=2), SHA, SPECS)
    with pytest.raises(CheckpointError, match=f"for model {SHA[:12]}..., this model is "
                                              f"{OTHER_SHA[:12]}") as info:
        decode_checkpoint(data, OTHER_SHA, SPECS)
    assert info.value.reason == "other-model"
    renamed = (spec("gru_h", 8, "h"),) + SPECS[1:]
    with pytest.raises(CheckpointError, match=r"states \['lstm1_h'.*the model has \['gru_h'"):
        decode_checkpoint(data, SHA, renamed)
    wider = SPECS[:3] + (spec("lstm2_c", 5, "c"),)
    with pytest.raises(CheckpointError, match=r"'lstm2_c' is \[4\] in the checkpoint, \[5\]"):
        decode_checkpoint(data, SHA, wider)
    with pytest.raises(CheckpointError, match="has 2 lanes, this engine runs 1") as info:
        decode_checkpoint(data, SHA, SPECS, lanes=1)
    assert info.value.reason == "wrong-lanes"


# -- restore -----------------------------------------------------------------------
def test_restore_returns_the_newest_checkpoint(tmp_path):
    store = StateStore(tmp_path / "state", SHA, SPECS)
    assert store.restore() is None
    for seed in (1, 2, 3):
        assert store.checkpoint(make_snapshot(seed, lanes=2))
    assert store.checkpoints == 3 and store.failures == 0
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [CURRENT, PREVIOUS]
    fresh = StateStore(tmp_path / "state", SHA, SPECS, lanes=2)
    assert_same(fresh.restore(), make_snapshot(3, lanes=2))
    assert fresh.restored_from == tmp_path / "state" / CURRENT


def test_unreadable_newest_falls_back_to_previous(tmp_path, caplog):
    store = StateStore(tmp_path, SHA, SPECS)
    store.checkpoint(make_snapshot(1))
    store.checkpoint(make_snapshot(2))
    bad = bytearray((tmp_path / CURRENT).read_bytes())
    bad[100] ^= 0x10
    (tmp_path / CURRENT).write_bytes(bad)
    assert_same(StateStore(tmp_path, SHA, SPECS).restore(), make_snapshot(1))
    [(name, data)] = rejected(tmp_path).items()
    assert name.startswith("state.ckpt.crc-mismatch.") and data == bytes(bad)
    assert "crc-mismatch" in caplog.text and "moved to" in caplog.text


TINY_SPECS = (spec("h", 2, "h"),)
TINY = encode_checkpoint(StateSnapshot(states={"h": np.array([[0.5, -1.0]], np.float32)},
                                       steps=np.array([4])), SHA, TINY_SPECS)


def test_every_bit_flip_is_moved_aside_with_its_reason(tmp_path):
    good, specs = TINY, TINY_SPECS
    reasons = set()
    for i in range(len(good)):
        flipped = bytearray(good)
        flipped[i] ^= 1 << (i % 8)
        folder = tmp_path / f"flip{i}"
        folder.mkdir()
        (folder / CURRENT).write_bytes(flipped)
        assert StateStore(folder, SHA, specs).restore() is None, f"byte {i} flipped was loaded"
        [(name, data)] = rejected(folder).items()
        assert data == bytes(flipped) and not (folder / CURRENT).exists()
        reasons.add(name.split(".")[2])
    assert reasons == {"bad-magic", "unsupported-version", "truncated", "crc-mismatch"}


def test_every_truncation_is_moved_aside(tmp_path):
    good = TINY
    for n in range(len(good)):
        folder = tmp_path / f"cut{n}"
        folder.mkdir()
        (folder / CURRENT).write_bytes(good[:n])
        assert StateStore(folder, SHA, TINY_SPECS).restore() is None
        [(name, data)] = rejected(folder).items()
        assert name.startswith("state.ckpt.truncated.") and data == good[:n]


@pytest.mark.parametrize("sha,specs,lanes,reason", [
    (OTHER_SHA, SPECS, None, "other-model"),
    (SHA, SPECS[:3] + (spec("lstm2_c", 6, "c"),), None, "wrong-shape"),
    (SHA, SPECS[:2], None, "wrong-states"),
    (SHA, SPECS, 4, "wrong-lanes"),
])
def test_checkpoint_of_another_model_or_layout_is_moved_aside(tmp_path, caplog, sha, specs,
                                                              lanes, reason):
    writer = StateStore(tmp_path, SHA, SPECS)
    writer.checkpoint(make_snapshot(1))
    writer.checkpoint(make_snapshot(2))
    files = {n: (tmp_path / n).read_bytes() for n in (CURRENT, PREVIOUS)}
    assert StateStore(tmp_path, sha, specs, lanes=lanes).restore() is None
    moved = rejected(tmp_path)
    assert sorted(moved.values()) == sorted(files.values())
    assert all(f".{reason}." in name for name in moved)
    assert not (tmp_path / CURRENT).exists() and not (tmp_path / PREVIOUS).exists()
    if reason == "other-model":
        assert SHA[:12] in caplog.text and OTHER_SHA[:12] in caplog.text


def test_leftover_temp_file_is_ignored_and_removed(tmp_path):
    store = StateStore(tmp_path, SHA, SPECS)
    store.checkpoint(make_snapshot(1))
    (tmp_path / TEMP).write_bytes(encode_checkpoint(make_snapshot(9), SHA, SPECS))
    assert_same(StateStore(tmp_path, SHA, SPECS).restore(), make_snapshot(1))
    assert not (tmp_path / TEMP).exists()


def test_state_dir_that_is_a_file_is_a_config_error(tmp_path):
    (tmp_path / "state").write_text("x")
    with pytest.raises(ConfigError, match="is not a directory"):
        StateStore(tmp_path / "state", SHA, SPECS).restore()
    with pytest.raises(ConfigError, match="interval"):
        StateStore(tmp_path, SHA, SPECS, interval=0)


# -- non-finite, timer, clear ---------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_state_is_never_persisted(tmp_path, caplog, bad):
    store = StateStore(tmp_path, SHA, SPECS)
    assert store.checkpoint(make_snapshot(1))
    before = (tmp_path / CURRENT).read_bytes()
    snap = make_snapshot(2)
    snap.states["lstm2_h"][0, 3] = bad
    assert store.checkpoint(snap) is False
    assert (store.checkpoints, store.failures) == (1, 1)
    assert "non-finite" in store.last_error and "lstm2_h" in caplog.text
    assert (tmp_path / CURRENT).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [CURRENT]
    with pytest.raises(StateCorruptError, match="non-finite"):
        encode_checkpoint(snap, SHA, SPECS)


def test_timer_builds_a_snapshot_only_when_due(tmp_path):
    now = [100.0]
    built = []

    def snapshot_fn():
        built.append(now[0])
        return make_snapshot(len(built))

    store = StateStore(tmp_path, SHA, SPECS, interval=60.0, clock=lambda: now[0])
    assert not store.due() and store.maybe_checkpoint(snapshot_fn) is False
    now[0] = 159.9
    assert store.maybe_checkpoint(snapshot_fn) is False and built == []
    now[0] = 160.0
    assert store.due() and store.maybe_checkpoint(snapshot_fn) is True
    assert built == [160.0] and store.checkpoints == 1
    assert not store.due(now=219.0) and store.due(now=220.0)
    now[0] = 200.0
    assert store.checkpoint(make_snapshot(7))  # on demand: always writes, restarts the timer
    assert not store.due(now=259.0) and store.due(now=260.0)
    assert_same(StateStore(tmp_path, SHA, SPECS).restore(), make_snapshot(7))


def test_clear_moves_everything_aside(tmp_path):
    store = StateStore(tmp_path / "s", SHA, SPECS, wall_clock=lambda: 1.7e9)
    store.checkpoint(make_snapshot(1))
    store.checkpoint(make_snapshot(2))
    files = {n: (tmp_path / "s" / n).read_bytes() for n in (CURRENT, PREVIOUS)}
    moved = store.clear()
    assert [(src.name, dest.name) for src, dest in moved] == [
        (CURRENT, "state.ckpt.cleared.20231114T221320Z"),
        (PREVIOUS, "state.ckpt.prev.cleared.20231114T221320Z")]
    assert {src.name: dest.read_bytes() for src, dest in moved} == files
    assert StateStore(tmp_path / "s", SHA, SPECS).restore() is None
    info = store.describe()
    assert info["checkpoint"] is None and len(info["cleared"]) == 2
    store.checkpoint(make_snapshot(3))
    assert store.clear()[0][1].name == "state.ckpt.cleared.20231114T221320Z.1"


def test_describe_reports_counters_and_norms(tmp_path):
    store = StateStore(tmp_path, SHA, SPECS, lanes=2)
    snap = make_snapshot(6, lanes=2)
    store.checkpoint(snap)
    info = store.describe()
    c = info["checkpoint"]
    assert (c["samples_seen"], c["steps"], c["lanes"]) == (6007, snap.steps.tolist(), 2)
    assert c["model_sha256"] == SHA and c["match"]["matches"] is True
    norms = {t["name"]: t["l2"] for t in c["tensors"]}
    assert norms["lstm2_c"] == pytest.approx(float(np.linalg.norm(snap.states["lstm2_c"])))
    assert info["store"]["checkpoints"] == 1 and info["store"]["failures"] == 0


# -- write failures ------------------------------------------------------------------
class FaultFS(FileSystem):
    """The real file system, except that calls to ``op`` raise ``OSError(code)`` while
    ``code`` is set."""

    op: str | None = None
    code: int | None = None

    def _check(self, op: str) -> None:
        if op == self.op and self.code is not None:
            raise OSError(self.code, os.strerror(self.code))

    def open(self, path, flags, mode=0o644):
        self._check("open")
        return super().open(path, flags, mode)

    def write(self, fd, data):
        self._check("write")
        return super().write(fd, data)

    def fsync(self, fd):
        self._check("fsync")
        super().fsync(fd)

    def replace(self, src, dst):
        self._check("replace")
        super().replace(src, dst)

    def fsync_dir(self, path):
        self._check("fsync_dir")
        super().fsync_dir(path)


@pytest.mark.parametrize("op", ["open", "write", "fsync", "replace", "fsync_dir"])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EIO])
def test_write_failure_is_counted_and_the_next_checkpoint_retries(tmp_path, caplog, op,
                                                                  code):
    fs = FaultFS()
    store = StateStore(tmp_path, SHA, SPECS, fs=fs)
    assert store.checkpoint(make_snapshot(1))
    fs.op, fs.code = op, code
    assert store.checkpoint(make_snapshot(2)) is False
    assert store.checkpoint(make_snapshot(3)) is False
    assert (store.checkpoints, store.failures) == (1, 2)
    assert os.strerror(code) in store.last_error
    assert caplog.text.count("the engine keeps running") == 1  # the same failure is logged once
    assert not (tmp_path / TEMP).exists()
    restored = StateStore(tmp_path, SHA, SPECS).restore()
    if op == "fsync_dir":  # renamed before the failing directory fsync: the new one is there
        assert_same(restored, make_snapshot(3))
    else:
        assert_same(restored, make_snapshot(1))
    fs.code = None
    assert store.checkpoint(make_snapshot(4)) and store.last_error is None
    assert_same(StateStore(tmp_path, SHA, SPECS).restore(), make_snapshot(4))


def test_checkpoint_that_cannot_be_moved_aside_is_still_not_loaded(tmp_path, caplog):
    store = StateStore(tmp_path, SHA, SPECS)
    store.checkpoint(make_snapshot(1))
    store.checkpoint(make_snapshot(2))
    data = (tmp_path / CURRENT).read_bytes()[:-3]
    (tmp_path / CURRENT).write_bytes(data)
    fs = FaultFS()
    fs.op, fs.code = "replace", errno.EROFS
    assert_same(StateStore(tmp_path, SHA, SPECS, fs=fs).restore(), make_snapshot(1))
    assert "could not be moved aside" in caplog.text and "truncated" in caplog.text
    assert (tmp_path / CURRENT).read_bytes() == data


class Medium:
    """A state directory whose medium can be made full or read-only: a real 64 KiB tmpfs
    when ``real`` and this machine lets us mount one, else faults injected through FaultFS."""

    def __init__(self, tmp_path: Path, real: bool):
        self.root, self.fs, self.real = tmp_path / "mnt", FaultFS(), False
        self.root.mkdir()
        if real:
            self.real = _run("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(self.root))

    def fill(self):
        if not self.real:
            self.fs.op, self.fs.code = "write", errno.ENOSPC
            return
        fd = os.open(self.root / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            with pytest.raises(OSError) as info:
                while True:
                    os.write(fd, b"\xff" * 4096)
            assert info.value.errno == errno.ENOSPC
        finally:
            os.close(fd)

    def read_only(self, on: bool):
        if not self.real:
            self.fs.op, self.fs.code = ("open", errno.EROFS) if on else (None, None)
            return
        assert _run("mount", "-o", "remount," + ("ro" if on else "rw"), str(self.root))

    def free(self):
        if self.real:
            (self.root / "filler").unlink()
        self.fs.code = None

    def close(self):
        if self.real and not _run("umount", str(self.root)):
            _run("umount", "-l", str(self.root))


def _run(*cmd: str) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture(params=["real", "injected"])
def medium(request, tmp_path):
    m = Medium(tmp_path, real=request.param == "real")
    logging.getLogger(__name__).info("medium: %s", "real tmpfs" if m.real else "injected")
    yield m
    m.close()


@pytest.mark.parametrize("condition", ["disk full", "read-only"])
def test_full_or_read_only_medium(medium, caplog, condition):
    state = medium.root / "state"
    store = StateStore(state, SHA, SPECS, fs=medium.fs)
    assert store.checkpoint(make_snapshot(1))
    before = (state / CURRENT).read_bytes()
    medium.fill() if condition == "disk full" else medium.read_only(True)
    assert store.checkpoint(make_snapshot(2)) is False
    text = os.strerror(errno.ENOSPC if condition == "disk full" else errno.EROFS)
    assert text in store.last_error and text in caplog.text and store.failures == 1
    assert (state / CURRENT).read_bytes() == before and not (state / TEMP).exists()
    assert_same(StateStore(state, SHA, SPECS).restore(), make_snapshot(1))
    medium.free() if condition == "disk full" else medium.read_only(False)
    assert store.checkpoint(make_snapshot(3)) and store.checkpoints == 2
    assert_same(StateStore(state, SHA, SPECS).restore(), make_snapshot(3))


def test_failures_log_once_per_change_and_the_recovery_counts_them(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="runtime.store")
    fs = FaultFS()
    store = StateStore(tmp_path, SHA, SPECS, fs=fs)
    fs.op, fs.code = "write", errno.ENOSPC
    for i in range(10):
        assert not store.checkpoint(make_snapshot(i + 1))
    fs.code = errno.EIO  # another failure: logged
    assert not store.checkpoint(make_snapshot(11))
    fs.op = None
    assert store.checkpoint(make_snapshot(12))
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and "No space left" in errors[0] and "Input/output error" in errors[1]
    assert "again after 11 failed attempt(s)" in caplog.text
    assert store.failures == 11


@pytest.mark.parametrize("name", [CURRENT, PREVIOUS, TEMP])
@pytest.mark.parametrize("odd", ["fifo", "folder", "folder with a file", "link out"])
def test_anything_but_a_file_under_a_checkpoint_name_is_moved_aside(tmp_path, caplog, name, odd):
    store = StateStore(tmp_path, SHA, SPECS)
    assert store.checkpoint(make_snapshot(1)) and store.checkpoint(make_snapshot(2))
    path = tmp_path / name
    if path.exists():
        path.unlink()
    if odd == "fifo":
        os.mkfifo(path)  # reading it would block start-up
    elif odd == "link out":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()
        if odd == "folder with a file":
            (path / "x").write_bytes(b"x")
    restored = StateStore(tmp_path, SHA, SPECS).restore()
    assert restored is not None and restored.samples_seen in (1007, 2007)
    assert "not a checkpoint file: moved to" in caplog.text
    assert [p.name.split(".not-a-file.")[0] for p in (tmp_path / "rejected").iterdir()] == [name]
    again = StateStore(tmp_path, SHA, SPECS)
    assert again.checkpoint(make_snapshot(3)) and again.checkpoint(make_snapshot(4))
    assert StateStore(tmp_path, SHA, SPECS).restore().samples_seen == 4007


def test_a_folder_appearing_under_a_checkpoint_name_while_serving_is_moved_aside(tmp_path):
    store = StateStore(tmp_path, SHA, SPECS)
    assert store.checkpoint(make_snapshot(1)) and store.checkpoint(make_snapshot(2))
    (tmp_path / PREVIOUS).unlink()
    (tmp_path / PREVIOUS).mkdir()
    (tmp_path / PREVIOUS / "x").write_bytes(b"x")  # a rename onto it would fail every time
    assert store.checkpoint(make_snapshot(3)) and store.failures == 0
    assert StateStore(tmp_path, SHA, SPECS).restore().samples_seen == 3007


def test_state_show_of_a_fifo_does_not_block(tmp_path):
    os.mkfifo(tmp_path / CURRENT)
    info = describe_state_dir(tmp_path)
    assert info["files"][0]["valid"] is False and "not a regular file" in info["files"][0]["error"]


@pytest.mark.parametrize("timestamp", [float("nan"), float("inf"), -1.0, 1e300])
def test_a_valid_crc_over_an_absurd_timestamp_is_rejected(tmp_path, timestamp):
    store = StateStore(tmp_path, SHA, SPECS)
    snap = make_snapshot(1)
    data = bytearray(encode_checkpoint(snap, SHA, SPECS))
    struct.pack_into("<d", data, 64, timestamp)
    struct.pack_into("<I", data, 84, zlib.crc32(bytes(data[88:]), zlib.crc32(bytes(data[:84]))))
    (tmp_path / CURRENT).write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as e:
        parse_checkpoint(bytes(data))
    assert e.value.reason == "bad-values"
    assert store.restore() is None
    assert [p.name.split(".")[2] for p in (tmp_path / "rejected").iterdir()] == ["bad-values"]
    info = describe_state_dir(tmp_path)  # what `state show --json` prints: strict JSON, no NaN
    json.loads(json.dumps(info, allow_nan=False))
