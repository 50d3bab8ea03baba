"""bench.json, bench.md and latency.png from one run's results."""
from __future__ import annotations

import json
import math
from pathlib import Path

from bench.rows import SHORT_LABELS

JSON_FILE, MD_FILE, CHART_FILE = "bench.json", "bench.md", "latency.png"


def _n(v: float, digits: int = 3) -> str:
    """A figure with ``digits`` significant digits, thousands separated."""
    if v is None or not math.isfinite(v):
        return "n/a"
    if abs(v) >= 10 ** digits:
        return f"{v:,.0f}"
    return f"{v:,.{max(0, digits - 1 - int(math.floor(math.log10(abs(v))))) if v else 0}f}"


def _speed(per_row1: float) -> str:
    if per_row1 <= 1.0:
        return f"{_n(1.0 / per_row1)}x faster"
    return f"{_n(per_row1)}x slower"


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in body), ""]


def _bars(report: dict) -> list[str]:
    body = [[b["bar"], f"{_n(b['value'])} {b['unit']}", f"{b['op']} {_n(b['limit'])} {b['unit']}",
             f"**{b['result']}**"] for b in report["bars"]]
    missed = [b["bar"] for b in report["bars"] if b["result"] == "MISS"]
    verdict = (f"{len(missed)} of {len(report['bars'])} bars missed: " + "; ".join(missed) + "."
               if missed else f"All {len(report['bars'])} bars passed.")
    rows = report["rows"]
    ref = "; ".join(f"{r['backend']} {_n(r['per_floor'])}x" for r in rows
                    if r["row"] == "4b" and r["variant"] == "float32")
    return ["## Bars", "", verdict, "", *_table(["bar", "measured", "limit", "result"], body),
            f"For reference, row 4b (the usual hand-written loop: `get_tensor` of the outputs, "
            f"`set_tensor` of the states) over the floor, float32: {ref}.", ""]


def _latency(report: dict) -> list[str]:
    body = [[r["row"], r["label"], r["backend"], r["variant"], _n(r["median_us"]), _n(r["p99_us"]),
             _n(r["per_floor"]), f"{_n(r['per_row1'])} ({_speed(r['per_row1'])})"]
            for r in report["rows"]]
    s = report["settings"]
    return ["## Per-step latency, default model", "",
            f"Median and p99 over {s['steps']:,} timed steps after {s['warmup']:,} warm-up steps "
            f"(TensorFlow rows: {s['tf_steps']:,} after {s['tf_warmup']:,}; row 6: "
            f"{s['paced']:,} samples after {s['paced_warmup']:,}). `/ floor`: median over the "
            "row 4 median of the same backend and variant (TensorFlow rows: the ai_edge_litert "
            "float32 floor). `/ row 1`: median over the row 1 median.", "",
            *_table(["row", "what", "backend", "variant", "median µs", "p99 µs", "/ floor", "/ row 1"], body),
            "Row 4 sets every input (sample and states, prepared arrays) and invokes; it reads "
            "nothing. Row 4b is the usual hand-written loop: `get_tensor` of every output and "
            "`set_tensor` of each state back. Row 5 does more (normalisation, NaN/Inf checks, "
            "requantization where needed, the Prediction object) on numpy views of the "
            "interpreter's buffers, with no copies through `get_tensor`/`set_tensor`. Row 6 is "
            "sample line written to the pty -> JSON line read from the daemon's stdout.", ""]


def _daemon(report: dict) -> list[str]:
    d = report["daemon"]
    t = d["throughput"]
    body = [["command", f"`{' '.join(d['command_shown'])}`"],
            ["backend / variant / reset", f"{d['backend']} / {d['variant']} / {d['reset']}"],
            ["ready (spawn -> first prediction read)", f"{_n(d['ready_s'])} s"],
            ["latency at 1 kHz, p50 / p99", f"{_n(d['latency']['median_us'])} / {_n(d['latency']['p99_us'])} µs"],
            ["maximum sustained throughput",
             f"{_n(t['samples_per_s'])} samples/s ({t['answered']:,} of {t['samples']:,} answered in {_n(t['seconds'])} s)"],
            ["RSS once ready / peak (VmHWM)", f"{_n(d['rss_ready_mb'])} / {_n(d['peak_rss_mb'])} MB"]]
    return ["## Daemon end to end", "", *_table(["figure", "value"], body)]


