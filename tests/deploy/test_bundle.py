"""``make bundle``: the archive installs on Python 3.13 with no index and replays the test
artifacts within 1e-6 of the Python 3.11 device environment (tflite-runtime)."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from pathlib import Path

DEVICE_PYTHON = Path(__file__).resolve().parents[2] / ".venv-device" / "bin" / "python"


def _replay(stepwise: list[str], artifacts, data, variant: str) -> list[dict]:
    proc = subprocess.run([*stepwise, "replay", "--artifacts", str(artifacts), "--variant", variant, str(data)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_archive_holds_wheels_hashes_artifacts_and_deploy_files(bundle_install):
    b = bundle_install.bundle
    assert sorted(p.name for p in (b / "deploy").iterdir()) == [
        "99-stepwise.rules", "stepwise.logrotate", "stepwise.service"]
    assert (b / "install.sh").stat().st_mode & 0o111
    assert (b / "artifacts" / "manifest.json").exists()
    manifest = json.loads((b / "artifacts" / "manifest.json").read_text())
    assert sorted(p.name for p in (b / "artifacts").iterdir()) == sorted(
        ["manifest.json", *(v["file"] for v in manifest["variants"].values())])
    reqs = (b / "requirements.txt").read_text()
    wheels = sorted(p.name for p in (b / "wheels").iterdir())
    assert any(w.startswith("tflite_runtime-2.14.0-cp311") for w in wheels)
    assert any(w.startswith("ai_edge_litert-") and "-cp313-" in w for w in wheels)
    pinned = [line for line in reqs.splitlines() if line and not line.startswith((" ", "#"))]
    assert len(pinned) == len({w.split("-")[0] + w.split("-")[1] for w in wheels})
    assert all("==" in line for line in pinned) and reqs.count("--hash=sha256:") == len(wheels)


def test_installed_venv_is_a_device_install(bundle_install):
    listed = subprocess.run([str(bundle_install.python), "-m", "pip", "list", "--format=json"],
                            capture_output=True, text=True, timeout=60, check=True).stdout
    names = {p["name"].lower(): p["version"] for p in json.loads(listed)}
    assert names["stepwise-edge"] == "0.1.0" and "ai-edge-litert" in names
    assert "tensorflow" not in names and "tflite-runtime" not in names and names["numpy"].startswith("2.")
    build = subprocess.run([str(bundle_install.stepwise), "build"], capture_output=True, text=True, timeout=60)
    assert build.returncode == 2 and build.stderr.count("\n") == 1 and "Traceback" not in build.stderr


@pytest.mark.parametrize("variant, tolerance", [("float32", 1e-6), ("int16x8", 1e-3), ("int8", 1e-2)])
def test_replay_matches_the_311_device_environment(bundle_install, tiny_artifacts, variant, tolerance):
    data = tiny_artifacts / "test_data.npz"
    ours = _replay([str(bundle_install.stepwise)], bundle_install.prefix / "artifacts", data, variant)
    ref = _replay([str(DEVICE_PYTHON), "-m", "stepwise_cli"], tiny_artifacts, data, variant)
    assert len(ours) == len(ref) > 0
    assert [(r["i"], r["seq"], r["step"]) for r in ours] == [(r["i"], r["seq"], r["step"]) for r in ref]
    diff = np.abs(np.array([r["y"] for r in ours]) - np.array([r["y"] for r in ref])).max()
    assert diff <= tolerance, f"{variant}: max |dy| {diff:.3g} between Python 3.13 (bundle) and 3.11 (device env)"
