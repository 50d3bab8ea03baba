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
    "huge_class_index": (lambda p: _npz(p, X=np.zeros((30, 7, 3)), y=np.r_[np.zeros(29), 1e9]),
                         "bad.npz: y has class index 1000000000; class indexes must be 0..N-1 (at most 4096 classes)"),
    "truncated": (lambda p: _truncate(_npz(p, X=np.zeros((30, 7, 3)), y=np.zeros(30))),
                  "bad.npz: not a readable .npz file (BadZipFile: File is not a zip file); write it again with "
                  "numpy.savez"),
}


def _truncate(path: str) -> str:
    with open(path, "r+b") as f:
        f.truncate(1000)
    return path


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_data_is_refused_by_name_without_traceback_or_artifacts(case, tmp_path):
    make, message = BAD[case]
    data = make(tmp_path / "bad.npz")
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["build", "--data", data, "--out", str(out)])
    assert res.exit_code == DataError.exit_code, res.output
    assert message in res.output
    assert "Traceback" not in res.output
    assert not out.exists()


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
    assert load_config().train.epochs == 200  # the defaults
    res = CliRunner().invoke(cli, ["build", "--config", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "o")])
    assert res.exit_code == ConfigError.exit_code and "does not exist" in res.output


# -- windowing, columns and classes (pipeline.data) ----------------------------------------
from runtime.contract import WindowSpec  # noqa: E402
from runtime.datafile import Sequences  # noqa: E402
from pipeline.data import load_training_data, manifest_window, windows  # noqa: E402


def _log(tmp_path, labels, name="log.csv", header="timestamp,ax,ay,label"):
    """A continuous labelled log: ax = row number modulo 50, ay = 10 * row number modulo 7."""
    rows = [f"2024-01-01T00:00:{i:02d}Z,{i % 50},{(10 * i) % 7},{lab}" for i, lab in enumerate(labels)]
    p = tmp_path / name
    p.write_text(header + "\n" + "\n".join(rows) + "\n")
    return p


def test_windows_with_stride_cut_each_recording_and_drop_the_tail():
    seqs = Sequences(X=(np.arange(10, dtype=np.float32).reshape(10, 1),
                        np.arange(100, 104, dtype=np.float32).reshape(4, 1)),
                     y=np.array([1, 0]), feature_names=("a",))
    w = windows(seqs, window=4, stride=3)
    assert [x[:, 0].tolist() for x in w.X] == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9], [100, 101, 102, 103]]
    assert w.y.tolist() == [1, 1, 1, 0]  # no label per sample: the recording's


def test_window_label_last_and_majority():
    labels = np.array([0, 0, 1, 1, 1, 0, 2, 2])
    seqs = Sequences(X=(np.zeros((8, 1), np.float32),), y=np.array([2]), feature_names=("a",),
                     step_labels=(labels,))
    assert windows(seqs, 4, 2, "last").y.tolist() == [1, 0, 2]  # rows 3, 5, 7
    # [0 0 1 1] tie -> 1 (seen latest); [1 1 1 0] -> 1; [1 0 2 2] -> 2
    assert windows(seqs, 4, 2, "majority").y.tolist() == [1, 1, 2]


def test_short_recordings_are_left_out_and_none_long_enough_is_an_error(caplog):
    seqs = Sequences(X=(np.zeros((5, 1), np.float32), np.zeros((2, 1), np.float32)), y=np.array([0, 1]),
                     feature_names=("a",), source="d.csv")
    assert len(windows(seqs, 5, 5)) == 1
    assert "d.csv: 1 of 2 sequence(s) are shorter than the window of 5 samples and are left out" in caplog.text
    with pytest.raises(DataError) as e:
        windows(seqs, 6, 1)
    assert str(e.value) == "d.csv: no sequence is as long as [data] window = 6 (the longest has 5 samples); " \
                           "use a smaller window"


