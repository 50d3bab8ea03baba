"""The ``stepwise`` command line: one click program.

Every command is a thin module of this package (parse the options, build the library's
options, call the library), imported only when invoked, so the device (no TensorFlow)
can run ``stepwise serve`` and ``stepwise --help`` without touching the build-host
modules. Library errors (``StepwiseError``) become a one-line message and the error's
own exit code here, and nowhere else. On a device install, build-only commands say in
one line that they need the build environment (exit 2).
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import warnings

import click

from runtime import native_log
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
    "watch": ("stepwise_cli.watch:watch_cmd", "Live chart in a terminal, from a running daemon or a JSON-lines file."),
}

BUILD_ONLY = ("stepwise_cli.build", "pipeline")  # modules that need the build environment
BUILD_PACKAGES = ("tensorflow", "keras", "matplotlib")
BUILD_ENV_MISSING = ("'stepwise {name}' needs the build environment (TensorFlow and Keras), which "
                     "is not installed here: on a build host, pip install 'stepwise-edge[build]'")


def _build_only(name: str) -> bool:
    return COMMANDS[name][0].startswith(BUILD_ONLY)


def _have_build_env() -> bool:
    return all(importlib.util.find_spec(p) is not None for p in ("tensorflow", "keras"))


def _native_log_level(verbose: int) -> None:
    """TensorFlow's and the interpreters' own log lines: shown only with -vv."""
    if verbose > 1:
        os.environ[native_log.ENV_VAR] = "0"
        return
    os.environ.setdefault(native_log.ENV_VAR, "2")
    logging.getLogger("tensorflow").setLevel(logging.WARNING)  # "INFO:tensorflow:Assets written"
    warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")


def _build_env_missing(name: str) -> click.Command:
    """Stands in for a build-only command on a device install: one line, exit 2."""
    def refuse(**_: object) -> None:
        click.echo("Error: " + BUILD_ENV_MISSING.format(name=name), err=True)
        raise click.exceptions.Exit(2)

    return click.Command(name, callback=refuse, add_help_option=False,
                         context_settings={"ignore_unknown_options": True, "allow_extra_args": True})


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
        _native_log_level(ctx.params.get("verbose", 0))
        if _build_only(name) and not _have_build_env():
            return _build_env_missing(name)
        module_name, attr = COMMANDS[name][0].split(":")
        try:
            with native_log.filtered():  # TensorFlow's start-up lines
                module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if _build_only(name) and (e.name or "").split(".")[0] in BUILD_PACKAGES:
                return _build_env_missing(name)
            raise
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        mark = "[build env] " if _have_build_env() else "[build env, not installed] "
        rows = [(name, (mark if _build_only(name) else "") + COMMANDS[name][1])
                for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except StepwiseError as e:
            raise _CliError(str(e), e.exit_code) from None
        except ModuleNotFoundError as e:  # a build module imported by a command on a device
            name = ctx.invoked_subcommand
            if name in COMMANDS and _build_only(name) and (e.name or "").split(".")[0] in BUILD_PACKAGES:
                raise _CliError(BUILD_ENV_MISSING.format(name=name), 2) from None
            raise


@click.group(cls=StepwiseGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.version_option(package_name="stepwise-edge")
def cli(verbose: int, quiet: bool) -> None:
    """stepwise: stateful recurrent Keras models, one sample at a time, on small devices."""
    _native_log_level(verbose)
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(
        level=level, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main() -> None:
    cli(prog_name="stepwise")
