"""A build on recordings of different lengths: trained with the padding masked, verified
and reported at each recording's true length, with the test figure's confidence interval."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from pipeline import build as build_mod
from pipeline.artifacts import load_keras_model
from pipeline.config import load_config
from pipeline.verify import wilson_interval
from runtime.datafile import Sequences, read_sequences

TINY = {"data": {"seed": 3}, "model": {"units": [8]},
        "train": {"epochs": 40, "qat_epochs": 3, "warmup_epochs": 2, "learning_rate": 0.01},
        "quantize": {"variants": ["float32", "int8"], "recipes": ["per_gate"], "calibration_sequences": 40,
                     "calibration_stream_steps": 200, "search_stream_steps": 200},
        "verify": {"drift_steps": 300, "latency_steps": 50}}


def _recordings(m=80, seed=0) -> Sequences:
    """Class 1: channel 0 rises over the recording, class 0: it falls; 4..15 samples."""
    rng = np.random.default_rng(seed)
    y = np.arange(m) % 2
    X = []
    for i in range(m):
        n = int(rng.integers(4, 16))
        x = rng.normal(0, 0.3, (n, 2)) + [3.0, -1.0]
        x[:, 0] += np.linspace(-1, 1, n) * (1 if y[i] else -1)
        X.append(x.astype(np.float32))
    return Sequences(X=tuple(X), y=y.astype(np.int64), feature_names=("a", "b"), source="lengths.npz")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lengths")
    seqs = _recordings()
    lengths = np.array([len(x) for x in seqs.X])
    padded = np.zeros((len(seqs), lengths.max(), 2), np.float32)
    for i, x in enumerate(seqs.X):
        padded[i, : len(x)] = x
    path = tmp / "lengths.npz"
    np.savez(path, X=padded, y=seqs.y, lengths=lengths)
    mp = pytest.MonkeyPatch()
    if len(read_sequences(path).lengths()) == 1:  # a reader without 'lengths': hand the recordings over
        mp.setattr(build_mod, "load_training_data", lambda _path, _cfg: seqs)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("pipeline").addHandler(handler)
    logging.getLogger("pipeline").setLevel(logging.INFO)
    try:
        build_mod.build_artifacts(load_config(**TINY), tmp / "out", data=str(path))
    finally:
        logging.getLogger("pipeline").removeHandler(handler)
        mp.undo()
    return tmp / "out", [r.getMessage() for r in records]


def test_the_test_set_keeps_each_recordings_true_length(built):
    out, _ = built
    with np.load(out / "test_data.npz", allow_pickle=False) as z:
        X, lengths = z["X"], z["lengths"]
    assert X.shape[1] == 15 and lengths.min() < 15 and len(lengths) == len(X)
    inside = np.arange(X.shape[1])[None] < lengths[:, None]
    assert np.all(X[~inside] == 0.0) and np.all(np.abs(X[inside][:, 0]) > 0)


def test_accuracy_is_the_models_answer_at_each_recordings_true_last_sample(built):
    """Checked against the Keras model run on each recording alone (no padding at all)."""
    out, _ = built
    manifest = json.loads((out / "manifest.json").read_text())
    model = load_keras_model(out / "model.keras")
    mean, std = np.array(manifest["input"]["mean"]), np.array(manifest["input"]["std"])
    with np.load(out / "test_data.npz", allow_pickle=False) as z:
        X, y, lengths = z["X"], z["y"], z["lengths"]
    alone = [float(model(((x[:n] - mean) / std)[None].astype(np.float32), training=False)[0, 0])
             for x, n in zip(X, lengths)]
    expected = float(np.mean((np.array(alone) >= 0.5) == y))
    f = manifest["variants"]["float32"]["verification"]
    assert f["accuracy"] == pytest.approx(expected) and f["keras_accuracy"] == pytest.approx(expected)
    assert expected >= 0.8  # the padded training learnt the task
    assert f["steps"] == int(lengths.sum())  # every true step compared, no padded one
    assert f["test_sequences"] == len(y)
    assert f["accuracy_ci95"] == pytest.approx(list(wilson_interval(expected, len(y))))


def test_the_report_says_how_much_to_trust_the_test_figure(built):
    out, messages = built
    f = json.loads((out / "manifest.json").read_text())["variants"]["float32"]["verification"]
    lo, hi = f["accuracy_ci95"]
    text = (out / "report" / "report.md").read_text()
    with np.load(out / "test_data.npz", allow_pickle=False) as z:
        n, short, long = len(z["y"]), int(z["lengths"].min()), int(z["lengths"].max())
    assert (f"Test accuracy is measured on **{n} held-out test recordings**, {short}..{long} samples each, "
            "judged at each one's true last sample") in text
    assert (f"- float32: accuracy {f['accuracy'] * 100:.1f} % ({round(f['accuracy'] * n)} of {n}), "
            f"95 % CI {lo * 100:.1f} .. {hi * 100:.1f} %") in text
    assert "quantization-aware fine-tuning skipped: it trains on full windows, and these recordings have " \
           "different lengths" in messages
    assert any(m.startswith("recordings of 4..15 samples: zero-padded after their end to 15") for m in messages)


def test_wilson_interval_values():
    lo, hi = wilson_interval(0.5, 8)
    assert (round(lo, 4), round(hi, 4)) == (0.2152, 0.7848)
    assert wilson_interval(1.0, 40)[1] == 1.0 and round(wilson_interval(1.0, 40)[0], 4) == 0.9124
    assert wilson_interval(0.0, 0) == (0.0, 1.0)
