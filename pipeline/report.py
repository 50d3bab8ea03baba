"""``artifacts/report/``: report.md with the verification table and PNG plots."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.figures import (ERROR_FLOOR, ErrorHistogram, SequencePanel, TrainingPanel,  # noqa: E402
                              error_histograms, sequence_panels, training_panels)


COLOURS = {"float32": "#1f77b4", "int16x8": "#2ca02c", "int8": "#d62728"}
STYLES = {"float32": "o-", "int16x8": "s--", "int8": "^:"}
DIFF_LINEAR_BELOW = 1e-6


def _colour(name: str) -> str:
    return COLOURS.get(name, "#9467bd")


def plot_sequences(path: Path, panels: list[SequencePanel]) -> None:
    """One column per test sequence: the output of Keras and every variant with the true
    label and the decision threshold (top), each variant minus Keras (bottom)."""
    fig, axes = plt.subplots(2, len(panels), figsize=(3.6 * len(panels), 5.6), sharex="col",
                             squeeze=False, gridspec_kw={"height_ratios": [3, 2]})
    for col, panel in enumerate(panels):
        top, bottom = axes[0][col], axes[1][col]
        top.plot(panel.steps, panel.keras, "k-", lw=3, alpha=0.35, label="keras")
        for name, y in panel.y.items():
            top.plot(panel.steps, y, STYLES.get(name, "x-"), ms=3, lw=1, color=_colour(name), label=name)
            bottom.plot(panel.steps, panel.diff[name], STYLES.get(name, "x-"), ms=3, lw=1,
                        color=_colour(name), label=name)
        if panel.threshold is not None:
            top.axhline(panel.threshold, color="grey", ls="--", lw=1, label=f"threshold {panel.threshold:g}")
        top.set_ylim(-0.05, 1.05)
        top.set_title(f"test sequence {panel.index}\ntrue label: {panel.label_name}", fontsize=9)
        top.set_ylabel(f"{panel.unit_name} (probability)")
        bottom.axhline(0.0, color="k", lw=0.8)
        bottom.set_yscale("symlog", linthresh=DIFF_LINEAR_BELOW)  # int16x8's 1e-4 beside int8's 1e-2
        bottom.set_ylabel(f"variant - keras (probability,\nsymlog, linear below {DIFF_LINEAR_BELOW:g})",
                          fontsize=8)
        bottom.set_xlabel("step (samples since reset)")
        top.legend(fontsize=7, loc="best")
        bottom.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_errors(path: Path, hists: list[ErrorHistogram]) -> None:
    """Histogram of the per-step |dy| of every variant over every test step, log-log."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for h in hists:
        ax.stairs(h.counts, h.edges, color=_colour(h.variant), lw=1.8,
                  label=f"{h.variant}: p99 {h.p99:.2e}, max {h.max:.2e} ({h.exact:,} exact)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"|y_variant - y_keras| per step (probability; below {ERROR_FLOOR:g} in the first bin)")
    ax.set_ylabel("steps per bin (log scale)")
    steps = hists[0].steps if hists else 0
    ax.set_title(f"quantization error: all {steps:,} steps of every test sequence", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(which="major", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training(path: Path, panels: list[TrainingPanel]) -> None:
    """Training curves and the fine-tuning epochs after them, one panel per quantity."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for curve in panel.curves:
            ax.plot(curve.epochs, curve.values, ".-", label=curve.name)
        if panel.finetune_from is not None:
            ax.axvline(panel.finetune_from, color="grey", ls=":", lw=1, label="fine-tuning starts")
        if panel.log_y:
            ax.set_yscale("log")
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(panel.ylabel)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(directory: Path, manifest: dict, results: dict[str, dict], ref: np.ndarray,
                 outputs: dict[str, np.ndarray], labels: np.ndarray, history: dict | None,
                 lengths: np.ndarray | None = None) -> Path:
    """``report.md`` and its plots; ``ref``/``outputs`` ``[m, T, units]`` over every test
    sequence, ``labels`` ``[m]`` their true class indexes, ``lengths`` ``[m]`` their true
    lengths (None: all T)."""
    directory.mkdir(parents=True, exist_ok=True)
    out = manifest["outputs"][0]
    names = list(out.get("labels") or []) or [str(c) for c in range(max(2, out["units"]))]
    plot_sequences(directory / "sequences.png",
                   sequence_panels(ref, outputs, labels, out["kind"], names, lengths=lengths))
    plot_errors(directory / "quantization_error.png", error_histograms(ref, outputs, lengths=lengths))
    images = ["sequences.png", "quantization_error.png"]
    panels = training_panels(history or {})
    if panels:
        plot_training(directory / "training.png", panels)
        images.append("training.png")
    lines = [
        "# stepwise build report", "",
        f"- model: {len(manifest['states'])} state tensors "
        f"({', '.join(s['name'] + str(s['shape']) for s in manifest['states'])})",
        f"- input: {manifest['input']['features']} features {manifest['input']['feature_names']}",
        f"- output: {manifest['outputs'][0]['kind']} x {manifest['outputs'][0]['units']}",
        f"- default variant: **{manifest['default_variant']}**", "",
        "## Verification (through the runtime engine, against Keras)", "",
        "```", table(results), "```", "",
        *trust(results, labels, lengths),
    ]
    for v, f in results.items():
        spec = manifest["variants"][v]
        lines += [f"### {v}", "",
                  f"- file `{spec['file']}`, {spec['bytes']} bytes, sha256 `{spec['sha256'][:16]}...`",
                  f"- bars: {', '.join(f['bars'].values())}",
                  f"- result: {f['status']}" + (": " + "; ".join(f["failed"]) if f["failed"] else ""),
                  f"- decisive steps: {f['decisive_steps']} of {f['steps']} "
                  f"({f['ambiguous_share'] * 100:.1f} % ambiguous)",
                  f"- quantization: `{json.dumps(spec['quantization'].get('ops', {}))}`"]
        recipe = spec["quantization"].get("recipe")
        if recipe:
            tried = "; ".join(f"{t['recipe']} {t['status']}" + (f" (worst figure {t['worst']:.2f} of its bar)"
                                                                if "worst" in t else "") for t in recipe["tried"])
            lines.append(f"- recipe: **{recipe['name']}** (chosen on the {recipe['selected_on']}; tried: {tried})")
        micro = spec.get("micro") or {}
        if micro:
            lines.append(f"- TFLite Micro: `{json.dumps(micro)}`")
        lines.append("")
    lines += [f"![{name}]({name})" for name in images]
    path = directory / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def trust(results: dict[str, dict], labels: np.ndarray, lengths: np.ndarray | None) -> list[str]:
    """How much the test accuracy says: how many test recordings it counts, and each
    variant's 95 % confidence interval (Wilson) for the accuracy on recordings like them."""
    m = len(labels)
    span = "" if lengths is None or not len(lengths) else \
        f", {int(np.min(lengths))}..{int(np.max(lengths))} samples each, judged at each one's true last sample"
    lines = [f"Test accuracy is measured on **{m} held-out test recordings**{span}; "
             "the range is its 95 % confidence interval (Wilson): the accuracy on new recordings like "
             "these lies there with 95 % confidence.", ""]
    for v, f in results.items():
        if "accuracy_ci95" in f:
            lo, hi = f["accuracy_ci95"]
            lines.append(f"- {v}: accuracy {f['accuracy'] * 100:.1f} % "
                         f"({int(round(f['accuracy'] * m))} of {m}), 95 % CI {lo * 100:.1f} .. {hi * 100:.1f} %")
    if m < 100:
        lines.append(f"- with {m} test recordings one recording moves the figure by {100 / max(m, 1):.1f} points: "
                     "compare builds by the interval, not the figure")
    return lines + [""]


def table(results: dict[str, dict]) -> str:
    """A fixed-width table of the headline figures, one row per variant."""
    head = (f"{'variant':<9} {'max|dy|':>9} {'p99|dy|':>9} {'agree':>8} {'decisive':>8} {'ambig':>6} "
            f"{'acc':>7} {'d acc':>6} {'drift max':>9} {'drift p99':>9} {'drift dec':>9} "
            f"{'step us':>7}  result")
    rows = [head, "-" * len(head)]
    for v, f in results.items():
        rows.append(
            f"{v:<9} {f['max_abs']:>9.2e} {f['p99_abs']:>9.2e} {_pct(f['agreement'], 7)} "
            f"{_pct(f['decisive_agreement'], 7)} {_pct(f['ambiguous_share'], 5, 1)} "
            f"{_pct(f['accuracy'], 6)} {f['accuracy_delta'] * 100:>+6.2f} {f['drift_max_abs']:>9.2e} "
            f"{f['drift_p99_abs']:>9.2e} {_pct(f['drift_decisive_agreement'], 8)} "
            f"{f.get('latency_us', float('nan')):>7.1f}  {f['status']}"
        )
    return "\n".join(rows)


def _pct(v: float, width: int, digits: int = 2) -> str:
    return f"{'n/a':>{width}}%" if np.isnan(v) else f"{v * 100:>{width}.{digits}f}%"


def append_recommendation(directory: Path, recommended: dict[str, dict]) -> None:
    """Add the per-target recommendation to an existing report.md."""
    lines = ["", "## Recommended variant per target", ""]
    lines += [f"- {target}: **{r['variant'] or 'none'}** ({r['why']})" for target, r in recommended.items()]
    with (directory / "report.md").open("a") as f:
        f.write("\n".join(lines) + "\n")


def append_attribution(directory: Path, attribution: dict[str, dict]) -> None:
    """Add where each quantized variant's error comes from (``pipeline.attribution``)."""
    lines = ["", "## Where the quantization error comes from", "",
             "Per layer, its tensor with the largest RMS error relative to the float tensor "
             "(`lsb`: the error in steps of the tensor's own grid; `clamped`: share of float "
             "values outside the range the grid holds).", ""]
    for v, a in attribution.items():
        lines += [f"### {v}", "", "| layer | worst tensor | relative error | lsb | clamped |", "|---|---|---|---|---|"]
        lines += [f"| {r['layer']} | `{r['tensor'][:60]}` | {r['rel_error']:.4f} | {r['lsb']:.2f} | "
                  f"{r['clamped'] * 100:.2f} % |" for r in a["layers"]]
        lines += ["", *_one_at_a_time_lines(a.get("one_at_a_time"))]
    with (directory / "report.md").open("a") as f:
        f.write("\n".join(lines) + "\n")


def _one_at_a_time_lines(found: dict | None) -> list[str]:
    """The simulation's one-at-a-time table (``attribution.one_at_a_time``), if it ran."""
    if not found:
        return []
    base = found["all_rounded"]
    lines = [f"Kept in float one at a time (simulated step graph, {found['steps']} no-reset steps; "
             f"all rounded: RMS |dy| {base['rms']:.4f}, p99 {base['p99']:.4f}). `removed`: the share of "
             "the RMS error that goes away with that layer or tensor in float.", "",
             "| kept in float | RMS \\|dy\\| | p99 \\|dy\\| | removed |", "|---|---|---|---|"]
    for kind in ("layers", "tensors"):
        lines += [f"| {kind[:-1]} `{r['name']}` | {r['rms']:.4f} | {r['p99']:.4f} | {r['removed'] * 100:.0f} % |"
                  for r in found[kind]]
    return lines + [""]
