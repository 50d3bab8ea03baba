"""One stream's carried state, independent of the lane it ran in.

What the multi-stream daemon parks when a stream goes idle, persists in the streams
checkpoint (``runtime.stream_format``) and loads into a free lane when the stream
returns. ``states`` maps each manifest state name to float32 ``[*shape]`` (dequantized,
whatever the variant's tensor dtype).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class StreamState:
    """``steps`` since the stream's last reset; ``seq`` its resets (explicit, policy and
    fault) since it first appeared; ``samples`` accepted since then; ``last_t`` the unix
    time of its last sample (NaN: unknown), which a ``gap:`` policy compares with the
    next sample's."""

    states: dict[str, np.ndarray]
    steps: int = 0
    seq: int = 0
    samples: int = 0
    last_t: float = math.nan

    def is_finite(self) -> bool:
        return all(bool(np.isfinite(v).all()) for v in self.states.values())
