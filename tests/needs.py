"""What a test needs from the machine: missing is a skip outside ``make test``, a failure
inside it (``make tools`` and the Makefile's environments install all of it there, so a
skip would hide a broken set-up)."""
from __future__ import annotations

import os

import pytest


def missing(reason: str) -> None:
    """Skip the test for ``reason``, or fail it where ``STEPWISE_REQUIRE_TOOLS=1``."""
    if os.environ.get("STEPWISE_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{reason} (required under make test)", pytrace=False)
    pytest.skip(reason)
