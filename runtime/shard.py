"""Which daemon serves which stream: rendezvous hashing of the stream id over N shards.

A stream belongs to the shard ``i`` in ``0..N-1`` whose score ``blake2b(i, stream id)``
is highest (highest-random-weight, or rendezvous, hashing). Every daemon computes the
same answer from the id alone, with no coordination, so each stream's state lives on
exactly one daemon. The split is even (each shard gets about 1/N of the ids), and a
daemon that serves several shards (``--shard 0,1/2``) serves exactly the union: that is
how a running machine takes over the shards of a stopped one, restoring their
checkpoints from the shared state folder (``shard_dir``).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import ConfigError


def score(shard: int, stream: str) -> bytes:
    return hashlib.blake2b(f"{shard}\x00{stream}".encode("utf-8"), digest_size=8).digest()


def shard_of(stream: str, count: int) -> int:
    """The shard (``0..count-1``) that owns ``stream``."""
    return max(range(count), key=lambda i: score(i, stream))


@dataclass(frozen=True)
class ShardSpec:
    """The shards this daemon owns (``owned``) out of ``count``."""

    owned: tuple[int, ...]
    count: int

    @classmethod
    def parse(cls, text: str) -> "ShardSpec":
        """``"1/3"`` or ``"0,2/3"``; ``ConfigError`` with the rule otherwise."""
        owned, sep, count = text.partition("/")
        try:
            n = int(count)
            ids = tuple(sorted({int(p) for p in owned.split(",")}))
        except ValueError:
            n, ids = 0, ()
        if not sep or n < 1 or not ids or not all(0 <= i < n for i in ids):
            raise ConfigError(f"--shard {text!r}: expected I/N or I,J,.../N with 0 <= I < N")
        return cls(ids, n)

    def owns(self, stream: str) -> bool:
        return self.count == 1 or shard_of(stream, self.count) in self.owned

    def of(self, stream: str) -> int:
        return 0 if self.count == 1 else shard_of(stream, self.count)

    def __str__(self) -> str:
        return f"{','.join(map(str, self.owned))}/{self.count}"


def shard_dir(state_dir: Path, shard: int, count: int) -> Path:
    """Where shard ``shard`` of ``count`` keeps its checkpoints in a shared state folder."""
    return Path(state_dir) / f"shard-{shard}-of-{count}"
