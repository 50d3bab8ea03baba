"""The tables of ``make realdata`` (markdown), from the rows ``bench.realdata.run`` measured."""
from __future__ import annotations


def pct(v) -> str:
    return "-" if v is None else f"{v * 100:.1f}"


def _variant(row: dict, v: str) -> str:
    f = row.get("heldout", {}).get(v)
    if not f:
        return "-"
    return f"{pct(f['accuracy'])} ({f['status']})"


def _bar(row: dict, bar_points: float) -> str:
    b = row["bar"]
    if b["gap_points"] is None:
        return "MISS (no figure)"
    return f"{'pass' if b['pass'] else 'MISS'} ({b['gap_points']:+.1f} pt)"


def _ours(row: dict) -> str:
    """stepwise's held-out float32 figure, or why there is none."""
    if "heldout" in row:
        return pct(row["heldout"]["float32"]["accuracy"])
    if "build" not in row:
        return "not run"
    if row["build"]["returncode"] != 0:
        return f"build failed: {row['build'].get('last_line', '')[:120]}"
    return "no figure (see errors)"


def main_table(result: dict) -> list[str]:
    head = ("| data set | recordings (train + held out) | length | channels | classes | stepwise defaults | "
            "hand-tuned LSTM | int16x8 | int8 | bar: within 2 pt |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in result["rows"]:
        i = r["info"]
        length = str(i["length_min"]) if i["length_min"] == i["length_max"] else f"{i['length_min']}..{i['length_max']}"
        ours = _ours(r)
        lines.append(
            f"| {i['name']} | {i['train_recordings']} + {i['test_recordings']} | {length} | {i['channels']} | "
            f"{i['classes']} | {ours} | {pct(r.get('baseline', {}).get('accuracy'))} | {_variant(r, 'int16x8')} | "
            f"{_variant(r, 'int8')} | {_bar(r, result['bar_points'])} |")
    return lines


def detail_table(result: dict) -> list[str]:
    head = ("| data set | build's own test split: float32 / int16x8 / int8 (recordings) | build s | "
            "hand-tuned: lr chosen, best epoch, val acc | held out |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in result["rows"]:
        i, b = r["info"], r.get("build_split")
        own = "-" if not b else (" / ".join(pct(b.get(v, {}).get("accuracy")) for v in ("float32", "int16x8", "int8"))
                                 + f" ({b['test_recordings']})")
        base = r.get("baseline")
        if base:
            chosen = next(f for f in base["fits"] if f["learning_rate"] == base["chosen_learning_rate"])
            tuned = f"{base['chosen_learning_rate']:g}, {chosen['best_epoch']}, {pct(chosen['val_accuracy'])}"
        else:
            tuned = "-"
        secs = r.get("build", {}).get("seconds")
        lines.append(f"| {i['name']} | {own} | {'-' if secs is None else f'{secs:.0f}'} | {tuned} | {i['split']} |")
    return lines


def markdown(result: dict) -> str:
    m = result["meta"]
    lines = ["# stepwise on real recordings (`make realdata`)", "",
             f"Measured {m['date']} at {m['commit']}{' (with local changes)' if m['dirty'] else ''} "
             f"({m['subject']}); TensorFlow {m['tensorflow']}, Keras {m['keras']}.", "",
             "Held-out accuracy (%) at each recording's last step; int16x8/int8: the same for the "
             "quantized step models, with their verdict against the bars.", "",
             *main_table(result), "", *detail_table(result), ""]
    errors = [f"- {r['info']['name']} {step}: {e}" for r in result["rows"] for step, e in r.get("errors", {}).items()]
    if errors:
        lines += ["Errors:", "", *errors, ""]
    lines += ["Sources:", ""]
    lines += [f"- {r['info']['name']}: {r['info']['what']}; `{r['info']['source']}` "
              f"(sha256 {r['info']['wheel_sha256'][:16]}...)" for r in result["rows"]]
    return "\n".join(lines) + "\n"
