"""Reset policies: when a stream's recurrent state goes back to zero.

Parsed from the strings of ``--reset`` and the manifest's ``window.reset``:

- ``window:N``   reset after every N samples (the model saw windows of N in training);
- ``sliding:N``  an exact sliding-window prediction at every step: N staggered lanes of
                 the batch see the same samples, lane k is reset every N steps with
                 offset k, and the output at step t comes from the lane that has seen
                 exactly the last ``min(t+1, N)`` samples;
- ``gap:SECONDS`` reset when no sample arrived for that long;
- ``never``      only explicit resets.

An explicit reset (``Engine.reset``, ``#reset`` on the wire) is always possible.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from runtime.errors import ConfigError

MAX_SLIDING = 4096  # sliding:N steps N lanes per sample
MAX_WINDOW = 1 << 31
ACCEPTED = (f"window:N, sliding:N (N a positive integer, at most {MAX_SLIDING} for sliding), "
            "gap:SECONDS (seconds > 0) or never")


@dataclass(frozen=True)
class ResetPolicy:
    """One parsed policy; ``n`` for window/sliding, ``seconds`` for gap."""

    kind: str
    n: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        if self.kind in ("window", "sliding"):
            return f"{self.kind}:{self.n}"
        if self.kind == "gap":
            return f"gap:{self.seconds:.15g}"
        return self.kind

    @property
    def lanes_per_stream(self) -> int:
        """How many lanes of the batch one stream occupies (N for sliding, else 1)."""
        return self.n if self.kind == "sliding" else 1


def parse_reset(text: str | ResetPolicy) -> ResetPolicy:
    """``"window:7"`` -> ``ResetPolicy("window", n=7)``; bad text raises ``ConfigError``."""
    if isinstance(text, ResetPolicy):
        return text
    raw = str(text).strip()
    kind, sep, arg = raw.partition(":")
    kind = kind.strip().lower()
    arg = arg.strip()
    if kind == "never" and not sep:
        return ResetPolicy("never")
    if kind in ("window", "sliding") and sep:
        try:
            n = int(arg) if len(arg) <= 20 else 0
        except ValueError:
            n = 0
        if 1 <= n <= (MAX_SLIDING if kind == "sliding" else MAX_WINDOW):
            return ResetPolicy(kind, n=n)
    if kind == "gap" and sep:
        try:
            seconds = float(arg)
        except ValueError:
            seconds = math.nan
        if math.isfinite(seconds) and seconds > 0:
            return ResetPolicy("gap", seconds=seconds)
    raise ConfigError(f"reset policy {raw!r} is not valid; use {ACCEPTED}")


def sliding_lanes(phase: int, n: int) -> tuple[int, int]:
    """For the sample number ``phase`` (0-based, since the last full reset) of a
    ``sliding:n`` stream: ``(lane to reset before it, lane to read after it)``.

    The lane read after sample t was last reset before sample ``t - n + 1`` (or never,
    when ``t < n``), so it has seen exactly the last ``min(t + 1, n)`` samples.
    """
    return phase % n, (phase + 1) % n


def sliding_phase(steps: list[int], n: int) -> int:
    """Recover the phase of a ``sliding:n`` stream from its lanes' step counts.

    Before the first n samples the phase is the sample count itself (the most steps any
    lane has); after that the next lane to reset is the one read last, the only lane
    that has seen n samples.
    """
    most = max(steps)
    lane = steps.index(most)
    return most if most < n else n + lane


class ResetSchedule:
    """A policy applied to an engine's lanes: steps since reset, reset counts, last
    sample times, and the sliding phase. The engine writes the zero states; this
    decides which lanes and keeps the counters.

    ``steps``/``seq`` ``[lanes]`` int64: samples since each lane's reset, resets since
    load; ``last_t`` ``[lanes]`` the unix time of each lane's last sample (NaN unknown).
    """

    def __init__(self, policy: ResetPolicy, streams: int):
        self.policy = policy
        self.lanes = streams * policy.lanes_per_stream
        self.steps = np.zeros(self.lanes, np.int64)
        self.seq = np.zeros(self.lanes, np.int64)
        self.last_t = np.full(self.lanes, np.nan)
        self.phase = 0  # sliding: samples since the last full reset
        self.timed = policy.kind in ("window", "gap")  # ``due`` can return lanes

    def due(self, t=None, mask: np.ndarray | None = None) -> list[int]:
        """Lanes (of ``mask``, or all) to reset before the sample at unix time ``t``
        (scalar or ``[lanes]``; default now) by ``window``/``gap``. Records ``t``."""
        kind = self.policy.kind
        if kind == "window":
            if self.lanes == 1:
                return [0] if self.steps[0] >= self.policy.n else []
            hit = self.steps >= self.policy.n
        elif kind == "gap":
            now = np.broadcast_to(np.asarray(time.time() if t is None else t, np.float64),
                                  (self.lanes,))
            with np.errstate(invalid="ignore"):
                hit = now - self.last_t > self.policy.seconds
            self.last_t[:] = now if mask is None else np.where(mask, now, self.last_t)
        else:
            return []
        if mask is not None:
            hit &= mask
        return np.flatnonzero(hit).tolist()

    def sliding_turn(self) -> tuple[int, int]:
        """Sliding: advance one sample; ``(lane to clear before it, lane to read after)``."""
        reset_lane, read_lane = sliding_lanes(self.phase, self.lanes)
        self.phase += 1
        self.steps[reset_lane] = 0
        return reset_lane, read_lane

    def was_reset(self, lanes: list[int]) -> None:
        self.steps[lanes] = 0
        self.seq[lanes] += 1
        if len(lanes) == self.lanes:
            self.phase = 0

    def restore(self, steps: np.ndarray, last_t: float | None) -> None:
        self.steps[:] = steps
        self.last_t[:] = np.nan if last_t is None else last_t
        if self.policy.kind == "sliding":
            self.phase = sliding_phase(self.steps.tolist(), self.lanes)
