"""What a build writes: the manifest contract, the files, the report; verify and convert."""
from __future__ import annotations

import hashlib
import json
import tomllib

import keras
import numpy as np
from click.testing import CliRunner

from stepwise_cli.main import cli
from runtime.contract import load_contract
from runtime.errors import VerificationError


def test_manifest_describes_the_model_completely(tiny_artifacts):
    m = json.loads((tiny_artifacts / "manifest.json").read_text())
    assert m["schema_version"] == 1 and m["signature_key"] == "step"
    assert m["tool"]["tensorflow"].startswith("2.") and m["tool"]["keras"].startswith("3.")
    assert m["input"]["name"] == "x" and m["input"]["features"] == 3
    assert m["input"]["feature_names"] == ["ax", "ay", "az"] and len(m["input"]["std"]) == 3
    assert [(s["name"], s["input"], s["output"], s["shape"], s["kind"]) for s in m["states"]] == [
        ("lstm_0_h", "lstm_0_h", "lstm_0_h_out", [8], "h"), ("lstm_0_c", "lstm_0_c", "lstm_0_c_out", [8], "c"),
        ("lstm_1_h", "lstm_1_h", "lstm_1_h_out", [4], "h"), ("lstm_1_c", "lstm_1_c", "lstm_1_c_out", [4], "c")]
    assert m["outputs"] == [{"name": "y", "kind": "sigmoid", "units": 1, "labels": ["0", "1"]}]
    assert m["window"] == {"length": 7, "reset": "sliding:7", "mode": "stream", "warmup": 0}
    assert set(m["variants"]) == {"float32", "int16x8", "int8"}
    assert m["variants"][m["default_variant"]]["passed"]
    names = {"x", "y"} | {s["input"] for s in m["states"]} | {s["output"] for s in m["states"]}
    for name, v in m["variants"].items():
        blob = (tiny_artifacts / v["file"]).read_bytes()
        assert v["sha256"] == hashlib.sha256(blob).hexdigest() and v["bytes"] == len(blob)
        assert set(v["tensors"]) == names
        assert len({t["index"] for t in v["tensors"].values()}) == len(names)
        assert {"max_abs", "p99_abs", "agreement", "accuracy", "drift_max_abs", "latency_us", "decisive_agreement",
                "ambiguous_share", "accuracy_delta", "drift_decisive_agreement"} <= set(v["verification"])
        assert v["passed"] == (not v["verification"]["failed"]) == (v["verification"]["status"] == "pass")
    q8 = m["variants"]["int8"]["quantization"]
    assert q8["ops"]["FULLY_CONNECTED"] == {"int8": q8["ops"]["FULLY_CONNECTED"]["int8"]}
    assert m["variants"]["int16x8"]["quantization"]["ops"]["FULLY_CONNECTED"].keys() == {"int16"}
    assert m["variants"]["float32"]["verification"]["max_abs"] <= 1e-5


