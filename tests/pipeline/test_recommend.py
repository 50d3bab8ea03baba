"""The per-target recommendation from measured figures."""
from __future__ import annotations

from pipeline.recommend import recommend
from runtime.contract import VariantSpec


def _v(name, passed, latency, nbytes, micro=True):
    return VariantSpec(name=name, file=f"{name}.tflite", sha256="0" * 64, bytes=nbytes, tensors={},
                       verification={"latency_us": latency}, passed=passed,
                       micro={"runs": micro, "arena_bytes": 1000} if micro is not None else {})


def test_linux_gets_the_fastest_passing_variant_and_a_microcontroller_the_integer_one():
    r = recommend({"float32": _v("float32", True, 5.0, 40000), "int16x8": _v("int16x8", True, 9.0, 12000),
                   "int8": _v("int8", True, 8.0, 11000)})
    assert r["linux"]["variant"] == "float32" and "float32 5.0 us" in r["linux"]["why"]
    assert r["microcontroller"]["variant"] == "int8" and "11000 bytes" in r["microcontroller"]["why"]


def test_a_missed_bar_or_a_model_micro_cannot_run_moves_the_recommendation():
    r = recommend({"float32": _v("float32", True, 5.0, 40000), "int16x8": _v("int16x8", True, 9.0, 12000),
                   "int8": _v("int8", False, 3.0, 11000)})
    assert r["linux"]["variant"] == "float32"  # int8 is faster here but missed a bar
    assert r["microcontroller"]["variant"] == "int16x8"
    r = recommend({"float32": _v("float32", True, 5.0, 40000, micro=None), "int8": _v("int8", False, 3.0, 1)})
    assert r["microcontroller"] == {"variant": None, "why": "no passing variant ran under TFLite Micro (int8 missed bars)"}
