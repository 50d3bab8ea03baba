"""The fuzz row of ``make bench`` on a few inputs: every decoder is exercised, nothing but
the project's own errors escapes, and the table carries the line bar's verdict."""
from __future__ import annotations

import json

from bench.fuzz import run_fuzz, table


def test_fuzz_row_runs_every_decoder(tiny_artifacts):
    manifest = json.loads((tiny_artifacts / "manifest.json").read_text())
    results = run_fuzz(90, seed=1, manifest=manifest)
    assert list(results) == ["text line parser", "COBS frame decoder", "checkpoint reader", "manifest loader"]
    for name, r in results.items():
        assert r["escaped"] == 0, (name, r["escapes"])
        assert r["inputs"] >= 10 and r["per_second"] > 0 and r["slowest_us"] > 0
    assert results["text line parser"]["slowest_bytes"] > 1000  # lines up to the cap were tried
    shown = table(results)
    assert shown.count("\n| ") == 4 and "bar: no text line up to the cap over 1,000 us:" in shown
