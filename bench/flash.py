"""What state checkpoints cost the device's flash: bytes, fsyncs and time per checkpoint,
per day at the default interval and if every sample were checkpointed.

A real snapshot of the engine as ``serve`` runs it (default variant and reset policy,
after a few hundred samples) goes through ``runtime.store_format`` for its size and
through a ``StateStore`` on a temporary directory, with a counting file-system layer,
for the number of fsyncs and renames of one steady-state checkpoint and its time.
"""
from __future__ import annotations

import collections
import tempfile
import time
from pathlib import Path

import numpy as np

from runtime.engine import Engine
from runtime.atomic import FileSystem
from runtime.store import StateStore
from runtime.store_format import encode_checkpoint

SECONDS_PER_DAY = 86_400
PAGE = 4096  # the least a flash page / file-system block write costs per fsync


class CountingFileSystem(FileSystem):
    """The real file operations, counted."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    def write(self, fd: int, data: bytes) -> int:
        n = super().write(fd, data)
        self.counts["bytes_written"] += n
        return n

    def fsync(self, fd: int) -> None:
        self.counts["fsync"] += 1
        super().fsync(fd)

    def fsync_dir(self, path: Path) -> None:
        self.counts["fsync"] += 1
        super().fsync_dir(path)

    def replace(self, src: Path, dst: Path) -> None:
        self.counts["rename"] += 1
        super().replace(src, dst)


def _per_day(checkpoint: dict, per_day: float) -> dict:
    return {"checkpoints_per_day": per_day,
            "bytes_per_day": per_day * checkpoint["bytes"],
            "fsyncs_per_day": per_day * checkpoint["fsyncs"],
            "min_page_bytes_per_day": per_day * checkpoint["fsyncs"] * PAGE,
            "busy_fraction": per_day * checkpoint["median_s"] / SECONDS_PER_DAY}


def flash_figures(artifacts: str | Path, samples: np.ndarray, interval: float = 60.0,
                  sample_rate: float = 100.0, repeats: int = 20) -> dict:
    """Bytes/fsyncs/time of one checkpoint; per day at ``interval`` s and at ``sample_rate`` Hz."""
    engine = Engine.load(artifacts)
    for s in samples[:500]:
        engine.step(s)
    snap = engine.snapshot()
    encoded = encode_checkpoint(snap, engine.model_sha256, engine.contract.states)
    fs = CountingFileSystem()
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        store = StateStore(Path(tmp) / "state", engine.model_sha256, engine.contract.states,
                           interval=interval, fs=fs, lanes=engine.lanes)
        for _ in range(2):  # the first creates the directory, the second the .prev rotation
            store.checkpoint(snap)
        for _ in range(max(1, repeats)):
            before = dict(fs.counts)
            t0 = time.perf_counter()
            if not store.checkpoint(snap):
                raise RuntimeError(f"checkpoint failed: {store.last_error}")
            times.append(time.perf_counter() - t0)
            steady = {k: fs.counts[k] - before.get(k, 0) for k in fs.counts}
        on_disk = (Path(tmp) / "state" / "state.ckpt").stat().st_size
    checkpoint = {"bytes": len(encoded), "bytes_on_disk": on_disk, "lanes": engine.lanes,
                  "reset": str(engine.policy), "fsyncs": steady.get("fsync", 0),
                  "renames": steady.get("rename", 0), "bytes_written": steady.get("bytes_written", 0),
                  "median_s": float(np.median(times)), "p99_s": float(np.percentile(times, 99))}
    return {"checkpoint": checkpoint,
            "timed": {"interval_s": interval, **_per_day(checkpoint, SECONDS_PER_DAY / interval)},
            "per_sample": {"rate_hz": sample_rate, **_per_day(checkpoint, SECONDS_PER_DAY * sample_rate)}}