def test_a_windowed_log_trains_on_its_windows_with_class_names(tmp_path, caplog):
    p = _log(tmp_path, ["idle"] * 30 + ["shake"] * 30 + ["idle"] * 20)
    with caplog.at_level("INFO"):
        seqs = load_training_data(str(p), DataConfig(window=10, stride=5, window_label="majority", min_sequences=5))
    assert f"{p}: 15 sequences of 10 samples, features ax, ay, classes idle, shake" in caplog.text
    assert seqs.feature_names == ("ax", "ay")  # timestamp dropped (ISO text, time-like name)
    assert len(seqs) == 15 and {len(x) for x in seqs.X} == {10}
    assert seqs.X[1][:, 0].tolist() == list(range(5, 15))
    assert seqs.class_names == ("idle", "shake")
    assert seqs.y.tolist() == [0] * 5 + [1, 1, 1, 1, 1, 1] + [0] * 4  # window 5 is rows 25..34: shake


def test_a_continuous_log_without_window_tells_to_set_it(tmp_path):
    p = _log(tmp_path, [0, 1] * 40)
    with pytest.raises(DataError) as e:
        load_training_data(str(p), DataConfig())
    assert str(e.value) == (f"{p}: one continuous log of 80 samples (no 'sequence' column, or one value in it): set "
                            "[data] window = N (and stride) to cut it into training windows of N samples, or add a "
                            "'sequence' column")
    with pytest.raises(DataError) as e:
        load_training_data(str(p), DataConfig(window=40))
    assert str(e.value) == (f"{p}: [data] window = 40 and stride = 40 cut it into 2 windows, too few to train and "
                            "verify (need at least 20); a smaller stride or window gives more")


def test_class_names_that_label_no_window_are_left_out(tmp_path):
    p = _log(tmp_path, (["a"] * 9 + ["rare"]) * 2 + ["b"] * 30)
    seqs = load_training_data(str(p), DataConfig(window=10, window_label="majority", min_sequences=5))
    assert seqs.class_names == ("a", "b") and seqs.y.tolist() == [0, 0, 1, 1, 1]


def test_manifest_window_follows_window_and_stride():
    spec = WindowSpec(length=10, reset="sliding:10")
    assert manifest_window(spec, DataConfig()) == spec  # no windowing: unchanged
    assert manifest_window(spec, DataConfig(window=50, stride=10)) == \
        WindowSpec(length=50, reset="sliding:50", stride=10)
    assert manifest_window(spec, DataConfig(window=50)) == WindowSpec(length=50, reset="window:50", stride=50)
    assert manifest_window(spec, DataConfig(window=5000, stride=1)).reset == "window:5000"  # beyond sliding's cap
    head = WindowSpec(length=8, reset="sliding:8", mode="window_head", warmup=7)
    assert manifest_window(head, DataConfig(window=8, stride=2)) == \
        WindowSpec(length=8, reset="sliding:8", mode="window_head", warmup=7, stride=2)


