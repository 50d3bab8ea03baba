"""The bench chart's legend names every kind of bar drawn, and the p99 tick."""
from __future__ import annotations

from bench.report import ROW_COLOURS, chart_legend, draw_chart


def _rows(ids):
    return [{"row": r, "backend": "tflite_runtime", "variant": "float32", "median_us": 10.0 * (i + 1),
             "p99_us": 15.0 * (i + 1)} for i, r in enumerate(ids)]


def test_legend_has_one_entry_per_kind_of_bar_present_and_the_p99_tick():
    legend = chart_legend(_rows(["1", "2", "3", "4", "4b", "5", "6"]))
    assert len(legend) == len(set(ROW_COLOURS.values())) + 1
    assert legend[-1] == ("black", "p99 (tick)")
    assert [label for _, label in chart_legend(_rows(["4", "5"]))] == [
        "bare TFLite invoke, the floor (row 4)", "stepwise Engine.step (row 5)", "p99 (tick)"]


def test_chart_is_written(tmp_path):
    draw_chart({"rows": _rows(["4", "5", "6"]), "smoke": True}, tmp_path / "latency.png")
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
