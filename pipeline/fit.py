"""Fitting the full-window model so that it holds on small real sets as on large ones.

The loss is each recording's cross-entropy at its *true* last step. It is trained on a
twin of the model whose last recurrent layer returns every step, with a weight over the
time axis that is zero everywhere but at each recording's last true sample: the layers
are causal, so the output there depends on that recording's samples only, and the zero
padding after it (``pipeline.data.split``) has no effect on anything trained. The model
the pipeline exports is the plain one, with the twin's weights (no mask layer: the
one-step model streams real samples only).

Around it, what keeps training stable on a few dozen recordings (``TrainConfig``):
- a batch small enough for ``min_batches`` updates per epoch (``batch_size`` caps it);
- Adam with the gradient norm clipped to ``clipnorm``;
- the learning rate warmed up linearly over ``warmup_epochs``, then multiplied by
  ``plateau_factor`` whenever the validation loss has not improved for
  ``plateau_patience`` epochs (down to ``learning_rate * min_lr_ratio``);
- early stopping after ``patience`` epochs without a better validation loss, and the
  weights of the best epoch restored (also when the epochs run out, or the loss turns
  non-finite);
- class weights (balanced) when the largest class outnumbers the smallest by more
  than ``class_weight_ratio``.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import keras
import numpy as np

from pipeline.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitResult:
    history: dict[str, list[float]]
    best_epoch: int  # 1-based; 0: no finite validation loss was ever seen
    batch_size: int
    class_weights: list[float] | None


def batch_size(cfg: TrainConfig, m: int) -> int:
    """``cfg.batch_size``, made smaller for small sets so that an epoch has at least
    ``cfg.min_batches`` updates, but never below 8 (or ``m``)."""
    return max(1, min(cfg.batch_size, m, max(8, m // cfg.min_batches)))


def class_weights(y: np.ndarray, classes: int, ratio: float) -> np.ndarray | None:
    """Balanced weights ``m / (classes * n_c)`` ``[classes]`` when the largest class is more
    than ``ratio`` times the smallest (``ratio`` 0: never), else None."""
    counts = np.bincount(y, minlength=classes).astype(np.float64)
    if ratio <= 0 or counts.min() == 0 or counts.max() <= ratio * counts.min():
        return None
    return len(y) / (classes * counts)


def last_step_targets(y: np.ndarray, lengths: np.ndarray, steps: int, classes: int,
                      weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Targets for the every-step twin and their weights ``[m, steps]``: ``steps`` (times
    the class weight) at each recording's last true step, 0 elsewhere, so the loss the
    twin averages over all steps is the mean loss at the true last steps."""
    m = len(y)
    w = np.zeros((m, steps), np.float32)
    w[np.arange(m), np.asarray(lengths) - 1] = steps * (1.0 if weights is None else weights[y])
    if classes == 2:
        return np.repeat(y.astype(np.float32)[:, None, None], steps, 1), w
    return np.repeat(y.astype(np.int64)[:, None], steps, 1), w


class Schedule(keras.callbacks.Callback):
    """Warm-up, reduce-on-plateau, early stopping and best-weights restore in one place,
    all on the validation loss (see the module docstring); progress lines at INFO."""

    def __init__(self, cfg: TrainConfig, epochs: int):
        super().__init__()
        self.cfg, self.epochs = cfg, epochs
        self.lr = cfg.learning_rate
        self.best, self.best_epoch, self.best_weights = math.inf, 0, None
        self.wait = self.plateau_wait = 0
        self.every = max(1, epochs // 20)
        self.t0 = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        warm = self.cfg.warmup_epochs
        if epoch < warm:
            self.lr = self.cfg.learning_rate * (epoch + 1) / (warm + 1)
        elif epoch == warm:
            self.lr = self.cfg.learning_rate
        self.model.optimizer.learning_rate = self.lr

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = logs or {}
        loss, val = float(logs.get("loss", math.nan)), float(logs.get("val_loss", math.nan))
        logs["learning_rate"] = self.lr
        if not (math.isfinite(loss) and math.isfinite(val)):
            log.warning("epoch %d: loss %.4g, validation loss %.4g: not finite, training stops", epoch + 1, loss, val)
            self.model.stop_training = True
            return
        if val < self.best - 1e-4:
            self.best, self.best_epoch, self.wait, self.plateau_wait = val, epoch + 1, 0, 0
            self.best_weights = self.model.get_weights()
        else:
            self.wait += 1
            self.plateau_wait += epoch >= self.cfg.warmup_epochs
            if self.plateau_wait >= self.cfg.plateau_patience:
                floor = self.cfg.learning_rate * self.cfg.min_lr_ratio
                if self.lr > floor:
                    self.lr = max(floor, self.lr * self.cfg.plateau_factor)
                    log.debug("epoch %d: validation loss flat for %d epochs, learning rate %.2g", epoch + 1,
                              self.plateau_wait, self.lr)
                self.plateau_wait = 0
            if self.wait >= self.cfg.patience:
                self.model.stop_training = True
        if (epoch + 1) % self.every == 0 or self.model.stop_training or epoch == 0:
            log.info("epoch %d/%d: loss %.4f, val_loss %.4f, val_accuracy %.4f, lr %.2g (best epoch %d, %.0f s)",
                     epoch + 1, self.epochs, loss, val, float(logs.get("val_accuracy", math.nan)), self.lr,
                     self.best_epoch, time.monotonic() - self.t0)

    def on_train_end(self, logs=None) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def fit(twin: keras.Model, data, cfg: TrainConfig) -> FitResult:
    """Train ``twin`` (outputs ``[m, T, k]`` at every step) on ``data`` (a
    ``pipeline.data.Split``) in place; its weights end as those of the best epoch."""
    T = data.steps
    cw = class_weights(data.y_train, data.classes, cfg.class_weight_ratio)
    if cw is not None:
        log.info("classes are imbalanced (%s recordings): class weights %s",
                 np.bincount(data.y_train, minlength=data.classes).tolist(), np.round(cw, 2).tolist())
    y, w = last_step_targets(data.y_train, data.len_train, T, data.classes, cw)
    yv, wv = last_step_targets(data.y_val, data.len_val, T, data.classes)
    batch = batch_size(cfg, len(data.X_train))
    loss = "binary_crossentropy" if data.classes == 2 else "sparse_categorical_crossentropy"
    twin.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate, clipnorm=cfg.clipnorm), loss=loss,
                 weighted_metrics=["accuracy"])
    schedule = Schedule(cfg, cfg.epochs)
    log.info("training on %d recordings (%d validation) of up to %d steps: batch %d, learning rate %g "
             "(warm-up %d epochs), up to %d epochs", len(data.X_train), len(data.X_val), T, batch,
             cfg.learning_rate, cfg.warmup_epochs, cfg.epochs)
    hist = twin.fit(data.X_train, y, sample_weight=w, validation_data=(data.X_val, yv, wv), epochs=cfg.epochs,
                    batch_size=batch, callbacks=[schedule], verbose=cfg.verbose, shuffle=True)
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    if schedule.best_epoch:
        log.info("best epoch %d of %d: val_loss %.4f val_accuracy %.4f", schedule.best_epoch,
                 len(history["val_loss"]), history["val_loss"][schedule.best_epoch - 1],
                 history["val_accuracy"][schedule.best_epoch - 1])
    return FitResult(history, schedule.best_epoch, batch, None if cw is None else [float(v) for v in cw])
