"""``artifacts/report/``: report.md with the verification table and PNG plots."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402



def plot_sequences(path: Path, ref: np.ndarray, outputs: dict[str, np.ndarray], count: int = 4) -> None:
    """Per-step output (unit 0) of ``count`` test sequences: Keras vs each variant."""
    count = min(count, ref.shape[0])
    fig, axes = plt.subplots(1, count, figsize=(3.2 * count, 3), sharey=True, squeeze=False)
    steps = np.arange(1, ref.shape[1] + 1)
    for i, ax in enumerate(axes[0]):
        ax.plot(steps, ref[i, :, 0], "k-", lw=2.5, label="keras", alpha=0.6)
        for (name, ys), style in zip(outputs.items(), ("o--", "s:", "^-.")):
            ax.plot(steps, ys[i, :, 0], style, ms=4, label=name)
        ax.set_title(f"test sequence {i}")
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("output y[0]")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_errors(path: Path, ref: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
    """Distribution of |dy| per quantized variant (log scale)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, ys in outputs.items():
        if name == "float32":
            continue
        d = np.abs(ys - ref).reshape(-1) + 1e-9
        ax.hist(d, bins=np.logspace(-9, 0, 60), alpha=0.6, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("|y_variant - y_keras| per step")
    ax.set_ylabel("steps")
    ax.legend()
    ax.set_title("quantization error, every prefix of every test sequence")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training(path: Path, history: dict[str, list[float]]) -> None:
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    for key, ax in (("loss", a), ("accuracy", b)):
        if key in history:
            ax.plot(history[key], label="train")
        if f"val_{key}" in history:
            ax.plot(history[f"val_{key}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(directory: Path, manifest: dict, results: dict[str, dict],
                 ref: np.ndarray, outputs: dict[str, np.ndarray], history: dict | None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    plot_sequences(directory / "sequences.png", ref, outputs)
    plot_errors(directory / "quantization_error.png", ref, outputs)
    images = ["sequences.png", "quantization_error.png"]
    if history:
        plot_training(directory / "training.png", history)
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
        lines.append("")
    with (directory / "report.md").open("a") as f:
        f.write("\n".join(lines) + "\n")
