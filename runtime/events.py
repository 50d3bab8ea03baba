"""What a sample source delivers, whatever its wire format: ``Sample`` and ``Reset``.

The text and COBS protocols (``firmware_bridge``) both produce these, and the daemon
consumes them without knowing which protocol, port or broker they came from.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence, Union

import numpy as np


@dataclass(frozen=True, eq=False, slots=True)
class Sample:
    """One sample from the device: ``values`` ``[features]`` float32, in manifest order.

    ``seq`` is the frame sequence number (``cobs``; ``None`` for ``text``);
    ``received`` is ``time.monotonic()`` when the source read it (0.0 from a parser).
    """

    values: np.ndarray
    seq: Optional[int] = None
    received: float = 0.0


@dataclass(frozen=True, slots=True)
class Reset:
    """The device asked for a new sequence (``#reset`` line or RESET frame)."""

    seq: Optional[int] = None
    received: float = 0.0


@dataclass(eq=False, slots=True)
class SampleBlock:
    """Samples of many streams at once, in arrival order (a source that reads many
    messages together, ``firmware_bridge.mqtt_bulk``): ``streams`` ``[n]`` ids,
    ``values`` ``[n, F]`` float32 in manifest order, ``received`` the ``time.monotonic()``
    of the read. ``runtime.lanes.LaneManager.step_block`` steps it."""

    streams: list
    values: np.ndarray
    received: float

    def __len__(self) -> int:
        return len(self.streams)


SourceEvent = Union[Sample, Reset]


class SampleSource(Protocol):
    """Where the daemon's events come from and its replies go (the serial link is one).

    ``get_many`` is called from one consumer thread; a source may also have a
    ``counters`` attribute whose ``snapshot()`` dict goes into the daemon's status.
    """

    def get_many(self, limit: int, timeout: Optional[float] = None) -> list[SourceEvent]:
        """Every waiting event up to ``limit``, oldest first, waiting at most ``timeout``
        seconds for the first one (an empty list if none came)."""

    def write_prediction(self, outputs: Sequence[float], class_index: int, label: str,
                         seq: Optional[int] = None) -> bool:
        """Send one prediction back to the device; ``False`` if it could not be sent."""

    def close(self) -> None:
        """Stop reading and release the port."""
