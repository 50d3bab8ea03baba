"""The hand-tuned comparison: a Keras LSTM of stepwise's default size, trained with care.

The layers of stepwise's default model (``pipeline.config.ModelConfig().units``: stacked
LSTMs, all but the last returning sequences, then Dense softmax, or one sigmoid unit for two
classes), and what a careful practitioner adds around them:

- per-channel z-score from the training recordings' true samples; zero padding after each
  recording's end and a ``Masking`` layer, so padded steps are skipped and the output is
  the one at each recording's last true step;
- a stratified validation split (``VAL_FRACTION`` of the training recordings, seeded) for
  early stopping on validation loss with the best weights restored, reduce-on-plateau,
  Adam with gradient clipping;
- the learning rate picked from ``LEARNING_RATES`` by validation accuracy (then loss).

The held-out recordings are touched once, by the chosen model.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import keras
import numpy as np

from bench.realdata.datasets import stratified_holdout
from bench.realdata.prepare import pad
from pipeline.config import ModelConfig

log = logging.getLogger(__name__)

VAL_FRACTION = 0.2
LEARNING_RATES = (1e-3, 3e-3, 1e-2)
MAX_EPOCHS = 300
PATIENCE = 30  # epochs without a better validation loss
PLATEAU = 10  # epochs before the learning rate is halved
CLIPNORM = 1.0


@dataclass(frozen=True)
class Fit:
    learning_rate: float
    val_accuracy: float
    val_loss: float
    epochs: int
    best_epoch: int
    seconds: float
    model: keras.Model


def build(units: tuple[int, ...], features: int, classes: int) -> keras.Model:
    layers = [keras.Input((None, features)), keras.layers.Masking(0.0)]
    for i, u in enumerate(units):
        layers.append(keras.layers.LSTM(int(u), return_sequences=i < len(units) - 1))
    layers.append(keras.layers.Dense(1, activation="sigmoid") if classes == 2
                  else keras.layers.Dense(classes, activation="softmax"))
    return keras.Sequential(layers)


def normalised(X: tuple[np.ndarray, ...], mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``[m, T_max, F]``: each recording z-scored, zero-padded after its end."""
    Xp, _ = pad(tuple((x - mean) / std for x in X))
    return Xp


def predict_classes(model: keras.Model, X: np.ndarray, classes: int) -> np.ndarray:
    p = model.predict(X, batch_size=256, verbose=0)
    return (p[:, 0] > 0.5).astype(np.int64) if classes == 2 else p.argmax(axis=-1)


def fit_one(Xtr, ytr, Xva, yva, classes: int, units, lr: float, batch: int, seed: int) -> Fit:
    keras.utils.set_random_seed(seed)
    model = build(units, Xtr.shape[2], classes)
    loss = "binary_crossentropy" if classes == 2 else "sparse_categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(lr, clipnorm=CLIPNORM), loss=loss, metrics=["accuracy"])
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=PATIENCE, restore_best_weights=True),
                 keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=PLATEAU, min_lr=1e-5)]
    t0 = time.monotonic()
    cast = np.float32 if classes == 2 else np.int64
    hist = model.fit(Xtr, ytr.astype(cast), validation_data=(Xva, yva.astype(cast)), epochs=MAX_EPOCHS,
                     batch_size=batch, callbacks=callbacks, verbose=0, shuffle=True).history
    best = int(np.argmin(hist["val_loss"]))
    val_acc = float(np.mean(predict_classes(model, Xva, classes) == yva))
    return Fit(lr, val_acc, float(hist["val_loss"][best]), len(hist["val_loss"]), best + 1,
               time.monotonic() - t0, model)


def hand_tuned(train: tuple[np.ndarray, ...], y_train: np.ndarray, test: tuple[np.ndarray, ...],
               y_test: np.ndarray, classes: int, seed: int = 0, units: tuple[int, ...] | None = None,
               learning_rates: tuple[float, ...] = LEARNING_RATES) -> dict:
    """Held-out accuracy at each recording's last step of the chosen model, and each fit."""
    units = tuple(units or ModelConfig().units)
    val = stratified_holdout(y_train, VAL_FRACTION, seed)
    flat = np.concatenate([x for x, v in zip(train, val) if not v])
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    std = np.where(std < 1e-6, 1.0, std)
    Xtr = normalised(tuple(x for x, v in zip(train, val) if not v), mean, std)
    Xva = normalised(tuple(x for x, v in zip(train, val) if v), mean, std)
    batch = 16 if len(Xtr) < 500 else 32
    fits = []
    for lr in learning_rates:
        f = fit_one(Xtr, y_train[~val], Xva, y_train[val], classes, units, lr, batch, seed)
        log.info("hand-tuned LSTM%s lr %g: val accuracy %.4f, val loss %.4f, best epoch %d of %d (%.0f s)",
                 units, lr, f.val_accuracy, f.val_loss, f.best_epoch, f.epochs, f.seconds)
        fits.append(f)
    chosen = max(fits, key=lambda f: (f.val_accuracy, -f.val_loss))
    acc = float(np.mean(predict_classes(chosen.model, normalised(test, mean, std), classes) == y_test))
    return {
        "accuracy": acc, "test_recordings": len(test), "units": list(units), "batch_size": batch,
        "train_recordings": int((~val).sum()), "val_recordings": int(val.sum()),
        "chosen_learning_rate": chosen.learning_rate,
        "fits": [{k: getattr(f, k) for k in ("learning_rate", "val_accuracy", "val_loss", "epochs",
                                             "best_epoch", "seconds")} for f in fits],
    }
