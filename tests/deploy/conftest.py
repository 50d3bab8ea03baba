"""A fresh ``make bundle`` archive of the test artifacts, installed into a new Python 3.13
venv with the package index switched off (module-wide: one build and install per run)."""
from __future__ import annotations

import glob
import os
import platform
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEVICE_PYTHON = ROOT / ".venv-device" / "bin" / "python"
WHEEL_CACHE = ROOT / "build" / "wheels"  # downloads are kept between runs


def python313() -> str | None:
    """``$PYTHON313``, else pyenv's 3.13, else none."""
    if os.environ.get("PYTHON313"):
        return os.environ["PYTHON313"]
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip() \
        if shutil.which("pyenv") else os.path.expanduser("~/.pyenv")
    found = sorted(glob.glob(f"{root}/versions/3.13*/bin/python3.13"))
    return found[-1] if found else None


@dataclass(frozen=True)
class Installed:
    archive: Path
    bundle: Path  # the unpacked folder
    prefix: Path  # what install.sh made: venv/, artifacts/
    log: str

    @property
    def stepwise(self) -> Path:
        return self.prefix / "venv" / "bin" / "stepwise"

    @property
    def python(self) -> Path:
        return self.prefix / "venv" / "bin" / "python"


@pytest.fixture(scope="session")
def bundle_install(tiny_artifacts, tmp_path_factory) -> Installed:
    py313 = python313()
    if py313 is None:
        pytest.skip("no python3.13 (pyenv) on this machine: the bundle install on 3.13 is not tested")
    work = tmp_path_factory.mktemp("bundle")
    own = f"cp{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}"
    made = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "bundle.py"), "--artifacts", str(tiny_artifacts),
         "--out", str(work / "out"), "--cache", str(WHEEL_CACHE),
         "--target", own, "--target", f"cp313-{platform.machine()}"],
        capture_output=True, text=True, timeout=900)
    assert made.returncode == 0, made.stderr[-3000:]
    archive = Path(made.stdout.strip().splitlines()[-1])
    with tarfile.open(archive) as tar:
        tar.extractall(work / "unpacked", filter="data")
    (bundle,) = (work / "unpacked").iterdir()
    prefix = work / "device"
    env = {"PATH": os.environ["PATH"], "HOME": str(work), "PIP_NO_INDEX": "1",
           "PIP_CONFIG_FILE": "/dev/null"}
    inst = subprocess.run([str(bundle / "install.sh"), "--prefix", str(prefix), "--python", py313],
                          capture_output=True, text=True, timeout=600, env=env)
    assert inst.returncode == 0, inst.stderr[-3000:]
    return Installed(archive, bundle, prefix, made.stderr + inst.stdout + inst.stderr)
