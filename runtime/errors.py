"""One error hierarchy for the whole project.

Library code raises these; only the command line (``stepwise_cli``) turns them into a
message and an exit code. Each class carries its own ``exit_code``.
"""
from __future__ import annotations


class StepwiseError(Exception):
    """Base class: a problem the user can act on, reported without a traceback."""

    exit_code = 1


class DataError(StepwiseError):
    """Input data is missing, malformed or inconsistent (names the problem)."""

    exit_code = 2


class ConfigError(StepwiseError):
    """A configuration file or option is invalid."""

    exit_code = 2


class UnstreamableModelError(StepwiseError):
    """The Keras model contains a layer that cannot run one sample at a time."""

    exit_code = 3


class ContractError(StepwiseError):
    """The manifest or a model file does not match what it claims to be."""

    exit_code = 4


class ModelIntegrityError(ContractError):
    """A model file's sha256 differs from the manifest (modified or wrong file)."""


class VerificationError(StepwiseError):
    """A quality bar was missed (names the bar)."""

    exit_code = 1


class StateCorruptError(StepwiseError):
    """A persisted state checkpoint is unreadable, for another model, or mis-shaped."""

    exit_code = 5


class FrameError(StepwiseError):
    """A serial line or frame is malformed; ``reason`` is a short counter key."""

    exit_code = 6

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class PortError(StepwiseError):
    """A serial port cannot be opened or has gone away."""

    exit_code = 7
