"""The log lines that TensorFlow and the TFLite interpreters write to file descriptor 2.

Their C++ code logs past Python: absl lines (``I0000 00:00:... port.cc:153] oneDNN ...``),
TFLite's own (``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.``) and converter
printouts. Some ignore ``TF_CPP_MIN_LOG_LEVEL``, so :func:`filtered` captures fd 2 around
the calls that emit them and writes back every other line once the block ends.

One knob, TensorFlow's own: ``TF_CPP_MIN_LOG_LEVEL`` (0 shows everything, 1 drops info
lines, 2 also warnings, 3 also errors). Unset means 0, as in TensorFlow; the ``stepwise``
command sets 2 unless run with ``-vv``.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Iterator

ENV_VAR = "TF_CPP_MIN_LOG_LEVEL"

# absl / glog: "I0000 00:00:1796155509.338244   23326 port.cc:153] message"
_ABSL = re.compile(rb"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ \]]+:\d+\] ")
_LEVEL = {b"I": 1, b"W": 2, b"E": 3, b"F": 4}
# Lines whose level is fixed: the prefix -> the TF_CPP_MIN_LOG_LEVEL from which they go.
_PREFIXES: tuple[tuple[bytes, int], ...] = (
    (b"INFO: ", 1),  # TFLite minimal logging (XNNPACK delegate, ...)
    (b"WARNING: All log messages before absl::InitializeLog()", 1),
    (b"To enable the following instructions:", 1),  # second line of cpu_feature_guard's
    (b"fully_quantize: ", 1),  # the MLIR quantizer's printout
    (b"WARNING: ", 2),  # TFLite minimal logging
    (b"ERROR: ", 3),
)


def min_level() -> int:
    """The ``TF_CPP_MIN_LOG_LEVEL`` in force (0 when unset or not a number)."""
    try:
        return int(os.environ.get(ENV_VAR, "0").strip() or 0)
    except ValueError:
        return 0


def keep(line: bytes, level: int) -> bool:
    """Whether ``line`` (one line of fd 2, newline included or not) is shown at ``level``."""
    m = _ABSL.match(line)
    if m:
        return _LEVEL[m.group(1)] > level
    for prefix, drop_from in _PREFIXES:
        if line.startswith(prefix):
            return level < drop_from
    return True


def filter_lines(data: bytes, level: int) -> bytes:
    """``data`` without the native log lines that ``level`` hides."""
    return b"".join(line for line in data.splitlines(keepends=True) if keep(line, level))


@contextlib.contextmanager
def filtered(level: int | None = None) -> Iterator[None]:
    """Capture fd 2 during the block, then write back the lines ``level`` keeps.

    Nothing is captured at level 0. Python's own writes to ``sys.stderr`` in the block go
    the same way and come out, unfiltered unless they look like native log lines, when
    the block ends (also when it raises)."""
    level = min_level() if level is None else level
    if level <= 0:
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as capture:
        _flush()
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            _flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            _write_all(2, filter_lines(capture.read(), level))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
