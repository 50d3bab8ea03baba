"""The command line on a device install: build-only commands refuse in one line, exit 2.

In the device environments TensorFlow is really missing; in the build environment the
check that finds it is made to say it is missing."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from click.testing import CliRunner

from stepwise_cli import main as cli_module

HAVE_TF = importlib.util.find_spec("tensorflow") is not None


@pytest.fixture
def device(monkeypatch):
    if HAVE_TF:
        monkeypatch.setattr(cli_module, "_have_build_env", lambda: False)


@pytest.mark.parametrize("name, args", [
    ("build", ["build"]), ("build", ["build", "--help"]),
    ("convert", ["-q", "convert", "m.keras", "--data", "x.npz"]), ("verify", ["verify", "--artifacts", "x"]),
])
def test_build_only_commands_say_one_line_and_exit_2(device, name, args):
    result = CliRunner().invoke(cli_module.cli, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: 'stepwise {name}' needs the build environment")
    assert "needs the build environment" in lines[0] and "pip install 'stepwise-edge[build]'" in lines[0]


def test_help_marks_build_only_commands(device):
    out = CliRunner().invoke(cli_module.cli, ["--help"]).output
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()}
    for name in ("build", "convert", "verify"):
        assert "[build env, not installed]" in rows[name]
    for name in ("replay", "serve", "state", "ports"):
        assert "[build env" not in rows[name]


@pytest.mark.skipif(HAVE_TF, reason="a real device install has no TensorFlow")
def test_no_traceback_from_a_real_process():
    proc = subprocess.run([sys.executable, "-m", "stepwise_cli", "build", "--out", "x"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "needs the build environment" in proc.stderr


def test_version_names_the_distribution():
    result = CliRunner().invoke(cli_module.cli, ["--version"], prog_name="stepwise")
    assert result.exit_code == 0 and result.output.startswith("stepwise, version ")
