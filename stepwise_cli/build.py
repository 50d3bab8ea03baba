"""Build-host commands: ``stepwise build``, ``stepwise convert``, ``stepwise verify``.

TensorFlow comes in with this module (imported by the command line on first use, with
TensorFlow's start-up log lines filtered)."""
from __future__ import annotations

from pathlib import Path

import click

from pipeline.build import build_artifacts, convert_artifacts
from pipeline.config import WINDOW_LABELS, load_config
from pipeline.report import table
from pipeline.verify import verify_all
from runtime.errors import VerificationError

_artifacts = click.option("--artifacts", "artifacts", type=click.Path(file_okay=False, path_type=Path),
                          default=Path("artifacts"), show_default=True, help="Artifacts folder.")
_out = click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("artifacts"),
                    show_default=True, help="Where to write the artifacts.")
_config = click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                       default=None, help="TOML file overriding the default configuration.")
_data = click.option("--data", type=click.Path(dir_okay=False), default=None,
                     help=".npz (X [m,T,F], y [m], optional lengths [m]) or .csv (one sample per row, "
                          "label and sequence columns).")


def _data_options(f):
    """``[data]`` column choice and windowing as flags (they override the config file)."""
    for option in reversed((
        click.option("--features", default=None, metavar="A,B,...",
                     help="Feature columns by name, in order (default: every numeric column but the "
                          "sequence, label and time-like ones)."),
        click.option("--label-column", default=None, metavar="NAME", help="Label column (default: label)."),
        click.option("--sequence-column", default=None, metavar="NAME",
                     help="Sequence column: a new value starts a new recording (default: sequence)."),
        click.option("--window", type=click.IntRange(min=0), default=None, metavar="N",
                     help="Cut each recording (or one continuous log) into windows of N samples."),
        click.option("--stride", type=click.IntRange(min=0), default=None, metavar="S",
                     help="A new window every S samples (default: N, no overlap)."),
        click.option("--window-label", type=click.Choice(WINDOW_LABELS), default=None,
                     help="A window's label: its last sample's (default) or the most frequent one."),
    )):
        f = option(f)
    return f


def _data_overrides(features: str | None, **values) -> dict:
    data = {k: v for k, v in values.items() if v is not None}
    if features is not None:
        data["features"] = [n.strip() for n in features.split(",") if n.strip()]
    return {"data": data} if data else {}


def _summary(result) -> None:
    c = result.contract
    click.echo(table(result.results))
    f32 = result.results.get("float32", {})
    if "accuracy_ci95" in f32:
        lo, hi = f32["accuracy_ci95"]
        click.echo(f"test accuracy {f32['accuracy'] * 100:.1f} % on {f32['test_sequences']} held-out recordings "
                   f"(95 % CI {lo * 100:.1f} .. {hi * 100:.1f} %)")
    for v, f in result.results.items():
        for line in f["failed"]:
            click.echo(f"bar missed: {line}" if f["status"] == "fail" else line)
    for target, r in c.recommended.items():
        click.echo(f"recommended for {target}: {r['variant'] or 'none'} ({r['why']})")
    click.echo(f"\nartifacts: {result.out}  (default variant {c.default_variant}, "
               f"{len(c.states)} state tensors, built in {result.seconds:.0f} s)")


@click.command("build")
@_data
@_config
@_out
@_data_options
def build_cmd(data: str | None, config_path: Path | None, out: Path, **data_options) -> None:
    """Train, build the one-step model, convert, quantize, verify and export."""
    _summary(build_artifacts(load_config(config_path, **_data_overrides(**data_options)), out, data))


@click.command("convert")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", type=click.Path(dir_okay=False), required=True,
              help="Sequences (.npz/.csv with labels) for calibration and verification.")
@_config
@_out
@click.option("--finetune/--no-finetune", default=True, show_default=True,
              help="Where a quantized variant misses on validation data, also try a copy fine-tuned "
                   "for it through its simulated integer step graph, distilled from the model (kept "
                   "only where it passes more bars on validation data).")
@_data_options
def convert_cmd(model: str, data: str, config_path: Path | None, out: Path, finetune: bool,
                **data_options) -> None:
    """Same as build, from an existing trained Keras model (.keras or .h5)."""
    cfg = load_config(config_path, **_data_overrides(**data_options))
    _summary(convert_artifacts(model, data, cfg, out, finetune=finetune))


@click.command("verify")
@_artifacts
@_config
@click.option("--variant", multiple=True, help="Only these variants (default: all).")
def verify_cmd(artifacts: Path, config_path: Path | None, variant: tuple[str, ...]) -> None:
    """Re-run the parity and accuracy checks; exit 1 when a bar is missed."""
    cfg = load_config(config_path if config_path else _saved_config(artifacts))
    results = verify_all(artifacts, cfg.verify, variants=list(variant) or None)
    click.echo(table(results))
    for f in results.values():
        for line in f["failed"]:
            click.echo(f"bar missed: {line}" if f["status"] == "fail" else line)
    failed = [v for v, f in results.items() if f["status"] != "pass"]
    if failed:
        raise VerificationError(", ".join(f"{v} {results[v]['status']}" for v in failed))
    click.echo("all bars passed")


def _saved_config(artifacts: Path) -> Path | None:
    path = artifacts / "config.toml"
    return path if path.exists() else None
