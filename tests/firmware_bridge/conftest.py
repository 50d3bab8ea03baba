"""Fixtures of the firmware_bridge tests: building the C library with gcc."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

C_DIR = Path(__file__).resolve().parents[2] / "firmware_bridge" / "c"
C99 = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")


@pytest.fixture(scope="session")
def compile_c():
    """``compile_c(out, *sources, flags=())``: gcc, C99 with every warning an error, the
    sources relative to ``firmware_bridge/c``; returns ``out``, the executable."""
    def build(out: Path, *sources: str, flags: tuple[str, ...] = ()) -> Path:
        paths = [str(C_DIR / s) for s in sources]
        result = subprocess.run(["gcc", *C99, *flags, "-o", str(out), *paths], capture_output=True, text=True)
        assert result.returncode == 0, f"gcc failed for {sources}:\n{result.stderr}"
        return out

    return build
