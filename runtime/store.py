"""The crash-safe state store: checkpoints of the engine's state in ``--state-dir``.

Files in the state directory::

    state.ckpt        the newest checkpoint (format: ``runtime.store_format``)
    state.ckpt.prev   the one before it (restored if the newest is unreadable)
    state.ckpt.tmp    a checkpoint being written; a leftover one is removed on restore
    rejected/         checkpoints that failed a check, as <name>.<reason>.<UTC time>, and
                      anything but a regular file found under a checkpoint's name (a
                      FIFO, a folder, a link, a device), as <name>.not-a-file.<UTC time>
    cleared/          checkpoints moved away by ``stepwise state clear``

Crash safety: temp file + fsync + rename + directory fsync. A checkpoint is written
completely to ``state.ckpt.tmp`` and fsynced before any name points at it; then
``state.ckpt`` is renamed to ``state.ckpt.prev``, the temp file is renamed to
``state.ckpt`` and the directory is fsynced. Renames are atomic, so after a power cut at
any point ``state.ckpt`` is either the complete new file or the previous one (or, between
the two renames, absent while ``state.ckpt.prev`` holds the previous one); the CRC
catches anything else. Nothing is ever deleted except leftover temp files: rejected and
cleared checkpoints are moved aside.

Write failures (ENOSPC, EROFS, EACCES, EIO, ...) are counted and ``checkpoint`` returns
False: the engine keeps serving and the next checkpoint retries. A failure is logged
when it differs from the previous one (not once per attempt), and the first success
after failures says how many there were.
All file operations go through ``runtime.atomic.FileSystem`` so tests can inject faults
and power cuts; the write itself is ``runtime.atomic.atomic_write_bytes``.
One writer per state directory; not thread-safe.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import stat
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from runtime.atomic import TEMP_SUFFIX, FileSystem, atomic_write_bytes, ensure_dir
from runtime.contract import StateSpec
from runtime.errors import ConfigError, StateCorruptError
from runtime.snapshot import StateSnapshot
from runtime.stream_format import STREAMS_VERSION, describe_streams, file_version
from runtime.store_format import (
    CheckpointError, check_matches, describe_checkpoint, encode_checkpoint, parse_checkpoint,
    sha256_bytes,
)

log = logging.getLogger(__name__)

CURRENT = "state.ckpt"
PREVIOUS = "state.ckpt.prev"
TEMP = CURRENT + TEMP_SUFFIX
REJECTED_DIR = "rejected"
CLEARED_DIR = "cleared"


class StateStore:
    """Persists ``StateSnapshot``s of one model (``model_sha256``, ``states`` in manifest
    order) in ``state_dir``; ``interval`` seconds between timed checkpoints on ``clock``.
    ``lanes``, if given, is the lane count a restored checkpoint must have."""

    def __init__(self, state_dir: str | os.PathLike, model_sha256: str,
                 states: Sequence[StateSpec], interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, fs: FileSystem | None = None,
                 *, lanes: int | None = None, wall_clock: Callable[[], float] = time.time):
        if not interval > 0:
            raise ConfigError(f"checkpoint interval must be > 0 seconds, got {interval}")
        sha256_bytes(model_sha256)
        self.state_dir = Path(state_dir)
        self.model_sha256 = model_sha256.lower()
        self.states = tuple(states)
        self.interval = float(interval)
        self.lanes = lanes
        self.fs = fs or FileSystem()
        self._clock = clock
        self._wall = wall_clock
        self._last_attempt = clock()
        self.checkpoints = 0
        self.failures = 0
        self.last_error: str | None = None
        self._failing = 0  # failed attempts since the last checkpoint written
        self.restored_from: Path | None = None

    # -- restore -------------------------------------------------------------------
    def restore(self) -> StateSnapshot | None:
        """The newest valid checkpoint for this model, or None (fresh state).

        Unusable checkpoints are logged and moved to ``rejected/``, never loaded."""
        if not self.fs.exists(self.state_dir):
            log.info("no state directory %s: starting from fresh state", self.state_dir)
            return None
        self._remove_temp_files()
        self._set_aside_odd_files()
        for name in (CURRENT, PREVIOUS):
            snapshot = self._load(name)
            if snapshot is not None:
                self.restored_from = self.state_dir / name
                log.info("restored state from %s: %s", self.restored_from, self._summary(snapshot))
                return snapshot
        log.info("no valid checkpoint for this model in %s: starting from fresh state",
                 self.state_dir)
        return None

    def _load(self, name: str) -> StateSnapshot | None:
        path = self.state_dir / name
        try:
            data = self.fs.read_bytes(path)
        except FileNotFoundError:
            return None
        except OSError as e:
            log.error("cannot read checkpoint %s: %s; not using it", path, e)
            return None
        try:
            return self._decode(data)
        except CheckpointError as e:
            self._reject(name, e)
            return None

    # the file format: one engine's lanes (version 1); runtime.stream_store overrides these
    def _decode(self, data: bytes) -> StateSnapshot:
        ckpt = parse_checkpoint(data)
        check_matches(ckpt, self.model_sha256, self.states, self.lanes)
        return ckpt.snapshot()

    def _encode(self, snapshot) -> bytes:
        return encode_checkpoint(snapshot, self.model_sha256, self.states)

    def _summary(self, snapshot) -> str:
        return f"{snapshot.samples_seen} samples seen, steps {snapshot.steps.tolist()}"

    def _reject(self, name: str, error: CheckpointError) -> None:
        path = self.state_dir / name
        try:
            dest = move_aside(self.fs, self.state_dir, name, error.reason, REJECTED_DIR,
                              self._wall())
        except OSError as e:
            log.error("checkpoint %s rejected (%s) and could not be moved aside (%s); "
                      "not using it", path, error, e)
            return
        log.warning("checkpoint %s rejected (%s): moved to %s", path, error, dest)

    def _set_aside_odd_files(self) -> None:
        """Move aside anything but a regular file under a checkpoint's names: a FIFO
        would block the read, a folder would fail every rename, a link may lead anywhere."""
        for name in (CURRENT, PREVIOUS, TEMP):
            path = self.state_dir / name
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                continue
            except OSError as e:
                log.error("cannot look at %s: %s", path, e)
                continue
            if stat.S_ISREG(mode):
                continue
            what = _kind_of(mode)
            try:
                dest = move_aside(self.fs, self.state_dir, name, "not-a-file", REJECTED_DIR, self._wall())
            except OSError as e:
                log.error("%s is a %s, not a checkpoint file, and could not be moved aside: %s", path, what, e)
                continue
            log.warning("%s is a %s, not a checkpoint file: moved to %s", path, what, dest)

    def _remove_temp_files(self) -> None:
        try:
            names = self.fs.listdir(self.state_dir)
        except NotADirectoryError:
            raise ConfigError(f"state directory {self.state_dir} is not a directory") from None
        for name in names:
            if name.endswith(TEMP_SUFFIX) and _is_regular(self.state_dir / name):
                try:
                    self.fs.unlink(self.state_dir / name)
                    log.info("removed %s left over by an interrupted checkpoint",
                             self.state_dir / name)
                except OSError as e:
                    log.warning("cannot remove leftover %s: %s (ignored)", name, e)

    # -- checkpoint ----------------------------------------------------------------
    def due(self, now: float | None = None) -> bool:
        """True when ``interval`` has passed since the last checkpoint attempt."""
        now = self._clock() if now is None else now
        return now - self._last_attempt >= self.interval

    def maybe_checkpoint(self, snapshot_fn: Callable[[], StateSnapshot]) -> bool:
        """Checkpoint ``snapshot_fn()`` if due (it is not called otherwise); True if written."""
        if not self.due():
            return False
        return self.checkpoint(snapshot_fn())

    def checkpoint(self, snapshot: StateSnapshot) -> bool:
        """Write ``snapshot`` now. False (logged, counted, never raised) if it fails.

        A snapshot without a timestamp is stamped with the current wall-clock time."""
        self._last_attempt = self._clock()
        if not snapshot.timestamp:
            snapshot = dataclasses.replace(snapshot, timestamp=self._wall())
        try:
            data = self._encode(snapshot)
        except StateCorruptError as e:
            return self._failed(f"snapshot not persisted: {e}")
        try:
            self._commit(data)
        except OSError as e:
            self._discard_temp()
            return self._failed(f"checkpoint to {self.state_dir / CURRENT} failed: {e}")
        self.checkpoints += 1
        if self.last_error is not None:
            log.info("checkpoint written to %s again after %d failed attempt(s)",
                     self.state_dir / CURRENT, self._failing)
        self.last_error, self._failing = None, 0
        log.debug("checkpoint %d written to %s (%d bytes)", self.checkpoints,
                  self.state_dir / CURRENT, len(data))
        return True

    def _commit(self, data: bytes) -> None:
        """Temp file, write, fsync, rotate, rename, directory fsync."""
        ensure_dir(self.fs, self.state_dir)
        self._set_aside_odd_files()
        atomic_write_bytes(self.state_dir / CURRENT, data, fs=self.fs, previous=self.state_dir / PREVIOUS)

    def _discard_temp(self) -> None:
        try:
            self.fs.unlink(self.state_dir / TEMP)
        except OSError:
            pass

    def _failed(self, message: str) -> bool:
        """Count a failed checkpoint; log it only when it is not the same as the last one."""
        self.failures += 1
        self._failing += 1
        if message != self.last_error:
            log.error("%s (failure %d; the engine keeps running and retries every %.0f s; "
                      "the same failure again is not logged)", message, self.failures, self.interval)
        self.last_error = message
        return False

    # -- inspect and clear ---------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """``describe_state_dir`` for this model, plus this store's counters."""
        info = describe_state_dir(self.state_dir, models={"this model": self.model_sha256},
                                  states=self.states, lanes=self.lanes, fs=self.fs,
                                  now=self._wall())
        info["store"] = {
            "checkpoints": self.checkpoints, "failures": self.failures,
            "last_error": self.last_error, "interval": self.interval,
            "restored_from": str(self.restored_from) if self.restored_from else None,
        }
        return info

    def clear(self) -> list[tuple[Path, Path]]:
        """Move the checkpoints to ``cleared/`` (never deleted); (from, to) pairs."""
        self.restored_from = None
        return clear_state_dir(self.state_dir, fs=self.fs, wall=self._wall())


