"""``python -m bench.run --smoke``: every row and figure measured, the three files written.

Runs the whole bench once (build env, the device env as a subprocess, the daemon on a real
pty) with few steps against the tiny artifacts. Checks values, never speed.
"""
from __future__ import annotations

import json
import math
import operator
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.contract import load_contract

ROOT = Path(__file__).resolve().parents[2]
DEVICE_PYTHON = ROOT / ".venv-device" / "bin" / "python"
BACKENDS = ("tflite_runtime", "ai_edge_litert")


@pytest.fixture(scope="module")
def bench(tiny_artifacts, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--artifacts", str(tiny_artifacts),
         "--device-python", str(DEVICE_PYTHON), "--smoke", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "bench.json").read_text())
    return out, proc, report


def _positive(value, where: str) -> None:
    assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, f"{where} = {value!r}"


def _all_positive(tree, where: str) -> None:
    """Every number under ``tree`` (dicts and lists, booleans aside) is finite and > 0."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            _all_positive(value, f"{where}.{key}")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            _all_positive(value, f"{where}[{i}]")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        _positive(tree, where)


def test_writes_the_three_files_and_prints_the_table(bench):
    out, proc, _ = bench
    md = (out / "bench.md").read_text()
    assert md.startswith("# stepwise bench") and "Smoke run" in md
    assert md.strip() in proc.stdout
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_row_has_a_finite_positive_latency(bench, tiny_artifacts):
    _, _, report = bench
    variants = list(load_contract(tiny_artifacts).variants)
    want = {("1", "tensorflow", "float32"), ("2", "tensorflow", "float32"), ("3", "tensorflow", "float32"),
            ("6", "tflite_runtime", "float32")}
    want |= {(rid, b, v) for rid in ("4", "4b", "5") for b in BACKENDS for v in variants}
    rows = {(r["row"], r["backend"], r["variant"]): r for r in report["rows"]}
    assert set(rows) == want
    for key, row in rows.items():
        for field in ("median_us", "p99_us", "per_floor", "per_row1", "steps"):
            _positive(row[field], f"row {key} {field}")
        assert row["p99_us"] >= row["median_us"]
    assert all(rows[("4", b, v)]["per_floor"] == 1.0 for b in BACKENDS for v in variants)
    assert rows[("1", "tensorflow", "float32")]["per_row1"] == 1.0


def test_daemon_process_flash_and_scale_figures(bench):
    _, _, report = bench
    d = report["daemon"]
    assert d["exit_code"] == 0
    assert d["latency"]["answered"] == d["latency"]["sent"]
    assert d["throughput"]["answered"] == d["throughput"]["samples"]
    _all_positive({k: d[k] for k in ("ready_s", "latency", "throughput", "rss_ready_mb", "peak_rss_mb")},
                  "daemon")
    _all_positive(report["process"], "process")
    _all_positive({k: v for k, v in report["installed"].items() if k.endswith("_mb")}, "installed")
    _all_positive(report["flash"], "flash")
    assert report["flash"]["checkpoint"]["fsyncs"] >= 2  # the file and its directory
    assert report["flash"]["per_sample"]["bytes_per_day"] > report["flash"]["timed"]["bytes_per_day"]
    for backend in BACKENDS:
        assert [r["lanes"] for r in report["lanes"][backend]] == [1, 8, 64]
        _all_positive(report["lanes"][backend], f"lanes.{backend}")
    assert set(report["model_size"]) == {"default", "x4"}
    assert report["model_size"]["x4"]["units"] == [4 * u for u in report["model_size"]["default"]["units"]]
    _all_positive(report["model_size"], "model_size")
    _all_positive(report["machine"]["cores"], "cores")


def test_every_bar_is_judged_and_shown(bench):
    out, _, report = bench
    md = (out / "bench.md").read_text()
    ops = {"<=": operator.le, ">=": operator.ge}
    assert len(report["bars"]) == 8
    for bar in report["bars"]:
        expected = "PASS" if ops[bar["op"]](bar["value"], bar["limit"]) else "MISS"
        assert bar["result"] == expected, bar
        assert f"| {bar['bar']} |" in md and f"**{bar['result']}**" in md
