"""Window-head benchmark: a Flatten model, unchanged, converted and replayed exactly.

The model (LSTM 32 -> LeakyReLU -> Dropout -> LSTM 16 -> Dropout -> LeakyReLU ->
Flatten -> Dense 1 sigmoid over 7 x 3 windows) is trained briefly on the synthetic set,
saved, converted with ``stepwise convert`` and its held-out sequences are replayed back to
back with ``stepwise replay --reset sliding:7`` (real subprocesses). Every output line is
compared with the Keras model on the window ending at that sample (zero-left-padded for
the first six): one table row per variant.

    .venv/bin/python -m bench.window_head [--out DIR] [--epochs N]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

T, F = 7, 3


def mission_model():
    import keras

    L = keras.layers
    return keras.Sequential([
        keras.Input((T, F)),
        L.LSTM(32, return_sequences=True), L.LeakyReLU(), L.Dropout(0.2),
        L.LSTM(16, return_sequences=True), L.Dropout(0.2), L.LeakyReLU(),
        L.Flatten(), L.Dense(1, activation="sigmoid"),
    ])


def train_and_save(work: Path, epochs: int, seed: int = 0) -> tuple[Path, Path, Path]:
    """The trained model, all data and the held-out sequences as files in ``work``."""
    import keras

    from pipeline.config import DataConfig
    from pipeline.data import synthetic

    keras.utils.set_random_seed(seed)
    seqs = synthetic(DataConfig())
    X, y = np.stack(seqs.X).astype(np.float32), np.asarray(seqs.y)
    model = mission_model()
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    cut = int(0.8 * len(X))
    model.fit(X[:cut], y[:cut], epochs=epochs, batch_size=64, verbose=0)
    model.save(work / "mission.keras")
    np.savez(work / "data.npz", X=X, y=y)
    np.savez(work / "held_out.npz", X=X[cut:], y=y[cut:])
    return work / "mission.keras", work / "data.npz", work / "held_out.npz"


def stepwise(*args: str) -> str:
    exe = Path(sys.executable).with_name("stepwise")
    proc = subprocess.run([str(exe), "-q", *args], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"stepwise {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def replay_rows(artifacts: Path, held_out: Path, variant: str) -> list[dict]:
    out = stepwise("replay", "--artifacts", str(artifacts), "--variant", variant,
                   "--reset", f"sliding:{T}", str(held_out))
    return [json.loads(line) for line in out.splitlines()]


def figures(rows: list[dict], ref: np.ndarray) -> dict:
    y = np.array([r["y"][0] for r in rows], np.float64)
    warm = np.array([bool(r.get("warmup")) for r in rows])
    d = np.abs(y - ref)
    cls = (y >= 0.5) == (ref >= 0.5)
    return {"steps": len(rows), "warmup_marked": int(warm.sum()), "warmup_max": float(d[:T - 1].max()),
            "window_max": float(d[T - 1:].max()), "window_p99": float(np.percentile(d[T - 1:], 99)),
            "agreement": float(cls.mean())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="Keep the work folder here.")
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args(argv)
    work = args.out or Path(tempfile.mkdtemp(prefix="stepwise-window-head-"))
    work.mkdir(parents=True, exist_ok=True)
    model_path, data, held_out = train_and_save(work, args.epochs)
    artifacts = work / "artifacts"
    stepwise("convert", str(model_path), "--data", str(data), "--out", str(artifacts))

    import keras

    from pipeline.window import keras_window_outputs

    manifest = json.loads((artifacts / "manifest.json").read_text())
    with np.load(held_out) as z:
        stream = z["X"].reshape(1, -1, F).astype(np.float32)  # back to back, no resets
    mean, std = np.asarray(manifest["input"]["mean"]), np.asarray(manifest["input"]["std"])
    model = keras.models.load_model(model_path, compile=False)
    ref = keras_window_outputs(model, ((stream - mean) / std).astype(np.float32), T)[0, :, 0]
    print(f"window: {manifest['window']}")
    print(f"states: {[(s['name'], s['shape'], s['kind']) for s in manifest['states']]}")
    head = (f"{'variant':<9} {'samples':>8} {'warm-up':>8} {'warm-up max|dy|':>16} "
            f"{'window max|dy|':>15} {'window p99|dy|':>15} {'agree':>8}")
    print(head + "\n" + "-" * len(head))
    for v in manifest["variants"]:
        f = figures(replay_rows(artifacts, held_out, v), ref)
        print(f"{v:<9} {f['steps']:>8} {f['warmup_marked']:>8} {f['warmup_max']:>16.2e} "
              f"{f['window_max']:>15.2e} {f['window_p99']:>15.2e} {f['agreement'] * 100:>7.2f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
