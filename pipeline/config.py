"""Build configuration: one typed dataclass per stage, defaults in one place.

An optional TOML file (``--config``) overrides any subset; unknown sections or keys are
refused by name. The resolved configuration is saved next to the artifacts
(``config.toml``) so a build can be reproduced.
"""
from __future__ import annotations

import dataclasses
import operator
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import ConfigError

RNN_KINDS = ("lstm", "gru", "simple_rnn")
CELL_LAYOUTS = ("per_gate", "fused")
SEARCH_MODES = ("until_pass", "all", "off")
RECIPE_NAMES = ("per_gate", "fused", "long_stream", "trim_c", "per_tensor",
                "split_weights")  # pipeline.recipes.RECIPES
WINDOW_LABELS = ("last", "majority")


@dataclass(frozen=True)
class DataConfig:
    """The built-in synthetic set (used when no --data is given) and the splits."""

    sequences: int = 4000  # synthetic sequences
    steps: int = 7  # synthetic window length
    synthetic_features: int = 3
    noise: float = 0.35
    val_fraction: float = 0.2  # stratified (pipeline.data.split); early stopping judges by it
    test_fraction: float = 0.15
    min_sequences: int = 20
    seed: int = 7
    # A data file's columns (runtime.datacsv): the features by name (empty: every numeric
    # column but the sequence, label and time-like ones) and the label and sequence columns.
    features: tuple[str, ...] = ()
    label_column: str = "label"
    sequence_column: str = "sequence"
    # Windowing (pipeline.data.windows): window > 0 cuts each recording (or one continuous
    # log) into windows of that many samples, a new one every stride samples (0: stride =
    # window, no overlap); a window's label is its last sample's, or the most frequent one.
    window: int = 0
    stride: int = 0
    window_label: str = "last"  # one of WINDOW_LABELS


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "lstm"  # one of RNN_KINDS
    units: tuple[int, ...] = (32, 16)  # stacked layers; all but the last return sequences
    dropout: float = 0.0  # Dropout layer between recurrent layers (identity at inference)


@dataclass(frozen=True)
class TrainConfig:
    # The fit (pipeline.fit): Adam at learning_rate (gradient norm clipped to clipnorm),
    # warmed up linearly over warmup_epochs, then times plateau_factor whenever the
    # validation loss has not improved for plateau_patience epochs (not below
    # learning_rate * min_lr_ratio); stops after patience epochs without a better
    # validation loss and keeps the best epoch's weights. batch_size is the largest batch:
    # small sets get smaller ones, so an epoch has at least min_batches updates (never
    # below 8 recordings). Balanced class weights when the largest class outnumbers the
    # smallest by more than class_weight_ratio (0: never). verbose: Keras's own epoch
    # lines (the log has a progress line every few epochs either way).
    epochs: int = 200
    batch_size: int = 64
    learning_rate: float = 0.002
    patience: int = 25
    warmup_epochs: int = 5
    plateau_patience: int = 8
    plateau_factor: float = 0.5
    min_lr_ratio: float = 0.02
    clipnorm: float = 1.0
    min_batches: int = 16
    class_weight_ratio: float = 1.5
    seed: int = 7
    verbose: int = 0
    # Quantization-aware fine-tuning after the fit (LSTM/GRU/SimpleRNN stacks under a
    # sigmoid/softmax Dense head; 0 epochs turns it off): pipeline.qat.quantization_aware_finetune. Its loss:
    # cross-entropy at each window's last step (+ qat_prefix_weight * its mean over the
    # earlier steps, which trains each prefix as an early prediction; off by default, since
    # it pulls prefixes that cannot tell the class yet onto the class boundary, where int8
    # and float disagree most); + qat_consistency * mean (y_int8 - y_float)^2 over every
    # step of the windows and of qat_streams no-reset streams (qat_stream_steps samples a
    # batch, restarting from zero every qat_stream_restart batches); + qat_penalty *
    # (squared excess of cell states over +-qat_state_bound and of logits over
    # +-qat_logit_bound) + qat_margin_weight * (squared shortfall of logits within
    # qat_margin of the class boundary). For a model trained elsewhere (`stepwise convert`)
    # the loss is distillation from that model instead, at qat_distill_learning_rate
    # (bench.qat_sweep: 0.002 made a SimpleRNN's simulated int8 worse, 0.0005 halved its
    # error).
    qat_epochs: int = 30
    qat_learning_rate: float = 0.002
    qat_distill_learning_rate: float = 0.0005
    qat_prefix_weight: float = 0.0
    qat_consistency: float = 3000.0
    qat_penalty: float = 1.0
    qat_state_bound: float = 2.5
    qat_logit_bound: float = 5.0
    qat_margin: float = 0.2
    qat_margin_weight: float = 300.0
    qat_streams: int = 16
    qat_stream_steps: int = 32
    qat_stream_restart: int = 4


