"""Data sets of the quantization zoo: synthetic tasks and real recordings shipped in a wheel.

The real ones are UCR/UEA classification archives that the ``aeon`` wheel on PyPI ships
as ``.ts`` text files (``aeon/datasets/data/<NAME>/<NAME>_{TRAIN,TEST}.ts``). The wheel
is fetched once with pip (``pip download aeon --no-deps``) into the bench cache and read
as a zip; nothing else is downloaded and aeon itself is never imported.
"""
from __future__ import annotations

import logging
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from bench.realdata import datasets as realdata_datasets
from pipeline.config import DataConfig
from pipeline.data import synthetic
from runtime.datafile import Sequences

log = logging.getLogger(__name__)

AEON_WHEEL = "aeon==1.6.0"


def order_task(m: int, T: int, F: int, seed: int) -> Sequences:
    """stepwise's own synthetic task (which of two bumps came first), 2 classes."""
    return synthetic(DataConfig(sequences=m, steps=T, synthetic_features=F, seed=seed))


def sines(m: int, T: int, F: int, classes: int, seed: int, noise: float = 0.4) -> Sequences:
    """``classes`` classes told apart by the frequency of a noisy sine on every feature
    (random phase and amplitude per sequence and feature): ``[m, T, F]``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, m)
    freq = 0.5 + 1.5 * np.arange(classes) / max(1, classes - 1)  # cycles per 10 steps
    t = np.arange(T)[None, :, None]
    phase = rng.uniform(0, 2 * np.pi, (m, 1, F))
    amp = rng.uniform(0.5, 1.5, (m, 1, F))
    X = amp * np.sin(2 * np.pi * freq[y][:, None, None] * t / 10 + phase)
    X = (X + rng.normal(0, noise, (m, T, F)) + np.linspace(-1, 1, F)).astype(np.float32)
    return Sequences(X=tuple(X), y=y.astype(np.int64), feature_names=tuple(f"f{i}" for i in range(F)),
                     source=f"sines-{classes}")


def aeon_wheel(cache: Path) -> Path:
    """The aeon wheel in ``cache``, fetched with pip the first time."""
    found = sorted(cache.glob("aeon-*.whl"))
    if found:
        return found[-1]
    cache.mkdir(parents=True, exist_ok=True)
    log.info("fetching the %s wheel (for its shipped data sets) into %s", AEON_WHEEL, cache)
    subprocess.run([sys.executable, "-m", "pip", "download", AEON_WHEEL, "--no-deps", "-q",
                    "-d", str(cache)], check=True)
    return sorted(cache.glob("aeon-*.whl"))[-1]


def parse_ts(text: str) -> tuple[np.ndarray, list[str]]:
    """A ``.ts`` file of equal-length series: ``X [m, T, dims]`` and the class label per
    series (``bench.realdata.datasets.parse_ts``, stacked)."""
    series, labels = realdata_datasets.parse_ts(text)
    return np.stack(series), labels


def ucr(name: str, cache: Path, stem: str | None = None) -> Sequences:
    """Train and test parts of a UCR/UEA set from the aeon wheel (folder ``name``, files
    ``<stem>_TRAIN.ts`` and ``<stem>_TEST.ts``), joined (the bench splits them itself);
    labels map to 0..k-1 in sorted order."""
    stem = stem or name
    with zipfile.ZipFile(aeon_wheel(cache)) as z:
        parts = [parse_ts(z.read(f"aeon/datasets/data/{name}/{stem}_{p}.ts").decode())
                 for p in ("TRAIN", "TEST")]
    X = np.concatenate([p[0] for p in parts])
    labels = [label for p in parts for label in p[1]]
    names = sorted(set(labels))
    y = np.array([names.index(v) for v in labels], np.int64)
    return Sequences(X=tuple(X), y=y, feature_names=tuple(f"d{i}" for i in range(X.shape[2])),
                     source=name)
