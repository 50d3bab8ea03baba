"""``make quantbench``: convert every model of the zoo and judge each variant by the bars.

For each zoo entry (``bench.zoo``): train it once with plain Keras (cached), convert it
the way ``stepwise convert`` does, and print a row per variant: the recipe it was
quantized with, raw and decisive agreement (and the share of ambiguous steps), the
final-step accuracy delta against Keras, p99 and max |dy| over every prefix of the test
windows and over a 10,000-step stream with no reset, whether the model was fine-tuned,
and the verdict. The bench's own bars close the table: int16x8 passes on every judgeable
model, int8 on at least 90 % of them, the accuracy delta within 0.5 point on all.

    python -m bench.quantbench [--cache build/quantbench] [--only NAME ...] [--fixed-recipe] [--no-finetune]
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from bench import zoo
from pipeline.build import package

log = logging.getLogger("bench.quantbench")
VARIANTS = ("int16x8", "int8")


FIXED_RECIPE = {"recipes": ["per_gate"], "search": "off"}  # one fixed recipe, no search


def run_entry(entry: zoo.Entry, cache: Path, quantize: dict | None = None, finetune: bool = True) -> dict:
    t0 = time.monotonic()
    model, sp = zoo.trained(entry, cache)
    cfg = zoo.build_config(entry, quantize)
    # What `stepwise convert` does (fine-tuning on, unless the baseline or --no-finetune is asked for).
    finetune = finetune and entry.default_build_seed is None and quantize is None
    result = package(model, sp, cfg, cache / "artifacts" / entry.name, None, t0, finetune=finetune)
    rows = {}
    for v, spec in result.contract.variants.items():
        f = result.results[v]
        q = spec.quantization or {}
        rows[v] = {k: f[k] for k in ("status", "agreement", "decisive_agreement", "ambiguous_share",
                                     "accuracy", "keras_accuracy", "accuracy_delta", "p99_abs", "max_abs",
                                     "drift_p99_abs", "drift_max_abs", "drift_decisive_agreement", "failed")}
        rows[v]["recipe"] = q.get("recipe", {}).get("name", "per_gate/minmax") if v != "float32" else "-"
        rows[v]["tried"] = q.get("recipe", {}).get("tried", [])
        rows[v]["finetuned"] = _finetuned(entry, q)
    return {"name": entry.name, "model": zoo.describe(entry, model), "classes": sp.classes,
            "steps": sp.steps, "test_sequences": len(sp.y_test), "seconds": round(time.monotonic() - t0, 1),
            "variants": rows}


def _finetuned(entry: zoo.Entry, q: dict) -> str:
    if entry.default_build_seed is not None:
        return "in build"
    ft = q.get("finetune") or {}
    if not ft.get("ran"):
        if ft.get("why", "").startswith("plain quantization passes"):
            return "not needed"
        return "no" if ft.get("why") == "turned off" or not ft else "n/a"
    return "yes" if ft.get("kept") else "tried, not kept"


def _pct(v: float) -> str:
    return "n/a" if v is None or np.isnan(v) else f"{v * 100:.2f}"


def table(results: list[dict]) -> str:
    head = ("| model | variant | recipe | result | agree % | decisive % (ambig %) | d acc pt | p99 dy | "
            "max dy | drift p99 | drift max | drift dec % | fine-tuned |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['name']} | all | - | ERROR: {r['error'][:120]} |" + " |" * 9)
            continue
        for v, f in r["variants"].items():
            if v == "float32":
                continue
            rows.append(
                f"| {r['name']} | {v} | {f['recipe']} | {f['status']} | {_pct(f['agreement'])} | "
                f"{_pct(f['decisive_agreement'])} ({f['ambiguous_share'] * 100:.1f}) | "
                f"{f['accuracy_delta'] * 100:+.2f} | {f['p99_abs']:.4f} | {f['max_abs']:.4f} | "
                f"{f['drift_p99_abs']:.4f} | {f['drift_max_abs']:.4f} | {_pct(f['drift_decisive_agreement'])} | "
                f"{f['finetuned']} |")
    return "\n".join(rows)


def summary(results: list[dict]) -> list[str]:
    """The bench's bars, each with what it measured."""
    status = lambda r, v: r["variants"][v]["status"] if "error" not in r else "error"  # noqa: E731
    judgeable = [r for r in results if status(r, "int8") != "not judgeable"]
    n = len(judgeable)
    i16 = sum(status(r, "int16x8") == "pass" for r in judgeable)
    i8 = sum(status(r, "int8") == "pass" for r in judgeable)
    acc = [r["name"] + f" {v}" for r in results for v in VARIANTS
           if "error" in r or r["variants"][v]["accuracy_delta"] < -0.005 - 1e-9]
    skipped = [r["name"] for r in results if r not in judgeable]
    return [
        f"int16x8 passes on every judgeable model: {i16}/{n} {'pass' if i16 == n else 'MISS'}",
        f"int8 passes on >= 90 % of judgeable models: {i8}/{n} = {i8 / max(1, n) * 100:.0f} % "
        f"{'pass' if i8 >= 0.9 * n else 'MISS'}",
        f"accuracy within 0.5 point of float on every model and variant: "
        f"{'pass' if not acc else 'MISS (' + ', '.join(acc) + ')'}",
        f"not judgeable (all outputs at the threshold): {', '.join(skipped) or 'none'}",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path("build/quantbench"))
    ap.add_argument("--only", nargs="*", default=None, help="entry names (default: all)")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default: CACHE/quantbench.json)")
    ap.add_argument("--fixed-recipe", action="store_true",
                    help="quantize every model with the one fixed per-gate recipe (no search): the baseline")
    ap.add_argument("--no-finetune", action="store_true",
                    help="the recipe search without fine-tuning (what `stepwise convert --no-finetune` does)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    results, text = [], ""
    for entry in zoo.entries():
        if args.only and entry.name not in args.only:
            continue
        log.info("%s ...", entry.name)
        try:
            results.append(run_entry(entry, args.cache, FIXED_RECIPE if args.fixed_recipe else None,
                                     finetune=not args.no_finetune))
        except Exception as e:  # one model's failure is a result of the bench, not its end
            log.exception("%s failed", entry.name)
            results.append({"name": entry.name, "error": f"{type(e).__name__}: {e}"})
            continue
        log.info("%s done in %.0f s", entry.name, results[-1]["seconds"])
        text = write(results, args.out or args.cache / "quantbench.json")  # after each model
    print(text)
    return 0


def write(results: list[dict], out: Path) -> str:
    """``out`` (JSON) and its ``.md`` twin (table, bench bars, the models); the text."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=float) + "\n")
    text = "\n".join([table(results), "", *summary(results), "",
                      *[f"- {r['name']}: {r['model']} ({r['classes']} classes, {r['test_sequences']} test "
                        f"sequences, {r['seconds']:.0f} s)" for r in results if "error" not in r]])
    out.with_suffix(".md").write_text(text + "\n")
    return text


if __name__ == "__main__":
    raise SystemExit(main())