def test_build_writes_config_report_and_test_set(tiny_artifacts):
    cfg = tomllib.loads((tiny_artifacts / "config.toml").read_text())
    assert cfg["model"]["units"] == [8, 4] and cfg["train"]["epochs"] == 4
    report = (tiny_artifacts / "report" / "report.md").read_text()
    assert "float32" in report and "int8" in report and "![sequences.png]" in report
    for png in ("sequences.png", "quantization_error.png", "training.png"):
        assert (tiny_artifacts / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(tiny_artifacts / "test_data.npz", allow_pickle=False) as z:
        assert z["X"].shape[1:] == (7, 3) and len(z["y"]) == len(z["X"])
    assert list((tiny_artifacts).glob(".staging-*")) == []
    firmware = tiny_artifacts / "firmware"
    assert {p.name for p in firmware.iterdir()} >= {
        "stepwise_model.h", "float32_model_data.h", "float32_model_data.cc", "int8_model_data.cc"}


def test_build_records_the_microcontroller_check(tiny_artifacts):
    m = json.loads((tiny_artifacts / "manifest.json").read_text())
    for name, v in m["variants"].items():
        assert v["micro"]["runs"] is True, (name, v["micro"])
        assert v["micro"]["arena_bytes"] > 1000
    assert m["variants"]["float32"]["micro"]["max_abs"] <= 1e-5
    assert "TFLite Micro" in (tiny_artifacts / "report" / "report.md").read_text()


def test_verify_passes_and_names_a_missed_bar(tiny_artifacts, tmp_path):
    ok = CliRunner().invoke(cli, ["verify", "--artifacts", str(tiny_artifacts), "--variant", "float32"])
    assert ok.exit_code == 0, ok.output
    assert "all bars passed" in ok.output and "float32" in ok.output and "decisive" in ok.output
    strict = tmp_path / "strict.toml"
    strict.write_text("[verify]\nfloat_max_abs = 1e-12\ndrift_steps = 200\n")
    bad = CliRunner().invoke(cli, ["verify", "--artifacts", str(tiny_artifacts), "--variant", "float32",
                                   "--config", str(strict)])
    assert bad.exit_code == VerificationError.exit_code
    assert "bar missed: float32 parity: max_abs=" in bad.output and "max_abs <= 1e-12" in bad.output


def test_convert_a_model_trained_elsewhere(tmp_path):
    """Stacked LSTM with LeakyReLU and Dropout, trained outside stepwise, saved as .keras and .h5."""
    keras.backend.clear_session()  # layer names (and so state names) as in a fresh process
    keras.utils.set_random_seed(4)
    rng = np.random.default_rng(4)
    X = rng.normal(size=(120, 7, 3)).astype(np.float32)
    y = (X[:, :3, 0].sum(1) > X[:, 4:, 1].sum(1)).astype(np.int64)
    model = keras.Sequential([
        keras.Input((7, 3)), keras.layers.LSTM(12, return_sequences=True), keras.layers.LeakyReLU(0.1),
        keras.layers.Dropout(0.2), keras.layers.LSTM(6), keras.layers.Dropout(0.1),
        keras.layers.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy")
    model.fit(X, y, epochs=2, verbose=0)
    np.savez(tmp_path / "data.npz", X=X, y=y)
    for suffix in (".keras", ".h5"):
        model.save(tmp_path / f"model{suffix}")
        out = tmp_path / f"out{suffix}"
        res = CliRunner().invoke(cli, ["convert", str(tmp_path / f"model{suffix}"), "--data",
                                       str(tmp_path / "data.npz"), "--out", str(out), "--config",
                                       str(_small_verify(tmp_path)), "--no-finetune"])
        assert res.exit_code == 0, res.output
        c = load_contract(out)
        assert c.input.mean == (0.0, 0.0, 0.0) and c.input.std == (1.0, 1.0, 1.0)  # the model's own inputs
        assert [s.name for s in c.states] == ["lstm_h", "lstm_c", "lstm_1_h", "lstm_1_c"]
        assert c.variants["float32"].verification["max_abs"] <= 1e-5
        assert c.variants["float32"].verification["drift_max_abs"] <= 1e-4


def _small_verify(tmp_path):
    p = tmp_path / "small.toml"
    p.write_text("[verify]\ndrift_steps = 500\nlatency_steps = 100\n[quantize]\ncalibration_stream_steps = 100\n"
                 "recipes = [\"per_gate\"]\n")
    return p


def test_verify_reports_a_variant_without_decisive_steps_as_not_judgeable(tiny_artifacts, tmp_path):
    cfg = tmp_path / "margin.toml"  # no output is 0.9 away from 0.5: nothing is decisive
    cfg.write_text("[verify]\ndecisive_margin = 0.9\ndrift_steps = 200\nlatency_steps = 10\n")
    out = CliRunner().invoke(cli, ["verify", "--artifacts", str(tiny_artifacts), "--variant", "int8",
                                   "--config", str(cfg)])
    assert out.exit_code == VerificationError.exit_code, out.output
    assert "not judgeable" in out.output and "int8 not judgeable: 0 of " in out.output
    assert "bar missed" not in out.output


def test_manifest_records_each_quantized_variants_recipe_and_a_recommendation(tiny_artifacts):
    m = json.loads((tiny_artifacts / "manifest.json").read_text())
    for v in ("int16x8", "int8"):
        recipe = m["variants"][v]["quantization"]["recipe"]
        assert recipe["name"] in [t["recipe"] for t in recipe["tried"]] and recipe["selected_on"] == "validation split"
        assert all({"status", "settings"} <= set(t) for t in recipe["tried"])
    linux, mcu = m["recommended"]["linux"], m["recommended"]["microcontroller"]
    passing = [v for v, spec in m["variants"].items() if spec["passed"]]
    assert linux["variant"] == min(passing, key=lambda v: m["variants"][v]["verification"]["latency_us"])
    assert mcu["variant"] in passing + [None] and mcu["why"]
    report = (tiny_artifacts / "report" / "report.md").read_text()
    assert "## Recommended variant per target" in report and "- recipe: **" in report