@pytest.mark.parametrize("toml, message", [
    ("window = 1", "[data] window must be 0 (no windowing) or at least 2, stride 0 (= window) or positive "
                   "(got window 1, stride 0)"),
    ("stride = 3", "[data] stride = 3 needs [data] window (the window length) as well"),
    ("window = 8\nwindow_label = 'mode'", "[data] window_label must be one of last, majority, got 'mode'"),
    ("features = ['ax', 'AX']", "[data] features names 'AX' twice"),
    ("features = ['ax', 'Label']", "[data] features lists 'Label', the label or sequence column"),
    ("features = [1, 2]", "[data] features must list column names, got 1"),
    ("label_column = 'rec'\nsequence_column = 'REC'", "[data] label_column and sequence_column are both 'rec'"),
    ("label_column = ' '", "[data] label_column must name a column"),
    ("window = '8'", "[data] window must be int, got str '8'"),
])
def test_data_config_is_validated(tmp_path, toml, message):
    p = tmp_path / "c.toml"
    p.write_text("[data]\n" + toml + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == message


def test_an_old_config_with_the_synthetic_feature_count_still_loads(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[data]\nfeatures = 4\n")
    assert load_config(p).data.synthetic_features == 4 and load_config(p).data.features == ()
    assert "synthetic_features = 4" in load_config(p).to_toml()


def test_build_flags_reach_the_data_config(tmp_path, monkeypatch):
    import stepwise_cli.build as build

    seen = {}

    def stop(cfg, out, data):
        seen["cfg"] = cfg
        raise DataError("stopped before training")

    monkeypatch.setattr(build, "build_artifacts", stop)
    res = CliRunner().invoke(cli, ["build", "--features", "az, ax", "--window", "20", "--stride", "5",
                                   "--window-label", "majority", "--label-column", "class",
                                   "--sequence-column", "rec", "--out", str(tmp_path / "o")])
    d = seen["cfg"].data
    assert (d.features, d.window, d.stride, d.window_label, d.label_column, d.sequence_column) == \
        (("az", "ax"), 20, 5, "majority", "class", "rec"), res.output
    assert res.exit_code == DataError.exit_code and "stopped before training" in res.output
    res = CliRunner().invoke(cli, ["build", "--stride", "5", "--out", str(tmp_path / "o")])
    assert res.exit_code == ConfigError.exit_code
    assert "[data] stride = 5 needs [data] window (the window length) as well" in res.output


CLI_BAD = {
    "log_without_window": ("log.csv", "timestamp,ax,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(50)),
                           [], "log.csv: one continuous log of 50 samples (no 'sequence' column, or one value in "
                               "it): set [data] window = N (and stride) to cut it into training windows of N "
                               "samples, or add a 'sequence' column"),
    "field_too_long": ("d.csv", "ax,label\n" + "1" * 140_000 + ",0\n", [],
                       "d.csv:2: a field is longer than 131072 characters (each field must be one value)"),
    "missing_feature": ("d.csv", "ax,ay,label\n1,2,0\n", ["--features", "ax,az"],
                        "d.csv: no column 'az' for the feature 'az' (columns found: ax, ay, label); fix [data] "
                        "features or --features"),
    "missing_label_column": ("d.csv", "ax,ay,label\n1,2,0\n", ["--label-column", "class"],
                             "d.csv: no label column 'class' (columns found: ax, ay, label); name it with "
                             "[data] label_column"),
    "window_too_long": ("d.csv", "sequence,ax,label\n1,0,a\n1,1,b\n2,0,a\n", ["--window", "3"],
                        "d.csv: no sequence is as long as [data] window = 3 (the longest has 2 samples); use a "
                        "smaller window"),
}


@pytest.mark.parametrize("case", sorted(CLI_BAD))
def test_bad_csv_is_one_line_exit_2_and_the_output_folder_is_not_created(case, tmp_path):
    name, text, flags, message = CLI_BAD[case]
    (tmp_path / name).write_text(text)
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["build", "--data", str(tmp_path / name), *flags, "--out", str(out)])
    assert res.exit_code == DataError.exit_code, res.output
    assert f"Error: {tmp_path}/{message}\n" in res.output
    assert "Traceback" not in res.output
    assert not out.exists()


def test_dev_zero_as_data_is_refused_without_reading_it(tmp_path):
    link = tmp_path / "zero.csv"
    link.symlink_to("/dev/zero")
    res = CliRunner().invoke(cli, ["build", "--data", str(link), "--out", str(tmp_path / "out")])
    assert res.exit_code == DataError.exit_code
    assert f"Error: {link} is not a regular file (a device, FIFO or socket): give a .csv or .npz file" in res.output
    assert not (tmp_path / "out").exists()


def test_recordings_of_different_lengths_from_npz_lengths_cut_into_windows(tmp_path):
    X = np.zeros((3, 5, 1), np.float32)
    X[:, :, 0] = np.arange(5) + 10 * np.arange(3)[:, None]
    p = tmp_path / "rec.npz"
    np.savez(p, X=X, y=np.array(["b", "a", "b"]), lengths=np.array([5, 2, 3]))
    seqs = load_training_data(str(p), DataConfig(window=2, stride=2, min_sequences=1))
    assert [x[:, 0].tolist() for x in seqs.X] == [[0, 1], [2, 3], [10, 11], [20, 21]]
    assert seqs.class_names == ("a", "b") and seqs.y.tolist() == [1, 1, 0, 1]
