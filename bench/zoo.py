"""The quantization zoo: recurrent classifiers trained with plain Keras (``model.fit``, none
of stepwise's training code), plus stepwise's own default build at several seeds.

Each entry names its data and its architecture; ``trained`` fits it once and caches the
``.keras`` file under the bench folder, so later runs only convert.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from bench import zoo_data
from pipeline.config import BuildConfig, DataConfig, load_config
from pipeline.data import Split, split
from runtime.datafile import Sequences

log = logging.getLogger(__name__)
L = keras.layers


@dataclass(frozen=True)
class Entry:
    name: str
    data: Callable[[Path], Sequences]
    layers: Callable[[Split], list]  # the layers after the Input, given the training split
    epochs: int = 12
    learning_rate: float = 0.005
    free_time: bool = False  # Input((None, F)): any sequence length
    seed: int = 1
    default_build_seed: int | None = None  # stepwise's own build (training code and all)


def describe(entry: Entry, model: keras.Model) -> str:
    """The architecture in one line (``LSTM(32), LeakyReLU, ...``)."""
    if entry.default_build_seed is not None:
        return f"stepwise default build (LSTM 32-16, its own fine-tuning), train seed {entry.default_build_seed}"
    steps = model.inputs[0].shape[1]
    return f"T={steps if steps else 'free'}: " + ", ".join(_describe(la) for la in model.layers)


def _describe(layer) -> str:
    kind = type(layer).__name__
    if kind == "Dense":
        return f"Dense({layer.units}, {layer.activation.__name__})"
    if hasattr(layer, "units"):
        extra = f", reset_after={layer.reset_after}" if kind == "GRU" else ""
        return f"{kind}({layer.units}{extra})"
    return kind


def _norm(sp: Split):
    norm = L.Normalization(axis=-1)
    norm.adapt(sp.X_train.reshape(-1, sp.features)) if sp.X_train.size else None
    return norm


def _head(sp: Split):
    return L.Dense(1, activation="sigmoid") if sp.classes == 2 else L.Dense(sp.classes, activation="softmax")


def entries() -> list[Entry]:
    """The zoo: LSTM, GRU (both reset_after) and SimpleRNN; 1-3 layers; 8-128 units; sigmoid
    and softmax; LeakyReLU, Dropout, LayerNormalization between; 7-100 steps; synthetic
    and real (UCR/UEA) data; and one briefly trained model whose outputs hover at 0.5."""
    rs = {"return_sequences": True}
    return [
        Entry("lstm-mission", lambda c: zoo_data.order_task(2000, 7, 3, 11), lambda sp: [
            L.LSTM(32, **rs), L.LeakyReLU(0.1), L.Dropout(0.2), L.LSTM(16), _head(sp)]),
        Entry("gru-softmax-free", lambda c: zoo_data.sines(1500, 30, 2, 3, 12), lambda sp: [
            L.GRU(24, **rs), L.GRU(12), _head(sp)], free_time=True),
        Entry("gru-v1", lambda c: zoo_data.order_task(1500, 20, 3, 13), lambda sp: [
            L.GRU(16, reset_after=False), _head(sp)], epochs=15),
        Entry("simplernn-ln", lambda c: zoo_data.order_task(2000, 7, 3, 14), lambda sp: [
            L.SimpleRNN(32, **rs), L.LayerNormalization(), L.SimpleRNN(16), _head(sp)]),
        Entry("lstm3-ln", lambda c: zoo_data.sines(1200, 50, 3, 4, 15), lambda sp: [
            L.LSTM(16, **rs), L.LayerNormalization(), L.LSTM(16, **rs), L.Dropout(0.1),
            L.LSTM(8), _head(sp)], epochs=8),
        Entry("simplernn-100", lambda c: zoo_data.sines(800, 100, 1, 2, 16), lambda sp: [
            L.SimpleRNN(64), _head(sp)], epochs=8, learning_rate=0.002),
        Entry("lstm128-basicmotions", lambda c: zoo_data.ucr("BasicMotions", c), lambda sp: [
            _norm(sp), L.LSTM(128), _head(sp)], epochs=40, learning_rate=0.003),
        Entry("gru8-italypower", lambda c: zoo_data.ucr("ItalyPowerDemand", c), lambda sp: [
            _norm(sp), L.GRU(8), _head(sp)], epochs=30),
        Entry("lstm-vowels", lambda c: zoo_data.ucr("JapaneseVowels", c, "JapaneseVowels_eq"), lambda sp: [
            _norm(sp), L.LSTM(48, **rs), L.Dropout(0.2), L.LSTM(24), _head(sp)], epochs=25),
        Entry("lstm-hovering", lambda c: zoo_data.order_task(1000, 7, 3, 17), lambda sp: [
            L.LSTM(16), _head(sp)], epochs=1, learning_rate=1e-4),
        *[Entry(f"default-seed{s}", lambda c: None, lambda sp: [], default_build_seed=s) for s in (7, 8, 9)],
    ]


FINETUNE_EPOCHS = 10  # fine-tuning of the zoo's models in convert (the default is 30): machine time


def build_config(entry: Entry, quantize: dict | None = None) -> BuildConfig:
    """The configuration each entry is converted with (its data split included), with
    ``quantize`` overriding [quantize] settings."""
    if entry.default_build_seed is not None:
        return load_config(train={"seed": entry.default_build_seed, "verbose": 0}, quantize=quantize or {})
    cfg = load_config(quantize=quantize or {}, train={"qat_epochs": FINETUNE_EPOCHS, "verbose": 0})
    return dataclasses.replace(cfg, data=DataConfig(seed=entry.seed))


def trained(entry: Entry, cache: Path) -> tuple[keras.Model, Split]:
    """The entry's trained model (from ``cache`` when it is there) and its data split."""
    cfg = build_config(entry)
    path = cache / "models" / f"{entry.name}.keras"
    if entry.default_build_seed is not None:
        from pipeline.data import synthetic

        sp = split(synthetic(cfg.data), cfg.data)
    else:
        sp = split(entry.data(cache / "wheels"), cfg.data, normalise=False)
    if path.exists():
        return keras.models.load_model(path, compile=False), sp
    path.parent.mkdir(parents=True, exist_ok=True)
    model = _fit_default(sp, cfg) if entry.default_build_seed is not None else _fit_plain(entry, sp)
    model.save(path)
    return model, sp


def _fit_plain(entry: Entry, sp: Split) -> keras.Model:
    keras.utils.set_random_seed(entry.seed)
    model = keras.Sequential([keras.Input((None if entry.free_time else sp.steps, sp.features)),
                              *entry.layers(sp)], name=entry.name.replace("-", "_"))
    loss = "binary_crossentropy" if sp.classes == 2 else "sparse_categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(entry.learning_rate), loss=loss, metrics=["accuracy"])
    y = sp.y_train.astype(np.float32 if sp.classes == 2 else np.int64)
    hist = model.fit(sp.X_train, y, epochs=entry.epochs, batch_size=64, verbose=0,
                     validation_data=(sp.X_val, sp.y_val.astype(y.dtype)))
    log.info("%s: trained %d epochs, val accuracy %.3f", entry.name, entry.epochs,
             hist.history["val_accuracy"][-1])
    return model


def _fit_default(sp: Split, cfg: BuildConfig) -> keras.Model:
    from pipeline import convert as conv
    from pipeline.train import train

    return train(sp, cfg.model, cfg.train, calibration=conv.calibration_set(sp.X_train, cfg.quantize)).model
