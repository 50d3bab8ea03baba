"""Shared fixtures.

Tests are split by environment:
- ``tests/pipeline`` and ``tests/integration`` need the build environment (TensorFlow);
- ``tests/runtime``, ``tests/firmware_bridge``, ``tests/stepwise_cli`` and
  ``test_architecture.py`` must also pass in the device environment (``.venv-device``:
  tflite-runtime, numpy<2, no TensorFlow).

``tiny_artifacts`` is a complete artifacts folder built from a tiny config. ``make test``
builds it once (``STEPWISE_TEST_ARTIFACTS``); without that variable the build
environment builds it on first use, and the device environment fails with a message.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HAVE_TF = importlib.util.find_spec("tensorflow") is not None

collect_ignore_glob = [] if HAVE_TF else ["pipeline/*", "integration/*"]


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
