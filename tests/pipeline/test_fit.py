"""Training: the loss at each recording's true last step, the schedule, class weights,
and a small hard set that the defaults must learn."""
from __future__ import annotations

import logging
import time
from dataclasses import replace

import keras
import numpy as np
import pytest

from pipeline.config import DataConfig, ModelConfig, TrainConfig
from pipeline.data import split
from pipeline.fit import Schedule, batch_size, class_weights, last_step_targets
from pipeline.stepmodel import keras_sequence_outputs
from pipeline.train import train
from runtime.datafile import Sequences

FAST = TrainConfig(epochs=3, qat_epochs=0, warmup_epochs=0)


def test_targets_weigh_only_each_recordings_true_last_step():
    y, w = last_step_targets(np.array([1, 0, 2]), np.array([4, 2, 1]), 4, classes=3,
                             weights=np.array([1.0, 2.0, 0.5]))
    assert y.shape == (3, 4) and y[0].tolist() == [1] * 4
    np.testing.assert_array_equal(w, [[0, 0, 0, 8], [0, 4, 0, 0], [2, 0, 0, 0]])  # T * class weight
    y2, _ = last_step_targets(np.array([1, 0]), np.array([4, 4]), 4, classes=2)
    assert y2.shape == (2, 4, 1) and y2.dtype == np.float32


def test_small_sets_get_smaller_batches_and_lopsided_classes_get_weights():
    cfg = TrainConfig()
    assert [batch_size(cfg, m) for m in (5, 24, 300, 4000)] == [5, 8, 18, 64]
    assert class_weights(np.array([0] * 10 + [1] * 10), 2, 1.5) is None
    np.testing.assert_allclose(class_weights(np.array([0] * 30 + [1] * 10), 2, 1.5), [40 / 60, 40 / 20])
    assert class_weights(np.array([0] * 30 + [1] * 10), 2, 0.0) is None  # 0: never


class _Stub(keras.callbacks.Callback):
    pass


def _drive(cfg: TrainConfig, val_losses: list[float]):
    """Run ``Schedule`` over given validation losses on a one-weight model whose weight
    is set to the epoch number, so the restored weight names the restored epoch."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="mse")
    s = Schedule(cfg, len(val_losses))
    s.set_model(model)
    lrs = []
    for epoch, v in enumerate(val_losses):
        s.on_epoch_begin(epoch)
        lrs.append(float(model.optimizer.learning_rate))
        model.set_weights([np.array([[epoch + 1.0]], np.float32)])
        s.on_epoch_end(epoch, {"loss": 1.0, "val_loss": v, "val_accuracy": 0.5})
        if model.stop_training:
            break
    s.on_train_end()
    return lrs, float(model.get_weights()[0][0, 0]), s


def test_schedule_warms_up_reduces_on_plateau_stops_early_and_restores_the_best_epoch():
    cfg = TrainConfig(learning_rate=0.01, warmup_epochs=3, plateau_patience=2, plateau_factor=0.5,
                      patience=5, min_lr_ratio=0.2)
    losses = [1.0, 0.9, 0.8, 0.7, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
    lrs, restored, s = _drive(cfg, losses)
    np.testing.assert_allclose(lrs, [0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01, 0.01, 0.005, 0.005, 0.0025],
                               rtol=1e-5)
    assert len(lrs) == 10  # stopped after 5 epochs without a better validation loss
    assert restored == 5.0 and s.best_epoch == 5


def test_schedule_restores_the_best_epoch_when_epochs_run_out_or_the_loss_turns_non_finite():
    _, restored, _ = _drive(TrainConfig(warmup_epochs=0), [0.5, 0.4, 0.45, 0.47])
    assert restored == 2.0
    _, restored, s = _drive(TrainConfig(warmup_epochs=0), [0.5, 0.3, float("nan"), 0.1])
    assert restored == 2.0 and s.best_epoch == 2


def _variable_set(m=48, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, 13, m)
    y = np.arange(m) % 2
    X = tuple((rng.normal(0, 1, (n, 2)) + [y[i] * 1.5, 0]).astype(np.float32) for i, n in enumerate(lengths))
    return Sequences(X=X, y=y.astype(np.int64), feature_names=("a", "b"), source="mem")


def test_padding_has_no_influence_on_what_is_trained():
    """The same recordings with other values where the padding is: the same weights."""
    sp = split(_variable_set(), DataConfig())
    rng = np.random.default_rng(1)
    garbage = {}
    for part in ("train", "val"):
        X = getattr(sp, f"X_{part}").copy()
        pad = np.arange(sp.steps)[None] >= getattr(sp, f"len_{part}")[:, None]
        X[pad] = rng.normal(0, 5, (int(pad.sum()), 2))
        garbage[f"X_{part}"] = X
    a = train(sp, ModelConfig(units=(4,)), FAST).model.get_weights()
    b = train(replace(sp, **garbage), ModelConfig(units=(4,)), FAST).model.get_weights()
    for wa, wb in zip(a, b):
        np.testing.assert_array_equal(wa, wb)


def test_epoch_progress_is_logged(caplog):
    sp = split(_variable_set(), DataConfig())
    with caplog.at_level(logging.INFO, logger="pipeline"):
        result = train(sp, ModelConfig(units=(4,)), FAST)
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.fit"]
    assert any(line.startswith("training on 30 recordings (10 validation) of up to 12 steps: batch 8") for line in lines)
    assert [line.split(":")[0] for line in lines if line.startswith("epoch")] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert result.epochs_run == 3 and result.model.outputs[0].shape[1:] == (1,)  # the exported model: last step


def hard_set(m: int, seed: int, T: int = 100, noise: float = 0.6):
    """4 classes of ``m`` recordings ``[T, 3]``: a slow or a fast sine of random phase and
    amplitude in channel 0 or 1, under noise; channel 2 is noise of another scale. Only the
    order of the samples tells the period apart."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(m) % 4)
    X = rng.normal(0, noise, size=(m, T, 3)).astype(np.float32)
    period = np.where(y % 2 == 0, 40.0, 10.0)
    wave = rng.uniform(0.5, 1.0, m)[:, None] * np.sin(
        2 * np.pi * np.arange(T)[None] / period[:, None] + rng.uniform(0, 2 * np.pi, m)[:, None])
    X[np.arange(m), :, y // 2] += wave
    X[:, :, 2] = X[:, :, 2] * 10 + 5
    return X, y


def test_the_defaults_learn_a_small_hard_set():
    """40 recordings x 100 steps, 3 channels, 4 classes (24 to train on). The defaults
    before (learning rate 0.005, batch 64: one update an epoch, patience 8 on 6 unstratified
    validation recordings) kept a model at 28 % on fresh recordings like these."""
    X, y = hard_set(40, seed=1)
    sp = split(Sequences(tuple(X), y, ("a", "b", "c"), "hard"), DataConfig())
    t0 = time.monotonic()
    result = train(sp, ModelConfig(), TrainConfig(qat_epochs=0))
    fresh, labels = hard_set(400, seed=2)
    p = keras_sequence_outputs(result.model, ((fresh - sp.mean) / sp.std).astype(np.float32))[:, -1]
    accuracy = float(np.mean(p.argmax(-1) == labels))
    print(f"hard set: {accuracy:.3f} on 400 fresh recordings, best epoch {result.best_epoch} of "
          f"{result.epochs_run}, {time.monotonic() - t0:.0f} s")
    assert accuracy >= 0.5
