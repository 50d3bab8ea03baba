"""From raw measurements to the rows of the comparison, their ratios, and the bars."""
from __future__ import annotations

LABELS = {
    "1": "Keras stateful=True, predict_on_batch",
    "2": "Keras return_state, explicit h/c, predict_on_batch",
    "3": "tf.function one-step cell (StepModel.step)",
    "4": "bare TFLite set_tensor + invoke (floor)",
    "4b": "bare loop: floor + get_tensor, states fed back by hand",
    "5": "stepwise Engine.step",
    "6": "stepwise serve through a pty, fed at 1 kHz",
}
SHORT_LABELS = {"1": "Keras stateful", "2": "Keras return_state", "3": "tf.function step",
                "4": "TFLite floor", "4b": "bare loop + state carry", "5": "Engine.step",
                "6": "daemon via pty, 1 kHz"}
KERAS_ROWS = (("1", "keras_stateful"), ("2", "keras_return_state"), ("3", "tf_function_step"))
TF_FLOOR_BACKEND = "ai_edge_litert"  # TensorFlow rows are compared with the build env's floor


def _row(rid: str, backend: str, variant: str, figures: dict, floor_key: tuple[str, str]) -> dict:
    return {"row": rid, "label": LABELS[rid], "backend": backend, "variant": variant,
            "median_us": figures["median_us"], "p99_us": figures["p99_us"],
            "steps": figures["steps"], "floor": list(floor_key)}


def build_rows(results: dict) -> list[dict]:
    """Rows 1-6 with ``per_floor`` (median / floor median, same backend and variant) and
    ``per_row1`` (median / row 1 median)."""
    rows = [_row(rid, "tensorflow", "float32", results["keras"][key], (TF_FLOOR_BACKEND, "float32"))
            for rid, key in KERAS_ROWS]
    for backend, probe in results["backends"].items():
        for variant, figures in probe["variants"].items():
            for rid, key in (("4", "floor"), ("4b", "bare_loop"), ("5", "engine")):
                rows.append(_row(rid, backend, variant, figures[key], (backend, variant)))
    d = results["daemon"]
    rows.append(_row("6", d["backend"], d["variant"], d["latency"], (d["backend"], d["variant"])))
    floors = {(r["backend"], r["variant"]): r["median_us"] for r in rows if r["row"] == "4"}
    row1 = rows[0]["median_us"]
    for r in rows:
        r["per_floor"] = r["median_us"] / floors[tuple(r["floor"])]
        r["per_row1"] = r["median_us"] / row1
    return rows


def find(rows: list[dict], rid: str, backend: str, variant: str = "float32") -> dict:
    for r in rows:
        if (r["row"], r["backend"], r["variant"]) == (rid, backend, variant):
            return r
    raise KeyError(f"no row {rid} for {backend} {variant}")


def _bar(name: str, value: float, op: str, limit: float, unit: str) -> dict:
    passed = value <= limit if op == "<=" else value >= limit
    return {"bar": name, "value": value, "op": op, "limit": limit, "unit": unit,
            "result": "PASS" if passed else "MISS"}


def evaluate_bars(rows: list[dict], results: dict) -> list[dict]:
    """Every quality bar of the bench, PASS or MISS; nothing is dropped."""
    bars = []
    for backend in results["backends"]:
        engine = find(rows, "5", backend)
        bars.append(_bar(f"engine step / floor, float32 ({backend})", engine["per_floor"], "<=", 2.0, "x"))
    for backend in results["backends"]:
        engine = find(rows, "5", backend)
        bars.append(_bar(f"row 1 / engine step, float32 ({backend})", 1.0 / engine["per_row1"],
                         ">=", 100.0, "x faster"))
    d = results["daemon"]
    bars += [
        _bar("daemon maximum sustained throughput", d["throughput"]["samples_per_s"], ">=", 20_000.0,
             "samples/s"),
        _bar("daemon p99 latency at 1 kHz", d["latency"]["p99_us"] / 1000.0, "<=", 2.0, "ms"),
        _bar("device daemon peak RSS", d["peak_rss_mb"], "<=", 60.0, "MB"),
        _bar("device daemon ready after spawn", d["ready_s"], "<=", 0.5, "s"),
    ]
    return bars