@dataclass(frozen=True)
class QuantizeConfig:
    variants: tuple[str, ...] = ("float32", "int16x8", "int8")
    # "per_gate": one FULLY_CONNECTED per gate, so each gate pre-activation gets its own
    # quantization scale; "fused": one matmul for all gates then SPLIT (shared scale).
    cell_layout: str = "per_gate"
    # Activation ranges are the min/max the converter sees on these float rollouts
    # (pipeline.convert.calibration_set): at most calibration_sequences training sequences
    # (by default all: rarer inputs widen the ranges a little, but values beyond a range
    # are clamped, which costs far more), and a long no-reset rollout, so drifted states
    # are covered. Quantization-aware fine-tuning simulates the same calibration.
    calibration_sequences: int = 100_000
    calibration_stream_steps: int = 5000
    seed: int = 7
    # Recipe search per quantized variant (pipeline.recipes): the candidates in order,
    # judged on the validation split (search_sequences windows and
    # a no-reset stream of search_stream_steps) by the [verify] bars. "until_pass" stops
    # at the first that passes, "all" tries every one and keeps the best passing one,
    # "off" keeps the first.
    recipes: tuple[str, ...] = ("per_gate", "split_weights", "fused", "trim_c", "long_stream")  # also: "per_tensor"
    search: str = "until_pass"
    search_sequences: int = 400
    search_stream_steps: int = 3000


@dataclass(frozen=True)
class VerifyConfig:
    drift_steps: int = 10_000
    latency_steps: int = 2000
    float_max_abs: float = 1e-5
    # The float32 drift bar is the larger of 10 * float_max_abs and this factor times the
    # rounding noise Keras itself amplifies over the no-reset stream (pipeline.verify).
    drift_roundoff_factor: float = 4.0
    int16x8_agreement: float = 0.999
    int16x8_p99: float = 0.01
    int8_agreement: float = 0.995
    int8_p99: float = 0.03
    int8_max: float = 0.10
    # Decisions: agreement bars count the steps where Keras's decision margin (|y - 0.5|
    # for one sigmoid unit, top-1 minus top-2 otherwise) is at least decisive_margin; a
    # variant whose reference has a smaller share of such steps than min_decisive_share is
    # "not judgeable" (it does not pass); the final-step accuracy may drop by accuracy_drop.
    decisive_margin: float = 0.02
    min_decisive_share: float = 0.05
    accuracy_drop: float = 0.005


@dataclass(frozen=True)
class BuildConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)

    def to_toml(self) -> str:
        lines = ["# stepwise build configuration (resolved: every value used by this build)"]
        for section in dataclasses.fields(self):
            lines.append(f"\n[{section.name}]")
            for f in dataclasses.fields(getattr(self, section.name)):
                lines.append(f"{f.name} = {_toml_value(getattr(getattr(self, section.name), f.name))}")
        return "\n".join(lines) + "\n"


