"""Live hand-off of shards between running daemons: leases in the shared state folder.

With ``--lease SECONDS`` every daemon of a shard group (same ``--shard .../N``, same
``--state-dir``) keeps two kinds of small JSON files in ``STATE_DIR/leases/``, each
rewritten atomically (temporary file + rename) about three times per lease period:

- ``daemon-<id>.alive``: ``{"id", "shards", "expires"}``, its configured shards (the
  ``I`` of ``--shard I/N``) and until when it counts as alive;
- ``shard-<j>-of-<N>.lease``: ``{"owner", "expires"}``, who serves shard ``j`` now.

Each turn (``plan``) a daemon looks at every shard it does not serve. A shard whose lease
was released (its owner stopped: SIGTERM, final checkpoint, then the lease is rewritten
as expired) or ran out (its owner died) goes to the live daemon configured for it if there is one, else to the live
daemon with the highest ``blake2b(shard, daemon id)`` (rendezvous hashing again, over
the survivors): every daemon computes the same winner from the same files, and only the
winner takes the lease and loads the shard's checkpoint. A shard a daemon serves for a
stopped peer is handed back (checkpoint, release) as soon as a live daemon configured
for it is seen again. A shard no daemon ever held is left to its own daemon for three
lease periods after a start (daemons of a group start in any order). Expiry uses wall-clock time: the machines sharing the folder must
agree on the time to well within a lease period.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path

log = logging.getLogger(__name__)


def daemon_score(shard: int, daemon: str) -> bytes:
    return hashlib.blake2b(f"{shard}\x00{daemon}".encode("utf-8"), digest_size=8).digest()


class ShardLeases:
    """This daemon's view of the group's leases (``clock``: unix time)."""

    def __init__(self, state_dir: Path, owned: tuple[int, ...], count: int, seconds: float,
                 daemon_id: str | None = None, clock=time.time):
        self.dir = Path(state_dir) / "leases"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.owned, self.count, self.seconds, self.clock = tuple(owned), count, seconds, clock
        self.id = daemon_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._beat = 0.0
        self.started = clock()
        self.grace = 3 * seconds  # before a shard never held by anyone is taken

    def _lease(self, shard: int) -> Path:
        return self.dir / f"shard-{shard}-of-{self.count}.lease"

    def _alive(self, daemon: str) -> Path:
        return self.dir / f"daemon-{daemon}.alive"

    def _write(self, path: Path, obj: dict) -> None:
        tmp = path.with_name(f".{path.name}.{self.id}.tmp")
        tmp.write_text(json.dumps(obj))
        os.replace(tmp, path)

    @staticmethod
    def _read(path: Path) -> dict | None:
        try:
            obj = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return obj if isinstance(obj, dict) and isinstance(obj.get("expires"), (int, float)) else None

    # -- what the group looks like -------------------------------------------------
    def holder(self, shard: int) -> str | None:
        """The daemon whose lease on ``shard`` has not expired, or None."""
        lease = self._read(self._lease(shard))
        if lease is None or lease["expires"] <= self.clock():
            return None
        return str(lease.get("owner"))

    def alive(self) -> dict[str, set[int]]:
        """Every live daemon of the group (this one included) -> its configured shards."""
        now, out = self.clock(), {self.id: set(self.owned)}
        for path in self.dir.glob("daemon-*.alive"):
            obj = self._read(path)
            if obj is not None and obj["expires"] > now and isinstance(obj.get("shards"), list):
                out[str(obj.get("id"))] = {int(s) for s in obj["shards"] if isinstance(s, int)}
        return out

    def plan(self, serving: set[int]) -> tuple[list[int], list[int], list[int]]:
        """``(take, give, lost)``: free shards this daemon should take now, shards it
        serves for a peer whose configured daemon is alive again, and shards it served
        whose lease another daemon holds now (this one was too late to renew it)."""
        alive, now = self.alive(), self.clock()
        take, give, lost = [], [], []
        for shard in range(self.count):
            configured = sorted(d for d, shards in alive.items() if shard in shards)
            if shard in serving:
                if self.holder(shard) not in (None, self.id):
                    lost.append(shard)
                elif shard not in self.owned and any(d != self.id for d in configured):
                    give.append(shard)
                continue
            lease = self._read(self._lease(shard))
            if lease is not None and lease["expires"] > now and lease.get("owner") != self.id:
                continue
            if lease is None and not configured and now < self.started + self.grace:
                continue  # never held: its daemon may be starting too
            winner = configured[0] if configured else \
                max(alive, key=lambda d: daemon_score(shard, d))
            if winner == self.id:
                take.append(shard)
        return take, give, lost

    # -- this daemon's files --------------------------------------------------------
    def heartbeat(self, serving: set[int], force: bool = False) -> None:
        """Refresh the alive file and the leases of ``serving`` (every third of a period)."""
        now = self.clock()
        if not force and now - self._beat < self.seconds / 3:
            return
        self._beat = now
        expires = now + self.seconds
        self._write(self._alive(self.id), {"id": self.id, "shards": list(self.owned),
                                           "expires": expires})
        for shard in serving:
            self._write(self._lease(shard), {"owner": self.id, "expires": expires})

    def acquire(self, shard: int) -> bool:
        """Take the lease on a free ``shard``; False if another daemon holds it after all."""
        if self.holder(shard) not in (None, self.id):
            return False
        self._write(self._lease(shard), {"owner": self.id, "expires": self.clock() + self.seconds})
        return self.holder(shard) == self.id

    def release(self, shard: int) -> None:
        """Give the lease up now (kept as an expired lease: the shard was served, its
        checkpoint is current, a peer may take it at once)."""
        if self.holder(shard) == self.id:
            self._write(self._lease(shard), {"owner": self.id, "expires": 0})

    def leave(self, serving) -> None:
        """Release every lease of ``serving`` and the alive file (a clean stop)."""
        for shard in serving:
            self.release(shard)
        self._alive(self.id).unlink(missing_ok=True)
