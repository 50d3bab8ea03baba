"""The synthetic set, user data files, and how bad data is refused."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.config import DataConfig, load_config
from pipeline.data import split, synthetic
from stepwise_cli.main import cli
from runtime.datafile import read_sequences
from runtime.errors import ConfigError, DataError


def test_synthetic_set_shape_balance_and_determinism():
    a, b = synthetic(DataConfig()), synthetic(DataConfig())
    X = a.as_array()
    assert X.shape == (4000, 7, 3) and a.feature_names == ("ax", "ay", "az")
    assert np.array_equal(X, b.as_array()) and np.array_equal(a.y, b.y)
    assert 0.4 < a.y.mean() < 0.6


def test_synthetic_label_depends_on_order_only():
    """Order-blind features (per-feature sums and maxima) leave the label at chance."""
    seqs = synthetic(DataConfig(sequences=4000))
    X, y = seqs.as_array(), seqs.y
    feats = np.concatenate([X.sum(1), X.max(1), X.min(1)], axis=1)
    feats = np.c_[feats, np.ones(len(feats))]
    w, *_ = np.linalg.lstsq(feats[:3000], y[:3000] * 2.0 - 1, rcond=None)
    blind = np.mean((feats[3000:] @ w > 0) == y[3000:])
    assert blind < 0.6
    # ...while the order itself decides it: bump in feature 0 before the one in feature 1
    first, second = X[:, :, 0].argmax(1), X[:, :, 1].argmax(1)
    assert np.mean((first < second) == y) > 0.95


def test_split_normalises_with_training_statistics_only():
    seqs = synthetic(DataConfig(sequences=300))
    sp = split(seqs, DataConfig(sequences=300))
    assert np.allclose(sp.X_train.reshape(-1, 3).mean(0), 0, atol=1e-5)
    assert np.allclose(sp.X_train.reshape(-1, 3).std(0), 1, atol=1e-4)
    assert len(sp.X_train) + len(sp.X_val) + len(sp.X_test) == 300
    raw = sp.raw(sp.X_train).reshape(-1, 3)
    assert np.allclose(raw.mean(0), sp.mean, atol=1e-4)  # raw() undoes the normalisation
    originals = {row.tobytes() for row in np.round(seqs.as_array().reshape(-1, 3), 4)}
    assert all(row.tobytes() in originals for row in np.round(sp.raw(sp.X_test).reshape(-1, 3), 4)[:50])


def test_csv_with_sequence_and_label_columns(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("sequence,ax,ay,label\n1,0.1,0.2,0\n1,0.3,0.4,1\n2,1,2,0\n2,3,4,0\n2,5,6,0\n")
    s = read_sequences(p, require_labels=True)
    assert [x.shape for x in s.X] == [(2, 2), (3, 2)]
    assert s.y.tolist() == [1, 0] and s.feature_names == ("ax", "ay")


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


BAD = {
    "missing_key": (lambda p: _npz(p, Z=np.zeros((30, 7, 3)), y=np.zeros(30)), "missing key 'X'"),
    "wrong_rank": (lambda p: _npz(p, X=np.zeros((30, 21)), y=np.zeros(30)), "X must have rank 3"),
    "nan": (lambda p: _npz(p, X=np.where(np.arange(630).reshape(30, 7, 3) == 100, np.nan, 0.0), y=np.zeros(30)),
            "NaN/Inf value(s) in X, first at index (4, 5, 1)"),
    "label_count": (lambda p: _npz(p, X=np.zeros((30, 7, 3)), y=np.zeros(29)), "29 labels for 30 sequences"),
    "too_few": (lambda p: _npz(p, X=np.zeros((5, 7, 3)), y=np.array([0, 1, 0, 1, 0])), "too few"),
    "one_class": (lambda p: _npz(p, X=np.zeros((30, 7, 3)), y=np.zeros(30)), "single class"),
    "float_labels": (lambda p: _npz(p, X=np.zeros((30, 7, 3)), y=np.full(30, 0.5)), "integer class indexes"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_data_is_refused_by_name_without_traceback_or_artifacts(case, tmp_path):
    make, message = BAD[case]
    data = make(tmp_path / "bad.npz")
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["build", "--data", data, "--out", str(out)])
    assert res.exit_code == DataError.exit_code, res.output
    assert message in res.output
    assert "Traceback" not in res.output
    assert not (out / "manifest.json").exists()


def test_bad_csv_row_names_the_line(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("ax,ay,label\n1,2,0\n1,oops,1\n")
    with pytest.raises(DataError, match=r"d.csv:3: non-numeric"):
        read_sequences(p)


def test_config_rejects_unknown_keys_and_wrong_types(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[train]\nepoch = 3\n")
    with pytest.raises(ConfigError, match="unknown key 'epoch' in \\[train\\]"):
        load_config(p)
    p.write_text("[model]\nunits = 32\n")
    with pytest.raises(ConfigError, match="units must be a list"):
        load_config(p)
    p.write_text("[train]\nepochs = 3\n[model]\nunits = [4]\n")
    cfg = load_config(p)
    assert cfg.train.epochs == 3 and cfg.model.units == (4,)
    assert load_config().train.epochs == 60  # the defaults
    res = CliRunner().invoke(cli, ["build", "--config", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "o")])
    assert res.exit_code == ConfigError.exit_code and "does not exist" in res.output
