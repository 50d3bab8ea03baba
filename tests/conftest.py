"""Shared fixtures.

Tests are split by environment:
- ``tests/pipeline`` and ``tests/integration`` need the build environment (TensorFlow);
- ``tests/runtime``, ``tests/firmware_bridge``, ``tests/stepwise_cli`` and
  ``test_architecture.py`` must also pass in the device environment (``.venv-device``:
  tflite-runtime, numpy<2, no TensorFlow).

``tiny_artifacts`` is a complete artifacts folder built from a tiny config. ``make test``
builds it once (``STEPWISE_TEST_ARTIFACTS``); without that variable the build
environment builds it on first use, and the device environment fails with a message.

Every test runs in its own empty working directory, so a command's defaults
(``./artifacts``, ``./state``) never reach the checkout's; the session fails if the
checkout's ``artifacts/`` or ``state/`` changed while it ran.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from tests.needs import missing

ROOT = Path(__file__).resolve().parent.parent
HAVE_TF = importlib.util.find_spec("tensorflow") is not None

collect_ignore_glob = [] if HAVE_TF else ["pipeline/*", "integration/*", "deploy/*"]
GUARDED = ("artifacts", "state")
_BEFORE = pytest.StashKey[dict]()


@pytest.fixture(autouse=True)
def _cwd_is_a_fresh_folder(tmp_path_factory, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


def _listing() -> dict[str, tuple[int, int]]:
    """Every file under the checkout's guarded folders: path -> (size, mtime_ns)."""
    found = {}
    for name in GUARDED:
        for path in sorted((ROOT / name).rglob("*")):
            st = path.lstat()
            found[str(path.relative_to(ROOT))] = (st.st_size, st.st_mtime_ns)
    return found


def pytest_sessionstart(session) -> None:
    session.config.stash[_BEFORE] = _listing()


def pytest_sessionfinish(session, exitstatus) -> None:
    before = session.config.stash.get(_BEFORE, None)
    if before is None:
        return
    after = _listing()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        session.config.get_terminal_writer().line(
            "tests changed the checkout's " + "/".join(GUARDED) + ": " + ", ".join(changed[:10]), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED



@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory) -> Path:
    env = os.environ.get("STEPWISE_TEST_ARTIFACTS")
    if env and (Path(env) / "manifest.json").exists():
        return Path(env)
    if not HAVE_TF:
        pytest.fail(
            "tiny test artifacts are missing: run 'make test' (it builds them with the "
            "build environment and sets STEPWISE_TEST_ARTIFACTS)"
        )
    from pipeline.build import build_artifacts
    from pipeline.config import load_config

    out = tmp_path_factory.mktemp("tiny-artifacts")
    build_artifacts(load_config(ROOT / "tests" / "tiny.toml"), out=out)
    return out


@pytest.fixture
def broker():
    """A private Mosquitto broker on a free loopback port (skipped where it is missing:
    ``make tools`` installs it)."""
    from firmware_bridge.broker import LocalBroker, find_mosquitto

    if find_mosquitto() is None:
        missing("mosquitto is not installed (make tools)")
    with LocalBroker() as b:
        yield b
