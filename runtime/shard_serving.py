"""Which shards a many-stream daemon serves, and their live hand-off (``--lease``).

``ShardServing`` is the part of ``runtime.multiserve.MultiDaemon`` that loads a shard
(its store, its streams' checkpointed states), answers the source's filter
(``accepts``) and runs one turn of the lease protocol of ``runtime.shard_lease``
(``_hand_over``: take the shards that fell to this daemon, give back those whose own
daemon is alive again). It uses the daemon's ``opts``, ``lanes``, ``stores``,
``leases``, ``source`` and ``checkpoint()``.
"""
from __future__ import annotations

import logging

from runtime.shard import shard_of
from runtime.stream_store import StreamStore

log = logging.getLogger("runtime.multiserve")


class ShardServing:
    def _load_shard(self, shard: int) -> dict:
        """Serve ``shard`` from now on: its store; its streams' checkpointed states."""
        engine = self.lanes.engine
        store = self.stores[shard] = StreamStore(
            self._dir(shard), engine.model_sha256, engine.contract.states,
            interval=self.opts.checkpoint_interval, legacy_stream=self.opts.legacy_stream)
        snap = store.restore()
        states = {}
        for stream, state in (snap.streams.items() if snap is not None else ()):
            if self.opts.shard.of(stream) == shard and stream not in self.lanes.lane_of:
                states[stream] = state
            else:
                log.warning("stream %s in the checkpoint of shard %d belongs to shard %d: "
                            "not restored here", stream, shard, self.opts.shard.of(stream))
        return states

    def accepts(self, stream: str) -> bool:
        """Whether ``stream`` is in a shard this daemon serves now (the source's filter)."""
        return shard_of(stream, self.opts.shard.count) in self.stores

    def _hand_over(self) -> None:
        """One turn of the lease protocol (``runtime.shard_lease``): refresh, take the
        shards that fell to this daemon, give back those whose own daemon is back."""
        leases = self.leases
        leases.heartbeat(set(self.stores))
        take, give, lost = leases.plan(set(self.stores))
        changed = False
        for shard in lost:  # its new owner restored the last checkpoint: ours is stale
            gone = [s for s in self.lanes.stream_states() if self.opts.shard.of(s) == shard]
            self.lanes.forget(gone)
            del self.stores[shard]
            changed = True
            log.warning("lease on shard %d/%d lost to %s (not renewed in time): %d streams "
                        "dropped here", shard, self.opts.shard.count, leases.holder(shard), len(gone))
        for shard in give:
            self.checkpoint()  # every stream of the shard, as of now, for its own daemon
            gone = [s for s in self.lanes.stream_states() if self.opts.shard.of(s) == shard]
            self.lanes.forget(gone)
            del self.stores[shard]
            leases.release(shard)
            changed = True
            log.info("shard %d/%d handed back (%d streams)", shard, self.opts.shard.count, len(gone))
        for shard in take:
            if leases.acquire(shard):
                states = self._load_shard(shard)
                self.lanes.restore(states)
                changed = True
                log.info("took over shard %d/%d: %d stream state(s) restored", shard,
                         self.opts.shard.count, len(states))
        if changed:
            leases.heartbeat(set(self.stores), force=True)
            set_accept = getattr(self.source, "set_accept", None)
            if set_accept is not None:
                set_accept(self.accepts)

