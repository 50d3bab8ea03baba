"""Training the full-window Keras model (the default job, or a user's architecture).

After the usual fit, the model is fine-tuned quantization-aware (``pipeline.qat``,
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


def build_model(cfg: ModelConfig, steps: int | None, features: int, classes: int) -> keras.Model:
    """Stacked recurrent layers -> Dense (sigmoid for 2 classes, softmax for more)."""
    layers: list[keras.layers.Layer] = [keras.Input((steps, features), name="samples")]
    rnn = _LAYERS[cfg.kind]
    for i, units in enumerate(cfg.units):
        last = i == len(cfg.units) - 1
        layers.append(rnn(int(units), return_sequences=not last, name=f"{cfg.kind}_{i}"))
        if cfg.dropout > 0 and not last:
            layers.append(keras.layers.Dropout(cfg.dropout, name=f"dropout_{i}"))
    if classes == 2:
        layers.append(keras.layers.Dense(1, activation="sigmoid", name="head"))
    else:
        layers.append(keras.layers.Dense(classes, activation="softmax", name="head"))
    return keras.Sequential(layers, name="stepwise_classifier")


def train(data: Split, model_cfg: ModelConfig, cfg: TrainConfig,
          calibration=None) -> TrainResult:
    """Fit, then fine-tune quantization-aware (``calibration``: what the converter will
    calibrate on, a ``pipeline.convert.Calibration``)."""
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(model_cfg, data.steps, data.features, data.classes)
    loss = "binary_crossentropy" if data.classes == 2 else "sparse_categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss=loss, metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience,
                                         restore_best_weights=True)
    y_train = data.y_train.astype(np.float32 if data.classes == 2 else np.int64)
    y_val = data.y_val.astype(y_train.dtype)
    log.info("training %s on %d sequences (%d validation), up to %d epochs",
             model_cfg.kind, len(data.X_train), len(data.X_val), cfg.epochs)
    hist = model.fit(data.X_train, y_train, validation_data=(data.X_val, y_val),
                     epochs=cfg.epochs, batch_size=cfg.batch_size, callbacks=[stop],
                     verbose=cfg.verbose, shuffle=True)
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    best = int(np.argmin(history["val_loss"])) + 1
    log.info("best epoch %d of %d: val_loss %.4f val_accuracy %.4f", best, len(history["val_loss"]),
             history["val_loss"][best - 1], history["val_accuracy"][best - 1])
    finetuning = quantization_aware_finetune(model, data, cfg, calibration) if cfg.qat_epochs > 0 else None
    if finetuning:
        history.update(finetuning["history"])
    return TrainResult(model, history, best, len(history["val_loss"]),
                       finetuning["summary"] if finetuning else None)


def save_history(result: TrainResult, path: Path) -> None:
    path.write_text(json.dumps({"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                                "history": result.history}, indent=1) + "\n")