# -- helpers shared with `stepwise state` ---------------------------------------------
def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _kind_of(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISLNK, "link"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "device"), (stat.S_ISBLK, "device")):
        if test(mode):
            return kind
    return "special file"


def move_aside(fs: FileSystem, state_dir: Path, name: str, reason: str, subdir: str,
               wall: float) -> Path:
    """Rename ``state_dir/name`` to ``state_dir/subdir/<name>.<reason>.<UTC time>``."""
    dest_dir = state_dir / subdir
    ensure_dir(fs, dest_dir)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(wall))
    dest = dest_dir / f"{name}.{reason}.{stamp}"
    n = 1
    while fs.exists(dest):
        dest = dest_dir / f"{name}.{reason}.{stamp}.{n}"
        n += 1
    fs.replace(state_dir / name, dest)
    fs.fsync_dir(dest_dir)
    fs.fsync_dir(state_dir)
    return dest


def clear_state_dir(state_dir: str | os.PathLike, fs: FileSystem | None = None,
                    wall: float | None = None) -> list[tuple[Path, Path]]:
    """Move every checkpoint and temp file of ``state_dir`` to ``cleared/``."""
    fs, state_dir = fs or FileSystem(), Path(state_dir)
    if not fs.exists(state_dir):
        return []
    wall = time.time() if wall is None else wall
    moved = []
    for name in fs.listdir(state_dir):
        if name in (CURRENT, PREVIOUS) or name.endswith(TEMP_SUFFIX):
            dest = move_aside(fs, state_dir, name, "cleared", CLEARED_DIR, wall)
            log.info("moved %s to %s", state_dir / name, dest)
            moved.append((state_dir / name, dest))
    return moved


