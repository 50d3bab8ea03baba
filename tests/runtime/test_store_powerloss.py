"""Power cuts and failing media during a checkpoint.

Power loss, in the spirit of littlefs's power-loss runner: one checkpoint (OLD -> NEW)
runs on real files with real fsync through a recording FileSystem, and the power is cut
before every mutating call (open, write, fsync, close, rename, directory fsync), in the
middle of every write (torn: only a prefix stored) and after the checkpoint returned. A
page-cache model then enumerates every state the disk can be left in: file data survives
only where an fsync covered it (otherwise lost, kept, torn or zero-filled), directory
entries only where a directory fsync covered them (otherwise any subset of the renames
survives, e.g. "rename done but data not synced"). Each state is written to a fresh real
directory and restored by a fresh StateStore, which must return exactly OLD or NEW (NEW
once ``checkpoint`` returned), leave no temp file, and checkpoint again. Deliberately
broken stores (writing in place, no fsync, no directory fsync) must fail that property:
proof the harness can see the faults it is looking for.
"""
from __future__ import annotations

import hashlib
import itertools
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from runtime.contract import StateSpec
from runtime.snapshot import StateSnapshot
from runtime.atomic import FileSystem, ensure_dir, write_all
from runtime.store import CURRENT, PREVIOUS, TEMP, StateStore

SHA = hashlib.sha256(b"model A").hexdigest()
SPECS = tuple(StateSpec(name=n, input=n, output=n + "_out", shape=(size,), layer=n[:5], kind=n[-1])
              for n, size in (("lstm1_h", 8), ("lstm1_c", 8), ("lstm2_h", 4), ("lstm2_c", 4)))


def make_snapshot(seed: int, lanes: int = 2) -> StateSnapshot:
    rng = np.random.default_rng(seed)
    return StateSnapshot(
        states={s.name: rng.normal(size=(lanes, *s.shape)).astype(np.float32) for s in SPECS},
        steps=rng.integers(0, 50, size=lanes), samples_seen=1000 * seed,
        last_frame_seq=seed, timestamp=1.7e9 + seed, extra={"dropped": seed},
    )


def same(a: StateSnapshot | None, b: StateSnapshot) -> bool:
    return a is not None and set(a.states) == set(b.states) and all(
        np.array_equal(a.states[k], b.states[k]) for k in b.states) and np.array_equal(
        a.steps, b.steps) and (a.samples_seen, a.last_frame_seq, a.timestamp, a.extra) == (
        b.samples_seen, b.last_frame_seq, b.timestamp, b.extra)


OLDER, OLD, NEW, NEXT = (make_snapshot(seed) for seed in (1, 2, 3, 4))
NAMES = {id(OLDER): "OLDER", id(OLD): "OLD", id(NEW): "NEW"}


# -- the recording file system and the page-cache model -------------------------------
class PowerCut(BaseException):
    """The power goes off. Not an OSError: the store cannot catch it and carry on."""


class RecordingFS(FileSystem):
    """The real file system; records every mutating call. Call number ``cut_at`` cuts the
    power: before it runs, or for a write with ``torn`` set, after storing ``torn`` bytes."""

    def __init__(self, cut_at: int | None = None, torn: int | None = None):
        self.cut_at, self.torn = cut_at, torn
        self.calls: list[tuple[str, int]] = []  # (kind, bytes written) of every call
        self.ops: list[tuple] = []  # what took effect, in order, for PageCache

    def _enter(self, kind: str, size: int = 0) -> bool:
        k = len(self.calls)
        self.calls.append((kind, size))
        if k != self.cut_at:
            return False
        if kind == "write" and self.torn is not None:
            return True
        raise PowerCut(f"before call {k} ({kind})")

    def open(self, path, flags, mode=0o644):
        self._enter("open")
        fd = super().open(path, flags, mode)
        self.ops.append(("open", Path(path), flags, fd))
        return fd

    def write(self, fd, data):
        data = bytes(data)
        if self._enter("write", len(data)):
            super().write(fd, data[:self.torn])
            self.ops.append(("write", fd, data[:self.torn]))
            raise PowerCut(f"torn write: {self.torn} of {len(data)} bytes")
        n = super().write(fd, data)
        self.ops.append(("write", fd, data[:n]))
        return n

    def _simple(self, kind, method, *args):
        self._enter(kind)
        method(*args)
        self.ops.append((kind, *args))

    def fsync(self, fd):
        self._simple("fsync", super().fsync, fd)

    def close(self, fd):
        self._simple("close", super().close, fd)

    def replace(self, src, dst):
        self._simple("replace", super().replace, Path(src), Path(dst))

    def fsync_dir(self, path):
        self._simple("fsync_dir", super().fsync_dir, Path(path))

    def unlink(self, path):
        self._simple("unlink", super().unlink, Path(path))

    def mkdir(self, path):
        self._simple("mkdir", super().mkdir, Path(path))


