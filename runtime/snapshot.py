"""The engine's carried state at one instant, as the state store persists it."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class StateSnapshot:
    """Everything needed to resume an engine exactly where it was.

    ``states`` maps each manifest state name to a float32 array ``[lanes, *shape]``
    (always float, dequantized, whatever the variant's tensor dtype); ``steps`` is each
    lane's steps since its last reset ``[lanes]``; ``samples_seen`` counts samples
    accepted since the state was first created; ``last_frame_seq`` is the serial
    protocol's last sequence number (-1 when none).
    """

    states: dict[str, np.ndarray]
    steps: np.ndarray
    samples_seen: int = 0
    last_frame_seq: int = -1
    timestamp: float = 0.0
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def lanes(self) -> int:
        return int(self.steps.shape[0])

    def copy(self) -> "StateSnapshot":
        return StateSnapshot(
            states={k: v.copy() for k, v in self.states.items()},
            steps=self.steps.copy(),
            samples_seen=self.samples_seen,
            last_frame_seq=self.last_frame_seq,
            timestamp=self.timestamp,
            extra=dict(self.extra),
        )

    def is_finite(self) -> bool:
        return all(bool(np.isfinite(v).all()) for v in self.states.values())
