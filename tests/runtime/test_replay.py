"""``stepwise replay`` and the ``replay()`` library function behind ``stepwise verify``."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from stepwise_cli.main import cli
from runtime.contract import load_contract
from runtime.engine import Engine, Prediction
from runtime.errors import DataError
from runtime.records import prediction_record, record_line
from runtime.replay import replay


@pytest.fixture(scope="module")
def data(tiny_artifacts):
    with np.load(tiny_artifacts / "test_data.npz") as z:
        return z["X"][:4].astype(np.float32), z["y"][:4]


@pytest.fixture()
def npz(data, tmp_path):
    path = tmp_path / "four.npz"
    np.savez(path, X=data[0], y=data[1])
    return path


def _invoke(*args):
    result = CliRunner().invoke(cli, ["replay", *map(str, args)])
    return result, [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def _expected(tiny_artifacts, X, reset_between=True, reset=None):
    engine = Engine.load(tiny_artifacts, reset=reset)
    return replay(engine, X, reset_between=reset_between)


def test_json_lines_one_per_sample(tiny_artifacts, data, npz):
    X, _ = data
    result, lines = _invoke("--artifacts", tiny_artifacts, npz)
    assert result.exit_code == 0, result.output
    m, T, _ = X.shape
    assert len(lines) == m * T
    assert all(list(r) == ["i", "seq", "step", "y", "label"] for r in lines)
    assert [r["i"] for r in lines] == list(range(m * T))
    assert [r["seq"] for r in lines] == [s for s in range(m) for _ in range(T)]
    assert [r["step"] for r in lines] == list(range(1, T + 1)) * m  # reset between sequences
    want = _expected(tiny_artifacts, X).as_array().reshape(m * T, -1)
    got = np.array([r["y"] for r in lines], np.float32)
    assert np.array_equal(got, want)  # 9 significant digits: exact for float32
    output = load_contract(tiny_artifacts).output
    assert [r["label"] for r in lines] == [output.label_of(y) for y in want]


def test_npz_sequences_start_from_a_reset_state(tiny_artifacts, data, npz):
    X, _ = data
    _, lines = _invoke("--artifacts", tiny_artifacts, npz)
    T = X.shape[1]
    alone = Engine.load(tiny_artifacts).step(X[2][0]).y
    assert np.array_equal(np.float32(lines[2 * T]["y"]), alone)


def test_reset_option_makes_the_file_one_stream(tiny_artifacts, data, npz):
    X, _ = data
    result, lines = _invoke("--artifacts", tiny_artifacts, "--reset", "never", npz)
    assert result.exit_code == 0, result.output
    m, T, _ = X.shape
    assert [r["step"] for r in lines] == list(range(1, m * T + 1))
    want = _expected(tiny_artifacts, [X.reshape(m * T, -1)], reset="never").y[0]
    assert np.array_equal(np.array([r["y"] for r in lines], np.float32), want)
    assert lines[T]["y"] != _invoke("--artifacts", tiny_artifacts, npz)[1][T]["y"]


def test_csv_sequence_column_and_named_columns(tiny_artifacts, data, npz, tmp_path):
    X, y = data
    names = load_contract(tiny_artifacts).input.feature_names
    rows = [",".join(["sequence", names[2], "label", names[0], names[1]])]
    for s, seq in enumerate(X):
        rows += [f"s{s},{x[2]!r},{y[s]},{x[0]!r},{x[1]!r}" for x in seq.tolist()]
    csv = tmp_path / "four.csv"
    csv.write_text("\n".join(rows) + "\n")
    _, from_csv = _invoke("--artifacts", tiny_artifacts, csv)
    _, from_npz = _invoke("--artifacts", tiny_artifacts, npz)
    assert from_csv == from_npz


def test_variant_option_selects_the_model(tiny_artifacts, npz):
    _, f32 = _invoke("--artifacts", tiny_artifacts, npz)
    result, int8 = _invoke("--artifacts", tiny_artifacts, "--variant", "int8", npz)
    assert result.exit_code == 0 and len(int8) == len(f32)
    assert max(abs(a["y"][0] - b["y"][0]) for a, b in zip(f32, int8)) > 0


def test_wrong_feature_count_is_a_clear_data_error(tiny_artifacts, tmp_path):
    features = load_contract(tiny_artifacts).input.features
    path = tmp_path / "wide.npz"
    np.savez(path, X=np.zeros((2, 5, features + 1), np.float32))
    result, lines = _invoke("--artifacts", tiny_artifacts, path)
    assert result.exit_code == DataError.exit_code and not lines
    names = ", ".join(load_contract(tiny_artifacts).input.feature_names)
    assert (f"wide.npz: X has {features + 1} features without names, for {features} features ({names}); "
            f"add feature_names to the file, or give X {features} features" in result.output)


def test_bad_reset_and_tampered_model_exit_with_their_codes(tiny_artifacts, npz, tmp_path):
    result, _ = _invoke("--artifacts", tiny_artifacts, "--reset", "window:0", npz)
    assert result.exit_code == 2 and "use window:N, sliding:N" in result.output
    for f in tiny_artifacts.iterdir():
        if f.name == "manifest.json" or f.suffix == ".tflite":
            shutil.copy(f, tmp_path / f.name)
    model = tmp_path / load_contract(tmp_path).variant().file
    model.write_bytes(model.read_bytes()[:-1] + b"\0")
    result, lines = _invoke("--artifacts", tmp_path, npz)
    assert result.exit_code == 4 and not lines
    assert "does not match the manifest" in result.output


def test_replay_function_matches_stepping_by_hand(tiny_artifacts, data):
    X, _ = data
    out = replay(Engine.load(tiny_artifacts, variant="int8", reset="never"), X)
    assert out.as_array().shape == (X.shape[0], X.shape[1], 1)
    engine = Engine.load(tiny_artifacts, variant="int8", reset="never")
    for seq, ys, steps in zip(X, out.y, out.steps):
        engine.reset()
        assert np.array_equal(np.stack([engine.step(x).y for x in seq]), ys)
        assert steps.tolist() == list(range(1, len(seq) + 1))
    message = f"has 1 features per sample, the model expects {X.shape[2]}"
    with pytest.raises(DataError, match=message):
        replay(engine, [np.zeros((2, 1), np.float32)])


@pytest.mark.parametrize("y", [[0.25], [1e-12], [0.1, 0.7, 0.2], [np.nan, 1.0], [np.inf], [0.123456789123]])
def test_the_daemon_line_writer_writes_what_json_dumps_writes(tiny_artifacts, y):
    output = load_contract(tiny_artifacts).output
    pred = Prediction(np.array(y, np.float32), 7, 0, 2, output)
    for extra, more in (("", {}), (', "t": 1795347465.123456, "frame": 65535', {"t": 1795347465.123456, "frame": 65535})):
        expected = json.dumps(prediction_record(41, 3, pred) | more) + "\n"
        assert record_line(41, 3, pred, extra) == expected
