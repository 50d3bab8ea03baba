"""Where the zoo's quantized variants lose precision: each layer and tensor kept in float
one at a time in the simulated step graph (``pipeline.attribution.one_at_a_time``).

For each zoo entry (``bench.zoo``, trained once and cached like ``make quantbench``) and
each variant, the step graph runs no-reset streams of test windows (8 lanes of
``--steps`` steps: the states just after a reset and those a long stream drifts into)
with every tensor rounded as the converter would, then with one layer, then one tensor
or kernel (``0.W``) in float. Prints, per model and variant, the all-rounded p99 |dy|
and the layers and tensors that remove the most of the error; writes JSON.

    python -m bench.quantattrib [--cache build/quantbench] [--only NAME ...] [--steps 2500]
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from bench import zoo
from pipeline import convert as conv
from pipeline.attribution import one_at_a_time, stream_windows

log = logging.getLogger("bench.quantattrib")
BITS = {"int16x8": 16, "int8": 8}


def run(entry: zoo.Entry, cache: Path, steps: int) -> dict:
    model, sp = zoo.trained(entry, cache)
    cfg = zoo.build_config(entry)
    cal = conv.calibration_set(sp.X_train, cfg.quantize)
    streams = stream_windows(sp.X_test, 8, steps, seed=3)
    return {v: one_at_a_time(model, cal, streams, bits, top=6) for v, bits in BITS.items()}


def lines(name: str, found: dict) -> list[str]:
    out = []
    for v, f in found.items():
        if f is None:
            out.append(f"| {name} | {v} | not simulated | | |")
            continue
        top = lambda rows: ", ".join(f"`{r['name']}` {r['removed'] * 100:.0f} %" for r in rows[:3])  # noqa: E731
        out.append(f"| {name} | {v} | {f['all_rounded']['p99']:.4f} | {top(f['layers'])} | {top(f['tensors'])} |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path("build/quantbench"))
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--steps", type=int, default=2500)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    rows = ["| model | variant | p99 \\|dy\\| all rounded | layers in float: error removed | "
            "tensors in float: error removed |", "|---|---|---|---|---|"]
    results = {}
    for entry in zoo.entries():
        if (args.only and entry.name not in args.only) or entry.default_build_seed is not None and not args.only:
            continue
        results[entry.name] = run(entry, args.cache, args.steps)
        rows += lines(entry.name, results[entry.name])
        (args.cache / "quantattrib.json").write_text(json.dumps(results, indent=1) + "\n")
        print(rows[-2], rows[-1], sep="\n", flush=True)
    print("\n".join(rows))
    (args.cache / "quantattrib.md").write_text("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