def _process(report: dict) -> list[str]:
    e, tf, inst = report["process"]["engine"], report["process"]["tensorflow"], report["installed"]
    body = [["import + load", f"{_n(e['import_load_s'])} s", f"{_n(tf['import_load_s'])} s"],
            ["of which import", f"{_n(e['import_s'])} s", f"{_n(tf['import_s'])} s"],
            ["1000 steps", f"{_n(e['steps_s'])} s", f"{_n(tf['steps_s'])} s"],
            ["peak RSS (ru_maxrss)", f"{_n(e['peak_rss_mb'])} MB", f"{_n(tf['peak_rss_mb'])} MB"],
            ["process wall time (spawn -> exit)", f"{_n(e['process_wall_s'])} s", f"{_n(tf['process_wall_s'])} s"],
            ["installed", f"{_n(inst['device_site_packages_mb'])} MB (device env site-packages; "
                          f"{_n(inst['device_runtime_deps_mb'])} MB of it is what serve imports)",
             f"{_n(inst['tensorflow_keras_mb'])} MB (tensorflow* + keras*)"]]
    return ["## Process cost on the device", "",
            "A fresh process: import, load the model, 1000 steps (the engine as `serve` loads it; "
            "TensorFlow: the Keras stateful model, first predict included in load).", "",
            *_table(["", f"stepwise engine ({e['backend']})", "TensorFlow + Keras"], body)]


def _flash(report: dict) -> list[str]:
    f = report["flash"]
    c, timed, each = f["checkpoint"], f["timed"], f["per_sample"]
    GB = 1e9
    body = [["checkpoints", "1", _n(timed["checkpoints_per_day"]), _n(each["checkpoints_per_day"])],
            ["bytes written", f"{c['bytes']:,}", f"{_n(timed['bytes_per_day'] / 1e6)} MB",
             f"{_n(each['bytes_per_day'] / GB)} GB"],
            ["fsyncs (file + directory)", str(c["fsyncs"]), _n(timed["fsyncs_per_day"]), _n(each["fsyncs_per_day"])],
            ["at least one 4 KiB page per fsync", f"{c['fsyncs'] * 4096:,} B",
             f"{_n(timed['min_page_bytes_per_day'] / 1e6)} MB", f"{_n(each['min_page_bytes_per_day'] / GB)} GB"],
            ["time spent checkpointing", f"{_n(c['median_s'] * 1000)} ms median",
             f"{_n(timed['busy_fraction'] * 100)} %", f"{_n(each['busy_fraction'] * 100)} %"]]
    note = ([f"Checkpointing every sample at {_n(each['rate_hz'])} Hz would need "
             f"{_n(each['busy_fraction'])} s of writing per second: it cannot keep up.", ""]
            if each["busy_fraction"] >= 1 else [])
    return ["## Flash: state checkpoints", "",
            f"A real snapshot of the engine as `serve` runs it ({c['lanes']} lane(s), {c['reset']}), "
            f"written by StateStore (temp + fsync + rename + directory fsync; {c['renames']} renames).", "",
            *_table(["", "per checkpoint", f"per day, every {_n(timed['interval_s'])} s (default)",
                     f"per day, every sample at {_n(each['rate_hz'])} Hz"], body), *note]