@dataclass
class Inode:
    durable: bytes  # what an fsync made stable
    volatile: bytes  # what the page cache holds


class PageCache:
    """One directory as a power cut can leave it, replaying RecordingFS.ops."""

    def __init__(self, folder: Path, files: dict[str, bytes]):
        self.folder = folder
        self.inodes = [Inode(data, data) for data in files.values()]
        self.durable_names = {name: i for i, name in enumerate(files)}
        self.names = dict(self.durable_names)
        self.pending: list[tuple] = []  # directory operations since the last directory fsync
        self.fds: dict[int, list[int]] = {}  # fd -> [inode, position]

    def apply(self, op: tuple) -> None:
        kind, *args = op
        if kind in ("open", "replace", "unlink"):
            assert all(p.parent == self.folder for p in args if isinstance(p, Path)), op
        if kind == "open":
            path, flags, fd = args
            if path.name not in self.names:
                self.inodes.append(Inode(b"", b""))
                self._dir_op(("link", path.name, len(self.inodes) - 1))
            if flags & os.O_TRUNC:
                self.inodes[self.names[path.name]].volatile = b""
            self.fds[fd] = [self.names[path.name], 0]
        elif kind == "write":
            fd, data = args
            ino, pos = self.fds[fd]
            node = self.inodes[ino]
            node.volatile = node.volatile[:pos] + data + node.volatile[pos + len(data):]
            self.fds[fd][1] += len(data)
        elif kind == "fsync":
            node = self.inodes[self.fds[args[0]][0]]
            node.durable = node.volatile
        elif kind == "close":
            del self.fds[args[0]]
        elif kind == "replace":
            self._dir_op(("rename", args[0].name, args[1].name, self.names[args[0].name]))
        elif kind == "unlink":
            self._dir_op(("unlink", args[0].name))
        elif kind == "fsync_dir" and args[0] == self.folder:
            self.durable_names, self.pending = dict(self.names), []
        else:
            raise AssertionError(f"the model does not handle {op}")

    def _dir_op(self, op: tuple) -> None:
        _rename(self.names, op)
        self.pending.append(op)

    def visible(self) -> dict[str, bytes]:
        """What a reader sees before the cut (must equal the real directory)."""
        return {name: self.inodes[ino].volatile for name, ino in self.names.items()}

    def outcomes(self) -> list[dict[str, bytes]]:
        """Every distinct directory image a power cut can leave."""
        images = {}
        for r in range(len(self.pending) + 1):
            for subset in itertools.combinations(self.pending, r):
                names = dict(self.durable_names)
                for op in subset:
                    _rename(names, op)
                dirty = sorted({i for i in names.values()
                                if self.inodes[i].durable != self.inodes[i].volatile})
                for contents in itertools.product(*(_data_outcomes(self.inodes[i])
                                                    for i in dirty)):
                    data = {i: self.inodes[i].durable for i in names.values()}
                    data.update(zip(dirty, contents))
                    image = {name: data[i] for name, i in names.items()}
                    images[tuple(sorted(image.items()))] = image
        return list(images.values())


def _rename(names: dict[str, int], op: tuple) -> None:
    if op[0] == "link":
        names[op[1]] = op[2]
    elif op[0] == "rename":
        names.pop(op[1], None)
        names[op[2]] = op[3]
    else:
        names.pop(op[1], None)


