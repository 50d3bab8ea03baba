"""Training the full-window Keras model (the default job, or a user's architecture).

The fit itself (loss at each recording's true last step, schedule, early stopping) is
``pipeline.fit``. After it, the model is fine-tuned quantization-aware (``pipeline.qat``,
``TrainConfig.qat_*``) where that applies.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from pipeline.config import ModelConfig, TrainConfig
from pipeline.data import Split
from pipeline.fit import fit
from pipeline.qat import quantization_aware_finetune

log = logging.getLogger(__name__)

_LAYERS = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "simple_rnn": keras.layers.SimpleRNN}


@dataclass(frozen=True)
class TrainResult:
    model: keras.Model
    history: dict[str, list[float]]
    best_epoch: int
    epochs_run: int
    finetuning: dict | None = None  # quantization_aware_finetune's summary, if it ran


def build_model(cfg: ModelConfig, steps: int | None, features: int, classes: int,
                every_step: bool = False) -> keras.Model:
    """Stacked recurrent layers -> Dense (sigmoid for 2 classes, softmax for more).
    ``every_step``: the last recurrent layer returns every step too (the training twin of
    ``pipeline.fit``: an output ``[m, T, k]``, same weights)."""
    layers: list[keras.layers.Layer] = [keras.Input((steps, features), name="samples")]
    rnn = _LAYERS[cfg.kind]
    for i, units in enumerate(cfg.units):
        last = i == len(cfg.units) - 1
        layers.append(rnn(int(units), return_sequences=every_step or not last, name=f"{cfg.kind}_{i}"))
        if cfg.dropout > 0 and not last:
            layers.append(keras.layers.Dropout(cfg.dropout, name=f"dropout_{i}"))
    if classes == 2:
        layers.append(keras.layers.Dense(1, activation="sigmoid", name="head"))
    else:
        layers.append(keras.layers.Dense(classes, activation="softmax", name="head"))
    return keras.Sequential(layers, name="stepwise_classifier")


def train(data: Split, model_cfg: ModelConfig, cfg: TrainConfig,
          calibration=None) -> TrainResult:
    """Fit (``pipeline.fit``), then fine-tune quantization-aware (``calibration``: what the
    converter will calibrate on, a ``pipeline.convert.Calibration``) where that applies."""
    keras.utils.set_random_seed(cfg.seed)
    twin = build_model(model_cfg, data.steps, data.features, data.classes, every_step=True)
    log.info("model: %s %s, %d features -> %d classes", model_cfg.kind, list(model_cfg.units), data.features,
             data.classes)
    fitted = fit(twin, data, cfg)
    model = build_model(model_cfg, data.steps, data.features, data.classes)
    model.set_weights(twin.get_weights())
    history = fitted.history
    if cfg.qat_epochs > 0 and data.variable_length:
        log.info("quantization-aware fine-tuning skipped: it trains on full windows, and these recordings "
                 "have different lengths")
        finetuning = None
    else:
        finetuning = quantization_aware_finetune(model, data, cfg, calibration) if cfg.qat_epochs > 0 else None
    if finetuning:
        history.update(finetuning["history"])
    return TrainResult(model, history, fitted.best_epoch, len(history["val_loss"]),
                       finetuning["summary"] if finetuning else None)


def save_history(result: TrainResult, path: Path) -> None:
    path.write_text(json.dumps({"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                                "history": result.history}, indent=1) + "\n")