def _scale(report: dict) -> list[str]:
    body = [[backend, str(r["lanes"]), _n(r["median_us"]), _n(r["p99_us"]), _n(r["samples_per_s"]),
             _n(r["us_per_stream"])] for backend, sweep in report["lanes"].items() for r in sweep]
    sizes = [[name, ", ".join(map(str, m["units"])), f"{m['parameters']:,}", f"{m['tflite_bytes']:,}",
              backend, _n(f["floor"]["median_us"]), _n(f["engine"]["median_us"]),
              _n(f["engine"]["median_us"] / f["floor"]["median_us"])]
             for name, m in report["model_size"].items() for backend, f in m["float32"].items()]
    return ["## Scale", "", "Lanes per invoke (`Engine.step_lanes`, default variant):", "",
            *_table(["backend", "lanes", "µs per invoke", "p99 µs", "samples/s", "µs per stream"], body),
            "Model size (float32; the wider model has random weights):", "",
            *_table(["model", "units", "parameters", "tflite bytes", "backend", "floor µs", "engine µs",
                     "engine / floor"], sizes)]


def render_markdown(report: dict) -> str:
    m, v = report["machine"], report["versions"]
    head = ["# stepwise bench", "",
            f"{report['generated']} on {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
            f"Linux {m['kernel']}; load average {_n(m['load_average'][0])} at the start, "
            f"{_n(report['machine_end']['load_average'][0])} at the end (other processes share the CPU).", ""]
    if report["smoke"]:
        head += ["**Smoke run** (`--smoke`): few steps; the figures are not meaningful.", ""]
    lines = head + _bars(report) + _latency(report) + _daemon(report) + _process(report) \
        + _flash(report) + _scale(report)
    lines += ["## Versions", "", ", ".join(f"{k} {val}" for k, val in v.items()), ""]
    return "\n".join(lines)


# colour of each row's bar and what it stands for in the legend
ROW_COLOURS = {"1": "#b04040", "2": "#b04040", "3": "#c08040", "4": "#808080", "4b": "#a0a0a0",
               "5": "#3070b0", "6": "#30a060"}
GROUPS = (("#b04040", "Keras per-sample predict (rows 1-2)"), ("#c08040", "tf.function step (row 3)"),
          ("#808080", "bare TFLite invoke, the floor (row 4)"),
          ("#a0a0a0", "bare loop with state carry (row 4b)"), ("#3070b0", "stepwise Engine.step (row 5)"),
          ("#30a060", "stepwise serve via a pty (row 6)"))


def chart_legend(rows: list[dict]) -> list[tuple[str, str]]:
    """(colour, label) of every kind of bar present in ``rows``, then the p99 tick: the
    chart's full legend."""
    present = {ROW_COLOURS[r["row"]] for r in rows}
    return [(c, label) for c, label in GROUPS if c in present] + [("black", "p99 (tick)")]


def draw_chart(report: dict, path: Path) -> None:
    """Horizontal bars of the median latency per row, p99 as a tick; log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rows = report["rows"]
    names = [f"{r['row']}  {SHORT_LABELS[r['row']]} [{r['backend']}, {r['variant']}]" for r in rows]
    fig, ax = plt.subplots(figsize=(11, 0.34 * len(rows) + 2.4))
    y = range(len(rows))
    ax.barh(y, [r["median_us"] for r in rows], color=[ROW_COLOURS[r["row"]] for r in rows])
    ax.plot([r["p99_us"] for r in rows], list(y), "k|", markersize=10)
    ax.set_yticks(list(y), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("per-step latency (µs, log scale): bar = median, tick = p99")
    ax.set_title("stepwise bench" + (" (smoke run)" if report["smoke"] else ""))
    handles = [Line2D([], [], color=c, marker="|", ls="", markersize=10, label=label) if label.startswith("p99")
               else Patch(color=c, label=label) for c, label in chart_legend(rows)]
    height = 0.34 * len(rows) + 2.4
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout(rect=(0, 0.75 / height, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(report: dict, out: Path) -> str:
    """Write the three files into ``out``; returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / JSON_FILE).write_text(json.dumps(report, indent=1) + "\n")
    text = render_markdown(report)
    (out / MD_FILE).write_text(text)
    draw_chart(report, out / CHART_FILE)
    return text
