"""Side-by-side table of two quantbench runs (e.g. the fixed recipe and the search).

    python -m bench.quantbench_compare BEFORE.json[,MORE.json] AFTER.json[,MORE.json]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(arg: str) -> dict[str, dict]:
    rows = {}
    for part in arg.split(","):
        for r in json.loads(Path(part).read_text()):
            if "error" not in r:
                rows[r["name"]] = r
    return rows


def _cell(f: dict) -> str:
    dec = "n/a" if f["decisive_agreement"] != f["decisive_agreement"] else f"{f['decisive_agreement'] * 100:.2f}"
    return (f"{f['status']} | {dec} | {f['p99_abs']:.3f} / {f['max_abs']:.3f} | "
            f"{f['drift_p99_abs']:.3f} / {f['drift_max_abs']:.3f} | {f['accuracy_delta'] * 100:+.1f}")


def compare(before: dict[str, dict], after: dict[str, dict]) -> str:
    head = ("| model | variant | before: result | decisive % | p99 / max dy | drift p99 / max | d acc pt "
            "| after: recipe | fine-tuned | result | decisive % | p99 / max dy | drift p99 / max | d acc pt |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name in list(dict.fromkeys([*before, *after])):
        for v in ("int16x8", "int8"):
            b = before.get(name, {}).get("variants", {}).get(v)
            a = after.get(name, {}).get("variants", {}).get(v)
            left = _cell(b) if b else "not run | | | |"
            right = f"{a['recipe']} | {a['finetuned']} | {_cell(a)}" if a else "not run | | | | | |"
            lines.append(f"| {name} | {v} | {left} | {right} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(compare(_load(sys.argv[1]), _load(sys.argv[2])))
