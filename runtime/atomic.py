"""Durable files: the one atomic write, and the file operations it goes through.

``atomic_write_bytes(path, data)`` writes ``data`` to ``<path>.tmp``, fsyncs it, renames
it over ``path`` and fsyncs the directory, so after a crash or power cut at any point
``path`` is either the complete new file or the old one. With ``previous`` the old file
is first renamed to ``previous`` (the state store keeps one checkpoint behind).

Every operation goes through a ``FileSystem`` (default: the real ``os`` calls), so tests
can inject faults and power cuts. Used by the manifest, the state store and the C export.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

TEMP_SUFFIX = ".tmp"


class FileSystem:
    """The file operations durable writes use: the real ones (os.open, os.write, os.fsync...)."""

    def open(self, path: Path, flags: int, mode: int = 0o644) -> int:
        return os.open(path, flags | getattr(os, "O_CLOEXEC", 0), mode)

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def replace(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def unlink(self, path: Path) -> None:
        os.unlink(path)

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def exists(self, path: Path) -> bool:
        return os.path.exists(path)

    def listdir(self, path: Path) -> list[str]:
        return sorted(os.listdir(path))

    def read_bytes(self, path: Path) -> bytes:
        with open(path, "rb") as f:
            return f.read()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fs: FileSystem | None = None,
                       previous: str | os.PathLike | None = None) -> None:
    """Temp file, write, fsync, (rename the old file to ``previous``), rename, directory
    fsync. Raises ``OSError``; a failed write leaves ``<path>.tmp`` for the caller."""
    fs = fs or FileSystem()
    path = Path(path)
    tmp = path.with_name(path.name + TEMP_SUFFIX)
    fd = fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        write_all(fs, fd, data)
        fs.fsync(fd)
    finally:
        fs.close(fd)
    if previous is not None:
        try:
            fs.replace(path, Path(previous))
        except FileNotFoundError:
            pass
    fs.replace(tmp, path)
    fs.fsync_dir(path.parent)


def write_all(fs: FileSystem, fd: int, data: bytes) -> None:
    """Write every byte of ``data`` (short writes continued; a zero-byte write is EIO)."""
    view = memoryview(data)
    while view:
        n = fs.write(fd, view)
        if n <= 0:
            raise OSError(errno.EIO, f"write returned {n}")
        view = view[n:]


def ensure_dir(fs: FileSystem, path: Path) -> None:
    """Create ``path`` (and parents) durably if missing."""
    if fs.exists(path):
        return
    ensure_dir(fs, path.parent)
    fs.mkdir(path)
    fs.fsync_dir(path.parent)
