"""Window-head streaming on the device: the policy it needs and its warm-up states.

A ``window_head`` model (manifest ``window.mode``) reads the last T per-step outputs at
once; each of the T lanes of ``sliding:T`` keeps them in a ring buffer state, so the lane
that restarted T samples ago gives the model on exactly the last window.

Before T samples have arrived, the output is the model on the window left-padded with
zeros. That needs no padded stream: the state after k zero samples is a constant of the
model, so a full reset puts lane j in the state after ``(T - j) % T`` zero samples (the
lane read after sample j - 1 then has seen T samples, the first of them zeros).

Warm-up gating: a state with ``warmup`` w (above a valid convolution) is left as it is
for the first w steps of a lane, zero samples included.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from runtime.contract import WindowSpec
from runtime.errors import ConfigError
from runtime.reset import ResetPolicy

MODE = "window_head"


def check_policy(window: WindowSpec, policy: ResetPolicy, streams: int = 1) -> None:
    """``ConfigError`` unless a window-head model runs one stream under ``sliding:T``."""
    if window.mode != MODE:
        return
    T = window.length
    if streams != 1:
        raise ConfigError(
            f"{streams} streams in one engine do not fit this model: its head reads a fixed window "
            f"of {T} steps (window_head), streamed under sliding:{T} with {T} lanes for one "
            f"stream; serve it from one --port")
    if policy.kind != "sliding" or policy.n != T:
        raise ConfigError(
            f"reset policy {policy} does not fit this model: its head reads a fixed window of "
            f"{T} steps (window_head), which streams exactly only under sliding:{T}; use "
            f"--reset sliding:{T} or leave --reset out")


def lane_offsets(T: int, phase: int) -> np.ndarray:
    """Zero samples credited to each of the T lanes ``[T]`` at ``phase`` samples since a
    full reset: lane j starts ``(T - j) % T`` samples into its window until the sliding
    schedule restarts it (before sample j)."""
    lanes = np.arange(T)
    return np.where(lanes >= phase, (T - lanes) % T, 0).astype(np.int64)


def carry_mask(age: np.ndarray, warmup: int) -> np.ndarray:
    """Lanes ``[lanes]`` bool whose state with ``warmup`` w is carried at the step that
    brings them to ``age`` samples since reset (1-based)."""
    return age > warmup


def warm_states(states: Sequence, invoke: Callable[[], None], zero_sample: Callable[[], None],
                T: int) -> list[np.ndarray]:
    """Run the model on zero samples from the zero state (already in every lane's state
    inputs): lane j takes ``(T - j) % T`` of them. Returns each state's inputs
    ``[T, *shape]`` afterwards; the lanes' states are left that way.

    ``states`` have ``vin``/``vout`` views ``[T, *shape]``, ``cast`` and ``spec.warmup``.
    """
    need = (T - np.arange(T)) % T
    for i in range(int(need.max(initial=0))):
        zero_sample()
        invoke()
        active = need > i
        for s in states:
            src = s.vout if s.cast is None else s.cast(s.vout)
            mask = active & carry_mask(np.full(T, i + 1), s.spec.warmup)
            np.copyto(s.vin, src, where=mask.reshape((-1,) + (1,) * (s.vin.ndim - 1)))
    return [s.vin.copy() for s in states]
