"""``stepwise state show|clear`` through the real click program (``stepwise_cli.main.cli``)."""
from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pytest
from click.testing import CliRunner

from stepwise_cli.main import cli
from runtime.contract import StateSpec
from runtime.snapshot import StateSnapshot
from runtime.store import CURRENT, PREVIOUS, StateStore

SHA = hashlib.sha256(b"model A").hexdigest()
SPECS = (StateSpec("lstm_h", "lstm_h", "lstm_h_out", (8,), "lstm", "h"),
         StateSpec("lstm_c", "lstm_c", "lstm_c_out", (4,), "lstm", "c"))
H = np.arange(16, dtype=np.float32).reshape(2, 8) / 4
C = np.full((2, 4), -0.5, np.float32)


def write_state(folder, samples=1234, sha=SHA, age=7260.0):
    snap = StateSnapshot(states={"lstm_h": H, "lstm_c": C}, steps=np.array([3, 17]),
                         samples_seen=samples, last_frame_seq=41, timestamp=time.time() - age,
                         extra={"dropped": 2})
    assert StateStore(folder, sha, SPECS).checkpoint(snap)


def write_manifest(folder, sha=SHA, c_units=4):
    states = [{"name": s.name, "input": s.input, "output": s.output, "layer": s.layer,
               "kind": s.kind, "shape": [c_units if s.kind == "c" else s.shape[0]]}
              for s in SPECS]
    manifest = {
        "schema_version": 1, "signature_key": "step",
        "input": {"name": "x", "features": 3, "feature_names": ["a", "b", "c"],
                  "mean": [0, 0, 0], "std": [1, 1, 1]},
        "states": states,
        "outputs": [{"name": "y", "kind": "sigmoid", "units": 1, "labels": ["0", "1"]}],
        "window": {"length": 7, "reset": "window:7"},
        "variants": {"float32": {"file": "f.tflite", "sha256": hashlib.sha256(b"f").hexdigest(),
                                 "bytes": 1, "tensors": {}},
                     "int8": {"file": "i.tflite", "sha256": sha, "bytes": 1, "tensors": {}}},
        "default_variant": "float32",
    }
    folder.mkdir(exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def run(*args, env=None):
    return CliRunner().invoke(cli, ["state", *args], env=env, catch_exceptions=False)


def test_show_prints_counters_age_hash_norms_and_steps(tmp_path):
    write_state(tmp_path / "st")
    result = run("show", "--state-dir", str(tmp_path / "st"), "--artifacts", str(tmp_path / "no"))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"model sha256:    {SHA}\n" in out
    assert "samples seen:    1234\n" in out and "last frame seq:  41\n" in out
    assert "steps:           lane 0: 3, lane 1: 17\n" in out
    assert "(2 h 1 min ago)" in out and "counter:         dropped = 2\n" in out
    assert "unknown (no manifest" in out
    h_all, h0, h1 = np.linalg.norm(H), np.linalg.norm(H[0]), np.linalg.norm(H[1])
    assert f"  lstm_h [8]  {h_all:.6g} ({h0:.6g}, {h1:.6g})\n" in out
    assert f"  lstm_c [4]  {np.linalg.norm(C):.6g} (1, 1)\n" in out
    assert f"older:           {tmp_path / 'st' / PREVIOUS}" not in out  # one checkpoint only


def test_show_json_is_machine_readable(tmp_path):
    write_state(tmp_path / "st", samples=5)
    write_state(tmp_path / "st", samples=9)
    result = run("show", "--json", "--state-dir", str(tmp_path / "st"))
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    c = info["checkpoint"]
    assert (c["samples_seen"], c["steps"], c["lanes"], c["model_sha256"]) == (9, [3, 17], 2, SHA)
    assert c["age_seconds"] == pytest.approx(7260, abs=60)
    tensors = {t["name"]: t for t in c["tensors"]}
    assert tensors["lstm_h"]["l2"] == pytest.approx(float(np.linalg.norm(H)))
    assert tensors["lstm_h"]["l2_per_lane"] == pytest.approx([np.linalg.norm(H[0]),
                                                              np.linalg.norm(H[1])])
    assert [f["samples_seen"] for f in info["files"]] == [9, 5]
    assert info["manifest"] is None


def test_show_says_whether_the_checkpoint_fits_the_current_model(tmp_path):
    write_state(tmp_path / "st")
    args = ["show", "--state-dir", str(tmp_path / "st"), "--artifacts", str(tmp_path / "a")]
    write_manifest(tmp_path / "a")
    assert f"current model:   yes, variant int8 of {tmp_path / 'a' / 'manifest.json'}" in run(
        *args).stdout
    write_manifest(tmp_path / "a", sha=hashlib.sha256(b"rebuilt").hexdigest())
    out = run(*args).stdout
    assert f"NO (checkpoint is for model {SHA[:12]}..., not variant float32" in out
    write_manifest(tmp_path / "a", c_units=6)
    info = json.loads(run(*args, "--json").stdout)
    assert info["checkpoint"]["match"]["matches"] is False
    assert info["checkpoint"]["match"]["reason"] == "wrong-shape"


def test_state_dir_defaults_to_systemd_then_to_cwd(tmp_path, monkeypatch):
    write_state(tmp_path / "from-systemd", samples=77)
    result = run("show", env={"STATE_DIRECTORY": f"{tmp_path / 'from-systemd'}:/other"})
    assert "samples seen:    77\n" in result.stdout
    monkeypatch.chdir(tmp_path)
    write_state("state", samples=88)
    result = run("show", env={"STATE_DIRECTORY": None})
    assert "state dir:       state\n" in result.stdout and "samples seen:    88\n" in result.stdout


def test_show_reports_a_corrupt_checkpoint_without_moving_it(tmp_path):
    folder = tmp_path / "st"
    write_state(folder)
    data = bytearray((folder / CURRENT).read_bytes())
    data[-1] ^= 0x40
    (folder / CURRENT).write_bytes(data)
    result = run("show", "--state-dir", str(folder))
    assert result.exit_code == 5
    assert f"unusable:        {folder / CURRENT} (crc-mismatch: stored CRC32" in result.stdout
    assert "no valid checkpoint in" in result.output
    assert (folder / CURRENT).read_bytes() == data and not (folder / "rejected").exists()


def test_show_without_state(tmp_path):
    result = run("show", "--state-dir", str(tmp_path / "missing"))
    assert result.exit_code == 0
    assert "none (the directory does not exist)" in result.stdout
    (tmp_path / "file").write_text("x")
    result = run("show", "--state-dir", str(tmp_path / "file"))
    assert result.exit_code == 2 and "is not a directory" in result.output


def test_clear_moves_the_checkpoints_aside_and_says_where(tmp_path):
    folder = tmp_path / "st"
    write_state(folder)
    write_state(folder, samples=2)
    before = {name: (folder / name).read_bytes() for name in (CURRENT, PREVIOUS)}
    result = run("clear", "--state-dir", str(folder))
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    for line, name in zip(lines, (CURRENT, PREVIOUS)):
        src, dest = line.removeprefix("moved ").split(" -> ")
        assert src == str(folder / name) and dest.startswith(str(folder / "cleared" / name))
        assert open(dest, "rb").read() == before[name]
    assert not (folder / CURRENT).exists() and not (folder / PREVIOUS).exists()
    assert StateStore(folder, SHA, SPECS).restore() is None
    assert run("clear", "--state-dir", str(folder)).stdout == f"nothing to clear in {folder}\n"
    assert "cleared:         2 in" in run("show", "--state-dir", str(folder)).stdout
