"""The ``stepwise`` command line: one click program.

Every command is a thin module of this package (parse the options, build the library's
options, call the library), imported only when invoked, so the device (no TensorFlow)
can run ``stepwise serve`` and ``stepwise --help`` without touching the build-host
modules. Library errors (``StepwiseError``) become a one-line message and the error's
own exit code here, and nowhere else.
"""
from __future__ import annotations

import importlib
import logging
import sys

import click

from runtime.errors import StepwiseError

# name -> (module:attribute, one-line help shown by `stepwise --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("stepwise_cli.build:build_cmd", "Train, build the step model, convert, quantize, verify, export."),
    "convert": ("stepwise_cli.build:convert_cmd", "Same as build, from an existing trained Keras model."),
    "verify": ("stepwise_cli.build:verify_cmd", "Re-run the parity and accuracy checks on built artifacts."),
    "replay": ("stepwise_cli.replay:replay_cmd", "Stream a data file through the runtime; JSON lines out."),
    "serve": ("stepwise_cli.serve:serve_cmd", "The on-device daemon: serial samples in, predictions out."),
    "simulate": ("stepwise_cli.simulate:simulate_cmd", "Firmware emulator: stream a data file to a port."),
    "state": ("stepwise_cli.state:state_group", "Inspect or clear persisted state."),
    "ports": ("stepwise_cli.ports:ports_cmd", "List serial ports."),
    "export-c": ("stepwise_cli.export_c:export_c_cmd", "C arrays and headers for firmware."),
}

BUILD_ONLY = ("stepwise_cli.build", "pipeline")  # modules that need the build environment


class _CliError(click.ClickException):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class StepwiseGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return super().get_command(ctx, name)
        target, _ = COMMANDS[name]
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if module_name.startswith(BUILD_ONLY) and e.name and e.name.split(".")[0] in (
                "tensorflow", "keras", "matplotlib"
            ):
                raise click.UsageError(
                    f"'stepwise {name}' runs on the build host: it needs TensorFlow "
                    f"(install with: pip install 'stepwise[build]'). This is a device install."
                ) from None
            raise
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except StepwiseError as e:
            raise _CliError(str(e), e.exit_code) from None


@click.group(cls=StepwiseGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.version_option(package_name="stepwise")
def cli(verbose: int, quiet: bool) -> None:
    """stepwise: stateful recurrent Keras models, one sample at a time, on small devices."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(
        level=level, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main() -> None:
    cli(prog_name="stepwise")
