"""Native log lines on fd 2: filtered by TF_CPP_MIN_LOG_LEVEL, everything else kept."""
from __future__ import annotations

import subprocess
import sys

import pytest

from runtime import native_log

ABSL_I = b"I0000 00:00:1796155509.338244   23326 port.cc:153] oneDNN custom operations are on.\n"
ABSL_W = b"W0000 00:00:1796155509.338244   23326 flatbuffer_export.cc:42] Ignored output_format.\n"
ABSL_E = b"E0000 00:00:1796155509.338244   23326 x.cc:1] something broke\n"
DELEGATE = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
OURS = b"2026-12-01 20:07:00,383 INFO runtime.backend: interpreter backend: tflite_runtime\n"
ALL = ABSL_I + ABSL_W + ABSL_E + DELEGATE + OURS + b"a line without newline"


@pytest.mark.parametrize("level, kept", [
    (0, ALL),
    (1, ABSL_W + ABSL_E + OURS + b"a line without newline"),
    (2, ABSL_E + OURS + b"a line without newline"),
    (3, OURS + b"a line without newline"),
])
def test_levels_follow_tensorflow(level, kept):
    assert native_log.filter_lines(ALL, level) == kept


PROBE = r"""
import os, sys
from runtime import native_log
with native_log.filtered():
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    sys.stderr.write("python line\n")
    os.write(2, b"plain native line\n")
os.write(2, b"after\n")
with native_log.filtered():
    raise SystemExit(3)
"""


@pytest.mark.parametrize("env_level, expected", [
    ("2", "python line\nplain native line\nafter\n"),
    ("0", "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\npython line\nplain native line\nafter\n"),
])
def test_filtered_captures_fd2_and_writes_back_the_rest(env_level, expected):
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, timeout=60,
                          env={"TF_CPP_MIN_LOG_LEVEL": env_level, "PATH": "/usr/bin:/bin",
                               "PYTHONPATH": ":".join(sys.path)})
    assert proc.returncode == 3
    assert proc.stderr.decode() == expected


def test_unset_or_garbage_level_means_show_everything(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    assert native_log.min_level() == 0
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "loud")
    assert native_log.min_level() == 0
