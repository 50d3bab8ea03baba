"""``stepwise build`` as a real process on user files: a windowed continuous log with text
labels and a timestamp column, and a semicolon file with a BOM, quoted header and other
label and sequence columns. The manifest says what the files meant; replay prints the
class names."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.contract import load_contract

# Smaller than tests/tiny.toml: these builds test the data path, so float32 only.
TINY = """
[model]
units = [8]
[train]
epochs = 3
qat_epochs = 0
verbose = 0
[quantize]
variants = ["float32"]
calibration_sequences = 40
calibration_stream_steps = 200
[verify]
drift_steps = 300
latency_steps = 100
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "data.toml"
    path.write_text(TINY)
    return path


def _stepwise(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "stepwise_cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def _log(path: Path, rows: int = 1200, seed: int = 0) -> Path:
    """A continuous log: ISO timestamps, 40-row stretches of idle (noise) and shake (a fast
    sine on ax)."""
    rng = np.random.default_rng(seed)
    lines = ["timestamp,ax,ay,label"]
    for i in range(rows):
        shake = (i // 40) % 2 == 1
        ax = (np.sin(i * 1.3) * 2 if shake else 0.0) + rng.normal(0, 0.3)
        lines.append(f"2024-05-01T12:{i // 60 % 60:02d}:{i % 60:02d}Z,{ax:.4f},{rng.normal(0, 0.3):.4f},"
                     f"{'shake' if shake else 'idle'}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def windowed(tmp_path_factory, config):
    tmp = tmp_path_factory.mktemp("windowed")
    data = _log(tmp / "log.csv")
    res = _stepwise("-q", "build", "--data", data, "--config", config, "--window", 20, "--stride", 10,
                    "--window-label", "majority", "--out", tmp / "out", cwd=tmp)
    return tmp, res


def test_windowed_text_label_log_builds_with_class_names_and_window_in_the_manifest(windowed):
    tmp, res = windowed
    assert res.returncode == 0, res.stderr[-3000:]
    c = load_contract(tmp / "out")
    assert c.input.feature_names == ("ax", "ay")  # the timestamp column is no feature
    assert c.output.labels == ("idle", "shake")
    assert (c.window.length, c.window.stride, c.window.reset) == (20, 10, "sliding:20")
    manifest = json.loads((tmp / "out" / "manifest.json").read_text())
    assert manifest["window"]["stride"] == 10 and manifest["outputs"][0]["labels"] == ["idle", "shake"]
    assert 'window = 20' in (tmp / "out" / "config.toml").read_text()


def test_replay_prints_the_class_names(windowed):
    tmp, res = windowed
    assert res.returncode == 0, res.stderr[-3000:]
    out = _stepwise("replay", "--artifacts", tmp / "out", tmp / "log.csv", cwd=tmp)
    assert out.returncode == 0, out.stderr[-2000:]
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(records) == 1200
    output = load_contract(tmp / "out").output
    assert {r["label"] for r in records} <= {"idle", "shake"}
    assert [r["label"] for r in records] == [output.label_of(np.array(r["y"])) for r in records]


def test_semicolon_bom_quoted_file_with_other_column_names_builds(tmp_path, config):
    rng = np.random.default_rng(1)
    lines = ['"Rec";"Millis";"AX";"AY";"Class"']
    for r in range(90):
        label = r % 2
        for t in range(8):
            ax = rng.normal(0, 0.3) + (1.5 if label and t == 3 else 0.0)
            lines.append(f"r{r};{t * 10};{ax:.4f}".replace(".", ",") + f";{rng.normal():.4f};{label}".replace(".", ","))
    data = tmp_path / "excel.csv"
    data.write_bytes(b"\xef\xbb\xbf" + ("\r\n".join(lines) + "\r\n").encode())
    res = _stepwise("-q", "build", "--data", data, "--config", config, "--label-column", "class",
                    "--sequence-column", "rec", "--features", "ay,ax", "--out", tmp_path / "out", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    c = load_contract(tmp_path / "out")
    assert c.input.feature_names == ("AY", "AX")  # the file's spelling, no BOM, the order asked for
    assert c.output.labels == ("0", "1") and c.window.length == 8 and c.window.stride is None


def test_serve_prints_the_class_names(windowed):
    from tests.runtime.test_serve import Port, Serve

    tmp, res = windowed
    assert res.returncode == 0, res.stderr[-3000:]
    port = Port(tmp / "ttyDEVICE")
    d = Serve(tmp / "out", port.path, tmp / "state")
    port.send(b"\nay,ax\n" + b"".join(f"0.1,{np.sin(t * 1.3) * 2:.4f}\n".encode() for t in range(30)))
    d.wait_records(30)
    assert d.stop() == 0
    labels = [r["label"] for r in d.records]
    assert set(labels) <= {"idle", "shake"}
    output = load_contract(tmp / "out").output
    assert labels == [output.label_of(np.array(r["y"])) for r in d.records]
