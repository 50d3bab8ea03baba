"""Affine (de)quantization, the one rule: ``real = (stored - zero_point) * scale``.

A tensor is quantized when its dtype is an integer type and its scale is positive;
otherwise stored values are the real values. Quantizing rounds to nearest (half to
even, as ``np.rint``) and saturates to the dtype's range. ``quantize``/``dequantize``
serve one-off conversions (state restore, the TFLite Micro check); ``AffineCast`` is
the same rule folded into ``dst = src * a + b`` over preallocated buffers for the
engine's per-step path.
"""
from __future__ import annotations

import numpy as np


def is_quantized(dtype, scale: float) -> bool:
    return np.dtype(dtype).kind in "iu" and scale > 0.0


def quantize(real, scale: float, zero_point: int, dtype) -> np.ndarray:
    """Real values -> stored values of ``dtype`` (rounded and saturated if quantized)."""
    dtype = np.dtype(dtype)
    if not is_quantized(dtype, scale):
        return np.asarray(real).astype(dtype, copy=False)
    info = np.iinfo(dtype)
    q = np.rint(np.asarray(real, np.float64) / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(raw, scale: float, zero_point: int) -> np.ndarray:
    """Stored values -> real float32 values (dequantized if quantized)."""
    raw = np.asarray(raw)
    if not is_quantized(raw.dtype, scale):
        return np.asarray(raw, np.float32)
    return ((raw.astype(np.float64) - zero_point) * scale).astype(np.float32)


class AffineCast:
    """``dst = src * a + b`` into a preallocated ``[*shape]`` buffer of ``dtype``,
    rounded and saturated when ``dtype`` is an integer type. One instance per tensor,
    so the per-step path allocates nothing."""

    def __init__(self, a: float, b: float, shape: tuple[int, ...], dtype: np.dtype):
        self.a, self.b = np.float32(a), np.float32(b)
        self.work = np.zeros(shape, np.float32)
        self.out = np.zeros(shape, dtype)
        self.integer = np.dtype(dtype).kind in "iu"
        if self.integer:
            info = np.iinfo(dtype)
            self.lo, self.hi = np.float32(info.min), np.float32(info.max)

    def __call__(self, src: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Cast ``src`` into ``out`` (default: this cast's own buffer) and return it."""
        w = self.work
        np.multiply(src, self.a, out=w)
        np.add(w, self.b, out=w)
        if self.integer:
            np.rint(w, out=w)
            np.minimum(w, self.hi, out=w)
            np.maximum(w, self.lo, out=w)
        out = self.out if out is None else out
        out[...] = w
        return out

    @classmethod
    def between(cls, src, dst, shape: tuple[int, ...]) -> "AffineCast":
        """Stored values of ``src`` -> stored values of ``dst`` (dequantize, requantize);
        ``src`` and ``dst`` have ``dtype``, ``scale``, ``zero_point`` and ``quantized``."""
        s_src, z_src = (src.scale, src.zero_point) if src.quantized else (1.0, 0)
        s_dst, z_dst = (dst.scale, dst.zero_point) if dst.quantized else (1.0, 0)
        a = s_src / s_dst
        return cls(a, z_dst - z_src * a, shape, dst.dtype)

    def is_identity_on(self, dtype: np.dtype) -> bool:
        """True when every value of the integer ``dtype`` maps to itself."""
        if not (self.integer and np.dtype(dtype) == self.out.dtype):
            return False
        info = np.iinfo(dtype)
        q = np.arange(info.min, info.max + 1, dtype=np.float32)
        mapped = np.clip(np.rint(q * self.a + self.b), self.lo, self.hi)
        return bool(np.array_equal(mapped, q))
