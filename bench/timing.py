"""Per-call latency: time each call of a function, summarise as median / p99 (numpy only)."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np


def stats(seconds: np.ndarray) -> dict[str, float]:
    """``seconds`` ``[n]`` -> median, p99, mean, min in microseconds and the count."""
    us = np.asarray(seconds, np.float64) * 1e6
    return {"median_us": float(np.median(us)), "p99_us": float(np.percentile(us, 99)),
            "mean_us": float(us.mean()), "min_us": float(us.min()), "steps": int(us.size)}


def time_calls(fn: Callable[[int], object], steps: int, warmup: int) -> dict[str, float]:
    """Call ``fn(i)`` ``warmup`` times untimed, then ``steps`` times, each call timed alone."""
    for i in range(warmup):
        fn(i)
    out = np.empty(steps, np.float64)
    clock = time.perf_counter
    for i in range(steps):
        t0 = clock()
        fn(i)
        out[i] = clock() - t0
    return stats(out)