def describe_state_dir(state_dir: str | os.PathLike, *, models: Mapping[str, str] | None = None,
                       states: Sequence[StateSpec] | None = None, lanes: int | None = None,
                       fs: FileSystem | None = None, now: float | None = None) -> dict[str, Any]:
    """What is in ``state_dir``, read-only. ``checkpoint`` is the newest readable one;
    with ``models`` (label -> sha256), each file says whether it matches one of them."""
    fs, state_dir = fs or FileSystem(), Path(state_dir)
    info: dict[str, Any] = {"state_dir": str(state_dir), "exists": fs.exists(state_dir),
                            "checkpoint": None, "files": [], "temp_files": [],
                            "rejected": [], "cleared": []}
    if not info["exists"]:
        return info
    names = fs.listdir(state_dir)
    info["temp_files"] = [n for n in names if n.endswith(TEMP_SUFFIX)]
    for sub in (REJECTED_DIR, CLEARED_DIR):
        if sub in names:
            info[sub] = fs.listdir(state_dir / sub)
    for name in (CURRENT, PREVIOUS):
        if name in names:
            try:
                if not _is_regular(state_dir / name):  # a FIFO would block the read
                    raise OSError(f"{state_dir / name} is not a regular file")
                data = fs.read_bytes(state_dir / name)
            except OSError as e:
                data = e
            if not isinstance(data, OSError) and file_version(data) == STREAMS_VERSION:
                described = describe_streams(data, models, states, now)
            else:
                described = describe_checkpoint(data, models, states, lanes, now)
            entry = {"file": str(state_dir / name), **described}
            info["files"].append(entry)
            if info["checkpoint"] is None and entry["valid"]:
                info["checkpoint"] = entry
    return info
