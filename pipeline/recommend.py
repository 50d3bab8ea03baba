"""Which variant to deploy, per target, from the figures a build measured.

- ``linux`` (x86-64 or ARM Linux through the runtime engine): the passing variant with the
  lowest measured engine step time; on these CPUs the float32 step is usually the
  fastest (the integer kernels dequantize and requantize at every state carry), and it
  is exact.
- ``microcontroller`` (TFLite Micro): the smallest passing variant that the TFLite Micro
  check ran, preferring integer-only models (int8, then int16x8: no float unit needed,
  a quarter of the weight bytes).
"""
from __future__ import annotations

from runtime.contract import VariantSpec

_MCU_ORDER = ("int8", "int16x8", "float32")


def recommend(variants: dict[str, VariantSpec]) -> dict[str, dict]:
    """``{"linux": {"variant", "why"}, "microcontroller": {...}}`` (variant None: none fits)."""
    passing = {v: s for v, s in variants.items() if s.passed}
    out = {}
    if passing:
        fastest = min(passing, key=lambda v: passing[v].verification.get("latency_us", float("inf")))
        times = ", ".join(f"{v} {s.verification.get('latency_us', float('nan')):.1f} us"
                          for v, s in passing.items())
        out["linux"] = {"variant": fastest, "why": f"fastest passing engine step on the build host ({times})"}
    else:
        out["linux"] = {"variant": None, "why": "no variant passed its bars"}
    micro_ok = [v for v in _MCU_ORDER if v in passing and passing[v].micro.get("runs")]
    if micro_ok:
        v = micro_ok[0]
        spec = passing[v]
        out["microcontroller"] = {"variant": v, "why": f"{'integer-only, ' if v != 'float32' else ''}"
                                  f"{spec.bytes} bytes, arena {spec.micro.get('arena_bytes')} bytes, passes its bars"}
    else:
        failed = [v for v in _MCU_ORDER if v in variants and v not in passing]
        out["microcontroller"] = {"variant": None, "why": "no passing variant ran under TFLite Micro"
                                  + (f" ({', '.join(failed)} missed bars)" if failed else "")}
    return out
