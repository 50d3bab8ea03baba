"""The train/validation/test split: stratified per class, recordings of any length padded
after normalisation, statistics from true samples only."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import DataConfig
from pipeline.data import pad, split, step_mask
from runtime.datafile import Sequences
from runtime.errors import DataError


def _seqs(lengths, y, F=3, seed=0, **extra):
    rng = np.random.default_rng(seed)
    X = tuple((rng.normal(0, 1, (n, F)) * [1, 10, 0.1][:F] + [5, -3, 0][:F]).astype(np.float32) for n in lengths)
    return Sequences(X=X, y=np.asarray(y, np.int64), feature_names=("a", "b", "c")[:F], source="mem", **extra)


def test_each_split_holds_every_class_in_its_share_even_when_classes_are_lopsided():
    y = np.array([0] * 60 + [1] * 30 + [2] * 10)
    sp = split(_seqs([5] * 100, y), DataConfig())
    counts = {part: np.bincount(getattr(sp, f"y_{part}"), minlength=3).tolist() for part in ("train", "val", "test")}
    assert counts == {"train": [39, 20, 6], "val": [12, 6, 2], "test": [9, 4, 2]}
    # disjoint, and together every recording once (each recording is told apart by its first sample)
    firsts = [tuple(x[0]) for part in ("train", "val", "test") for x in getattr(sp, f"X_{part}")]
    assert len(set(firsts)) == 100


def test_a_small_set_still_gives_every_class_a_validation_and_a_test_recording():
    y = np.arange(40) % 4  # 40 recordings, 4 classes: the small real set
    sp = split(_seqs([100] * 40, y), DataConfig())
    assert np.bincount(sp.y_val).tolist() == [2, 2, 2, 2]
    assert np.bincount(sp.y_test).tolist() == [2, 2, 2, 2]
    assert np.bincount(sp.y_train).tolist() == [6, 6, 6, 6]


def test_the_split_is_fixed_by_the_seed():
    y = np.arange(60) % 3
    a, b = split(_seqs([4] * 60, y), DataConfig()), split(_seqs([4] * 60, y), DataConfig())
    c = split(_seqs([4] * 60, y), DataConfig(seed=8))
    np.testing.assert_array_equal(a.X_test, b.X_test)
    assert not np.array_equal(a.X_test, c.X_test)


def test_no_class_large_enough_for_a_validation_split_is_refused():
    y = np.arange(20) % 10  # 2 recordings per class
    with pytest.raises(DataError, match=r"^mem: no class has the 3 recordings a training, validation and test "
                                        r"split each need; add recordings$"):
        split(_seqs([4] * 20, y), DataConfig())


def test_recordings_of_different_lengths_are_padded_after_normalisation():
    lengths = [3 + (i * 7) % 11 for i in range(40)]
    seqs = _seqs(lengths, np.arange(40) % 2)
    sp = split(seqs, DataConfig())
    assert sp.steps == max(lengths) and sp.variable_length
    got = np.concatenate([sp.len_train, sp.len_val, sp.len_test])
    assert sorted(got.tolist()) == sorted(lengths)
    for part in ("train", "val", "test"):
        X, n = getattr(sp, f"X_{part}"), getattr(sp, f"len_{part}")
        inside = step_mask(n, sp.steps)
        assert np.all(X[~inside] == 0.0)  # padding: exact zeros in the model's input space
        assert np.all(np.any(X[inside] != 0.0, axis=-1))
    # statistics of the true training samples only: the padding does not pull the mean to 0
    true_train = sp.X_train[step_mask(sp.len_train, sp.steps)]
    np.testing.assert_allclose(true_train.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(true_train.std(0), 1.0, atol=1e-4)
    # raw() gives back the recordings, zero after each end
    originals = {x.shape[0]: set() for x in seqs.X}
    for x in seqs.X:
        originals[len(x)].add(np.round(x, 3).tobytes())
    raw = sp.raw(sp.X_test, sp.len_test)
    for x, n in zip(raw, sp.len_test):
        assert np.round(x[:n], 3).tobytes() in originals[int(n)]
        assert np.all(x[n:] == 0.0)


def test_equal_lengths_keep_full_length_arrays():
    sp = split(_seqs([6] * 30, np.arange(30) % 3), DataConfig())
    assert not sp.variable_length and sp.class_names is None
    assert set(sp.len_train.tolist()) == {6} and sp.len_test.dtype == np.int64 and sp.X_train.shape[1:] == (6, 3)


def test_class_names_travel_into_the_split():
    sp = split(_seqs([6] * 30, np.arange(30) % 3, class_names=("idle", "shake", "tap")), DataConfig())
    assert sp.class_names == ("idle", "shake", "tap")


def test_pad_and_step_mask():
    X = pad([np.ones((2, 2)), np.full((4, 2), 2.0)])
    assert X.shape == (2, 4, 2) and X[0, 2:].sum() == 0 and X[1].sum() == 16
    assert step_mask(np.array([2, 4]), 4).tolist() == [[True, True, False, False], [True] * 4]