def load_config(path: str | Path | None = None, **overrides: dict[str, Any]) -> BuildConfig:
    """Defaults, then the TOML file, then ``overrides`` (``{"train": {"epochs": 3}}``)."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
    for section, values in overrides.items():
        raw.setdefault(section, {}).update(values)
    cfg = BuildConfig()
    known = {f.name: f for f in dataclasses.fields(BuildConfig)}
    for section, values in raw.items():
        if section not in known:
            raise ConfigError(f"unknown config section [{section}] (known: {', '.join(known)})")
        if not isinstance(values, dict):
            raise ConfigError(f"config [{section}] must be a table")
        cfg = dataclasses.replace(cfg, **{section: _section(getattr(cfg, section), section, values)})
    _validate(cfg)
    return cfg


def _section(current: Any, name: str, values: dict[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(current)}
    updates = {}
    for key, value in values.items():
        if name == "data" and key == "features" and isinstance(value, int) and not isinstance(value, bool):
            key = "synthetic_features"  # what the synthetic set's feature count was called before
        if key not in fields:
            raise ConfigError(f"unknown key '{key}' in [{name}] (known: {', '.join(fields)})")
        default = getattr(current, key)
        if isinstance(default, tuple):
            if not isinstance(value, list):
                raise ConfigError(f"[{name}] {key} must be a list")
            value = tuple(value)
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif type(value) is not type(default):
            raise ConfigError(
                f"[{name}] {key} must be {type(default).__name__}, got {type(value).__name__} {value!r}"
            )
        updates[key] = value
    return dataclasses.replace(current, **updates)


def _validate(cfg: BuildConfig) -> None:
    if cfg.model.kind not in RNN_KINDS:
        raise ConfigError(f"[model] kind must be one of {', '.join(RNN_KINDS)}, got {cfg.model.kind!r}")
    if not cfg.model.units or any(int(u) < 1 for u in cfg.model.units):
        raise ConfigError("[model] units must list at least one positive layer size")
    if not 0.0 <= cfg.model.dropout < 1.0:
        raise ConfigError("[model] dropout must be in [0, 1)")
    bad = set(cfg.quantize.variants) - {"float32", "int16x8", "int8"}
    if bad or "float32" not in cfg.quantize.variants:
        raise ConfigError("[quantize] variants must include float32 and only float32, int16x8, int8")
    q = cfg.quantize
    if not q.recipes or set(q.recipes) - set(RECIPE_NAMES) or q.search not in SEARCH_MODES:
        raise ConfigError(f"[quantize] recipes must list some of {', '.join(RECIPE_NAMES)}; search must be one "
                          f"of {', '.join(SEARCH_MODES)} (got {list(q.recipes)}, {q.search!r})")
    if q.search_sequences < 1 or q.search_stream_steps < 1:
        raise ConfigError("[quantize] search_sequences and search_stream_steps must be positive")
    if cfg.quantize.cell_layout not in CELL_LAYOUTS:
        raise ConfigError(f"[quantize] cell_layout must be one of {', '.join(CELL_LAYOUTS)}")
    d = cfg.data
    _validate_data(d)
    if not (0 < d.val_fraction < 1 and 0 < d.test_fraction < 1 and d.val_fraction + d.test_fraction < 1):
        raise ConfigError("[data] val_fraction and test_fraction must be in (0, 1) and sum below 1")
    if cfg.train.epochs < 1 or cfg.train.batch_size < 1 or cfg.train.learning_rate <= 0:
        raise ConfigError("[train] epochs, batch_size and learning_rate must be positive")
    v = cfg.verify
    if not (0.0 <= v.decisive_margin < 1.0 and 0.0 <= v.min_decisive_share <= 1.0 and v.accuracy_drop >= 0.0):
        raise ConfigError("[verify] decisive_margin must be in [0, 1), min_decisive_share in [0, 1], "
                          f"accuracy_drop >= 0 (got {v.decisive_margin}, {v.min_decisive_share}, {v.accuracy_drop})")
    t = cfg.train
    if not (0 < t.plateau_factor <= 1 and 0 < t.min_lr_ratio <= 1 and t.clipnorm > 0 and t.min_batches >= 1
            and t.patience >= 1 and t.plateau_patience >= 1 and t.warmup_epochs >= 0 and t.class_weight_ratio >= 0):
        raise ConfigError("[train] plateau_factor and min_lr_ratio must be in (0, 1], clipnorm positive, "
                          "patience, plateau_patience and min_batches >= 1, warmup_epochs and "
                          "class_weight_ratio >= 0")
    positive = ("qat_learning_rate", "qat_distill_learning_rate", "qat_streams", "qat_stream_steps",
                "qat_stream_restart", "qat_state_bound", "qat_logit_bound")
    non_negative = ("qat_epochs", "qat_prefix_weight", "qat_consistency", "qat_penalty", "qat_margin",
                    "qat_margin_weight")
    rules = {**dict.fromkeys(positive, (operator.gt, "positive")),
             **dict.fromkeys(non_negative, (operator.ge, ">= 0"))}
    for name, (holds, words) in rules.items():
        value = getattr(t, name)
        if not holds(value, 0):  # also refuses NaN
            raise ConfigError(f"[train] {name} must be {words} (got {value})")


def _validate_data(d: DataConfig) -> None:
    if d.window < 0 or d.window == 1 or d.stride < 0:
        raise ConfigError(f"[data] window must be 0 (no windowing) or at least 2, stride 0 (= window) or "
                          f"positive (got window {d.window}, stride {d.stride})")
    if d.stride and not d.window:
        raise ConfigError(f"[data] stride = {d.stride} needs [data] window (the window length) as well")
    if d.window_label not in WINDOW_LABELS:
        raise ConfigError(f"[data] window_label must be one of {', '.join(WINDOW_LABELS)}, got {d.window_label!r}")
    for key in ("label_column", "sequence_column"):
        if not getattr(d, key).strip():
            raise ConfigError(f"[data] {key} must name a column")
    if d.label_column.strip().casefold() == d.sequence_column.strip().casefold():
        raise ConfigError(f"[data] label_column and sequence_column are both {d.label_column!r}")
    seen: set[str] = set()
    for name in d.features:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"[data] features must list column names, got {name!r}")
        key = name.strip().casefold()
        if key in seen:
            raise ConfigError(f"[data] features names {name!r} twice")
        if key in (d.label_column.strip().casefold(), d.sequence_column.strip().casefold()):
            raise ConfigError(f"[data] features lists {name!r}, the label or sequence column")
        seen.add(key)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")