def _data_outcomes(node: Inode) -> set[bytes]:
    """Unsynced data: lost, kept, zero-filled, or torn (a prefix, alone or over the old)."""
    d, v = node.durable, node.volatile
    out = {d, v, bytes(len(v))}
    for k in {1, len(v) // 4, len(v) // 2, 3 * len(v) // 4, len(v) - 1} & set(range(1, len(v))):
        out |= {v[:k], v[:k] + d[k:]}
    return out


# -- the harness ---------------------------------------------------------------------
def files_in(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def cut_points(store_cls, root: Path) -> list[tuple[int, int | None, str]]:
    """(call number, torn bytes or None, label) for every point of one checkpoint."""
    probe = RecordingFS()
    folder = root / "probe"
    assert store_cls(folder, SHA, SPECS).checkpoint(OLD)
    assert store_cls(folder, SHA, SPECS, fs=probe).checkpoint(NEW)
    points = [(k, None, f"cut before call {k} ({kind})") for k, (kind, _) in enumerate(probe.calls)]
    points.append((len(probe.calls), None, "cut after checkpoint returned"))
    for k, (kind, size) in enumerate(probe.calls):
        if kind == "write":
            points += [(k, t, f"torn write {k}: {t} of {size} bytes")
                       for t in sorted({1, size // 2, size - 1})]
    return points


def crash_and_restore(store_cls, root: Path) -> tuple[list[str], Counter]:
    """Violations of "restore gives exactly OLD or NEW" over every cut and disk image."""
    violations, seen = [], Counter()
    for n, (cut_at, torn, label) in enumerate(cut_points(store_cls, root)):
        folder = root / f"cut{n}"
        for snap in (OLDER, OLD):
            assert store_cls(folder, SHA, SPECS).checkpoint(snap)
        model = PageCache(folder, files_in(folder))
        recorder = RecordingFS(cut_at, torn)
        try:
            assert store_cls(folder, SHA, SPECS, fs=recorder).checkpoint(NEW)
            complete = True
        except PowerCut:
            complete = False
        for op in recorder.ops:
            model.apply(op)
        assert model.visible() == files_in(folder), f"{label}: model and disk differ"
        for j, image in enumerate(model.outcomes()):
            seen["images"] += 1
            seen["with a temp file"] += TEMP in image
            seen["without state.ckpt"] += CURRENT not in image
            problem = check_image(store_cls, root / f"cut{n}-image{j}", image, complete)
            seen[problem or "ok"] += 1
            if problem not in (None, "restored OLD", "restored NEW"):
                violations.append(f"{label}, files {sorted(image)}: {problem}")
            elif complete and problem != "restored NEW":
                violations.append(f"{label}, files {sorted(image)}: {problem}, not NEW")
    return violations, seen


def check_image(store_cls, folder: Path, image: dict[str, bytes], complete: bool) -> str:
    """Restore a directory holding ``image``; what came back, or what went wrong."""
    folder.mkdir()
    for name, data in image.items():
        (folder / name).write_bytes(data)
    restored = store_cls(folder, SHA, SPECS).restore()
    if any(name.endswith(".tmp") for name in os.listdir(folder)):
        return "a temp file was left behind"
    store = store_cls(folder, SHA, SPECS)
    if not store.checkpoint(NEXT) or not same(store_cls(folder, SHA, SPECS).restore(), NEXT):
        return "the next checkpoint did not take"
    for snap in (OLD, NEW, OLDER):
        if same(restored, snap):
            return f"restored {NAMES[id(snap)]}"
    return "restored nothing" if restored is None else "restored something else"


def test_every_power_cut_leaves_the_old_or_the_new_checkpoint(tmp_path):
    probe = RecordingFS()
    StateStore(tmp_path / "p", SHA, SPECS).checkpoint(OLD)
    StateStore(tmp_path / "p", SHA, SPECS, fs=probe).checkpoint(NEW)
    assert [kind for kind, _ in probe.calls] == [
        "open", "write", "fsync", "close", "replace", "replace", "fsync_dir"]
    violations, seen = crash_and_restore(StateStore, tmp_path)
    assert violations == []
    # not vacuous: both outcomes happen, from images with temp files and between renames
    assert seen["images"] == seen["restored OLD"] + seen["restored NEW"] > 40, seen
    assert min(seen["restored NEW"], seen["with a temp file"], seen["without state.ckpt"]) > 0


class WriteInPlace(StateStore):
    """Broken on purpose: overwrites state.ckpt directly."""

    def _commit(self, data: bytes) -> None:
        ensure_dir(self.fs, self.state_dir)
        fd = self.fs.open(self.state_dir / CURRENT, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            write_all(self.fs, fd, data)
            self.fs.fsync(fd)
        finally:
            self.fs.close(fd)
        self.fs.fsync_dir(self.state_dir)


class RenameUnsynced(StateStore):
    """Broken on purpose: renames the temp file without fsyncing its data first."""

    def _commit(self, data: bytes, sync_dir: bool = True, sync_file: bool = False) -> None:
        ensure_dir(self.fs, self.state_dir)
        tmp = self.state_dir / TEMP
        fd = self.fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            write_all(self.fs, fd, data)
            if sync_file:
                self.fs.fsync(fd)
        finally:
            self.fs.close(fd)
        if self.fs.exists(self.state_dir / CURRENT):
            self.fs.replace(self.state_dir / CURRENT, self.state_dir / PREVIOUS)
        self.fs.replace(tmp, self.state_dir / CURRENT)
        if sync_dir:
            self.fs.fsync_dir(self.state_dir)


class NoDirectoryFsync(RenameUnsynced):
    """Broken on purpose: fsyncs the data but never the directory."""

    def _commit(self, data: bytes) -> None:
        super()._commit(data, sync_dir=False, sync_file=True)


@pytest.mark.parametrize("store_cls,expected", [
    (WriteInPlace, "restored nothing"),
    (RenameUnsynced, "cut after checkpoint returned, files ['state.ckpt', 'state.ckpt.prev']: "
                     "restored OLD, not NEW"),
    (NoDirectoryFsync, "cut after checkpoint returned, files ['state.ckpt', 'state.ckpt.prev']: "
                       "restored OLD, not NEW"),
])
def test_the_harness_catches_non_atomic_stores(tmp_path, store_cls, expected):
    violations, _ = crash_and_restore(store_cls, tmp_path)
    assert any(expected in v for v in violations), violations
