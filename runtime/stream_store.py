"""The state store for many streams: every stream's state by id, in one checkpoint.

The same files, the same temp + fsync + rename + directory fsync commit and the same
rejection of unusable files as ``runtime.store.StateStore``; only the file format
differs (version 2, ``runtime.stream_format``). A version-1 checkpoint of a one-lane
engine (what a single-stream daemon writes) still loads: it becomes the state of the
stream ``legacy_stream``, when one is named.
"""
from __future__ import annotations

from runtime.store import StateStore
from runtime.store_format import (
    UNSUPPORTED_VERSION, WRONG_LANES, CheckpointError, check_matches, parse_checkpoint,
)
from runtime.stream_format import (
    STREAMS_VERSION, StreamsSnapshot, decode_streams, encode_streams, file_version,
)
from runtime.stream_state import StreamState


class StreamStore(StateStore):
    """``StateStore`` of ``StreamsSnapshot``s (``restore`` returns one, or None)."""

    def __init__(self, *args, legacy_stream: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.legacy_stream = legacy_stream

    def _decode(self, data: bytes) -> StreamsSnapshot:
        if file_version(data) == STREAMS_VERSION:
            return decode_streams(data, self.model_sha256, self.states)
        if file_version(data) == 1 and self.legacy_stream is None:
            raise CheckpointError(UNSUPPORTED_VERSION, "a single-stream checkpoint, and no "
                                  "stream is named to take it")
        ckpt = parse_checkpoint(data)
        check_matches(ckpt, self.model_sha256, self.states)
        if ckpt.lanes != 1:
            raise CheckpointError(WRONG_LANES, f"single-stream checkpoint with {ckpt.lanes} "
                                  "lanes (a sliding:N state) cannot become one stream")
        last_ms = ckpt.extra.get("last_sample_ms")
        state = StreamState({k: v[0].copy() for k, v in ckpt.tensors.items()},
                            steps=int(ckpt.steps[0]), seq=int(ckpt.extra.get("seq", 0)),
                            samples=int(ckpt.samples_seen),
                            last_t=float("nan") if last_ms is None else last_ms / 1000.0)
        return StreamsSnapshot({self.legacy_stream: state}, samples_seen=ckpt.samples_seen,
                               timestamp=ckpt.timestamp)

    def _encode(self, snapshot: StreamsSnapshot) -> bytes:
        return encode_streams(snapshot, self.model_sha256, self.states)

    def _summary(self, snapshot: StreamsSnapshot) -> str:
        return f"{len(snapshot.streams)} stream(s), {snapshot.samples_seen} samples seen"
