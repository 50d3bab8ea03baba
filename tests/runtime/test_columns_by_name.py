"""Columns and ``name:value`` fields reach the model's features by name, in replay and in
a real ``stepwise serve`` process: another order gives the same predictions, a missing
feature is an error naming it, unnamed columns go in order."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from click.testing import CliRunner

from runtime.contract import load_contract
from runtime.engine import Engine
from runtime.errors import DataError
from runtime.records import prediction_record
from runtime.replay import check_features, iter_replay
from stepwise_cli.main import cli
from tests.runtime.test_serve import Port, Serve, _records


@pytest.fixture(scope="module")
def samples(tiny_artifacts):
    """Two sequences as the device would measure them (values that survive %.9g)."""
    with np.load(tiny_artifacts / "test_data.npz", allow_pickle=False) as z:
        seqs = [x.astype(np.float32) for x in z["X"][:2]]
    return [np.array([[float(f"{v:.9g}") for v in row] for row in x], np.float32) for x in seqs]


def _replay(args) -> tuple[object, list[dict]]:
    res = CliRunner().invoke(cli, ["replay", *map(str, args)])
    return res, [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def _expected(artifacts, seqs):
    engine = Engine.load(artifacts)
    return [prediction_record(i, s, p) for i, s, p in iter_replay(engine, seqs)]


def _write_csv(path, header, seqs, order, extra=lambda s, t: []):
    rows = [",".join(header)]
    for s, x in enumerate(seqs):
        rows += [",".join([*extra(s, t), *(f"{row[k]:.9g}" for k in order)]) for t, row in enumerate(x)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_reordered_header_with_other_columns_and_case_gives_the_same_predictions(tiny_artifacts, samples, tmp_path):
    names = load_contract(tiny_artifacts).input.feature_names
    order = [2, 0, 1]
    header = ["Timestamp", "sequence", "note", *(names[k].upper() for k in order)]
    p = _write_csv(tmp_path / "mixed.csv", header, samples, order,
                   extra=lambda s, t: [f"2024-01-01T00:00:{t:02d}Z", f"s{s}", "x"])
    res, got = _replay(["--artifacts", tiny_artifacts, p])
    assert res.exit_code == 0, res.output
    assert got == _expected(tiny_artifacts, samples)


def test_a_missing_feature_is_an_error_naming_it(tiny_artifacts, samples, tmp_path):
    names = load_contract(tiny_artifacts).input.feature_names
    p = _write_csv(tmp_path / "two.csv", [names[0], names[2], "extra"], samples, [0, 2, 1])
    res, got = _replay(["--artifacts", tiny_artifacts, p])
    assert res.exit_code == DataError.exit_code and not got
    assert f"Error: {p}: no column {names[1]!r} for the feature {names[1]!r} (columns found: " \
           f"{names[0]}, {names[2]}, extra); fix [data] features or --features" in res.output
    assert "Traceback" not in res.output


def test_a_headerless_csv_is_taken_in_order(tiny_artifacts, samples, tmp_path):
    p = tmp_path / "plain.csv"
    p.write_text("\n".join(",".join(f"{v:.9g}" for v in row) for row in samples[0]) + "\n")
    res, got = _replay(["--artifacts", tiny_artifacts, p])
    assert res.exit_code == 0, res.output
    assert got == _expected(tiny_artifacts, samples[:1])


def test_check_features_refuses_other_names_and_reorders_known_ones(tiny_artifacts):
    engine = Engine.load(tiny_artifacts)
    names = tuple(engine.contract.input.feature_names)
    X = (np.arange(6, dtype=np.float32).reshape(2, 3),)
    assert check_features(engine, X, names[::-1])[0].tolist() == X[0][:, ::-1].tolist()
    assert check_features(engine, X, ("f0", "f1", "f2"))[0].tolist() == X[0].tolist()
    with pytest.raises(DataError) as e:
        check_features(engine, X, (names[0], names[1], "other"), source="s.csv")
    assert str(e.value) == (f"s.csv: no column for the model's feature(s) {names[2]} (columns: {names[0]}, "
                            f"{names[1]}, other; the model takes {', '.join(names)})")


def test_serve_maps_a_reordered_header_and_name_value_fields_by_name(tiny_artifacts, samples, tmp_path):
    names = load_contract(tiny_artifacts).input.feature_names
    first, second = samples
    lines = [",".join(names[k] for k in (2, 0, 1)).encode() + b"\n"]  # header: another order
    lines += [(",".join(f"{row[k]:.9g}" for k in (2, 0, 1)) + "\n").encode() for row in first]
    lines += [b"#reset\n"]
    lines += [(" ".join(f"{names[k]}:{row[k]:.9g}" for k in (1, 2, 0)) + "\n").encode() for row in second]
    lines.insert(3, f"{names[0]}:1 {names[1]}:2\n".encode())  # a feature missing: rejected, not served
    port = Port(tmp_path / "ttyDEVICE")
    d = Serve(tiny_artifacts, port.path, tmp_path / "state")
    port.send(b"\n")
    for line in lines:
        port.send(line)
    expected = _records(_expected(tiny_artifacts, samples))
    d.wait_records(len(expected))
    time.sleep(0.3)
    assert d.stop() == 0
    assert _records(d.records) == expected
    status = [line for line in d.log if "shutdown checkpoint written" in line][-1]
    assert "rejected_field_count=1" in status, status
