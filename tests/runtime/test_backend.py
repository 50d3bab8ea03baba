"""Interpreter backend: selection order, forcing, its log line; binding tensors by name."""
from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import sys
import types

import numpy as np
import pytest

from runtime import backend as B
from runtime.affine import AffineCast
from runtime.contract import load_contract
from runtime.engine import Engine
from runtime.errors import ConfigError, ContractError

AUTO_ORDER = ("tflite_runtime", "ai_edge_litert")  # tensorflow is never imported by these tests


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _block(monkeypatch, *packages: str) -> None:
    """Make ``import <package>`` fail as if the package were not installed."""
    for pkg in packages:
        for mod in [m for m in sys.modules if m == pkg or m.startswith(pkg + ".")]:
            monkeypatch.delitem(sys.modules, mod)
        monkeypatch.setitem(sys.modules, pkg, None)


def _fake_package(monkeypatch, package: str, module: str, version: str) -> type:
    """Install a stand-in interpreter package (so no real TensorFlow is ever imported)."""
    class Interpreter:  # noqa: D401 - a marker class
        pass

    pkg = types.ModuleType(package)
    pkg.__version__ = version
    mod = types.ModuleType(module)
    mod.Interpreter = Interpreter
    monkeypatch.setitem(sys.modules, package, pkg)
    monkeypatch.setitem(sys.modules, module, mod)
    return Interpreter


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(B.ENV_VAR, raising=False)
    monkeypatch.setattr(B, "_announced", set())  # each test sees the first choice's INFO line


# -- selection -------------------------------------------------------------------------
def test_auto_picks_the_first_installed_backend_and_logs_it(caplog):
    expected = next(n for n in AUTO_ORDER if _installed(n))
    with caplog.at_level(logging.INFO, logger="runtime.backend"):
        name, cls, version = B.choose_backend()
    assert name == expected
    assert cls.__name__ == "Interpreter"
    assert f"interpreter backend: {expected} {version} (first installed)" in caplog.text


def test_falls_back_in_order_and_warns_only_for_tensorflow(monkeypatch, caplog):
    _block(monkeypatch, "tflite_runtime")
    fake = _fake_package(monkeypatch, "ai_edge_litert", "ai_edge_litert.interpreter", "9.9")
    with caplog.at_level(logging.INFO, logger="runtime.backend"):
        assert B.choose_backend() == ("ai_edge_litert", fake, "9.9")
    assert "WARNING" not in caplog.text

    _block(monkeypatch, "ai_edge_litert")
    fake_tf = _fake_package(monkeypatch, "tensorflow", "tensorflow.lite", "2.0-fake")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="runtime.backend"):
        assert B.choose_backend() == ("tensorflow", fake_tf, "2.0-fake")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "tflite-runtime or ai-edge-litert" in warnings[0].getMessage()


def test_the_choice_is_named_at_info_once_per_process(caplog):
    with caplog.at_level(logging.DEBUG, logger="runtime.backend"):
        for _ in range(3):
            name, _, _ = B.choose_backend()
    levels = [r.levelno for r in caplog.records if "interpreter backend:" in r.getMessage()]
    assert levels == [logging.INFO, logging.DEBUG, logging.DEBUG]


def test_no_backend_installed_is_a_clear_error(monkeypatch):
    _block(monkeypatch, "tflite_runtime", "ai_edge_litert", "tensorflow")
    with pytest.raises(ConfigError, match="no TFLite interpreter is installed"):
        B.choose_backend()


@pytest.mark.parametrize("how", ["argument", "env"])
def test_forcing_a_backend(monkeypatch, caplog, how):
    fake = _fake_package(monkeypatch, "tensorflow", "tensorflow.lite", "2.0-fake")
    if how == "env":
        monkeypatch.setenv(B.ENV_VAR, "tf")  # an alias
        requested, source = None, "STEPWISE_BACKEND environment variable"
    else:
        requested, source = "tensorflow", "backend argument"
    with caplog.at_level(logging.INFO, logger="runtime.backend"):
        assert B.choose_backend(requested) == ("tensorflow", fake, "2.0-fake")
    assert f"interpreter backend: tensorflow 2.0-fake (forced by the {source})" in caplog.text


def test_forcing_a_missing_backend_names_it_and_where_it_was_asked(monkeypatch):
    _block(monkeypatch, "ai_edge_litert")
    monkeypatch.setenv(B.ENV_VAR, "litert")
    with pytest.raises(ConfigError, match=r"'ai_edge_litert' was forced by the STEPWISE_BACKEND"):
        B.choose_backend()


def test_unknown_backend_lists_the_accepted_names():
    with pytest.raises(ConfigError, match="tflite_runtime, ai_edge_litert, tensorflow or auto"):
        B.choose_backend("onnx")


def test_engine_reports_the_backend_it_runs_on(tiny_artifacts):
    expected = next(n for n in AUTO_ORDER if _installed(n))
    engine = Engine.load(tiny_artifacts, reset="never", backend=expected)
    assert engine.backend == expected


# -- binding by name -------------------------------------------------------------------
@pytest.fixture()
def artifacts_copy(tiny_artifacts, tmp_path):
    for f in tiny_artifacts.iterdir():
        if f.name == "manifest.json" or f.suffix == ".tflite":
            shutil.copy(f, tmp_path / f.name)
    return tmp_path


def _edit_manifest(folder, edit) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_binding_resolves_names_not_positions(tiny_artifacts):
    contract = load_contract(tiny_artifacts)
    spec = contract.variant("float32")
    model = B.load_model((tiny_artifacts / spec.file).read_bytes(), contract.signature_key)
    names = [contract.input.name] + [s.input for s in contract.states]
    assert sorted(model.inputs) == sorted(names)
    for name, t in {**model.inputs, **model.outputs}.items():
        assert t.index == spec.tensors[name].index
        assert t.shape == tuple(spec.tensors[name].shape[1:])


def test_a_state_name_missing_from_the_model_is_named(artifacts_copy):
    state = load_contract(artifacts_copy).states[-1]
    renamed = state.output + "_final"

    def edit(d):
        d["states"][-1]["output"] = renamed
        for v in d["variants"].values():
            v["tensors"][renamed] = v["tensors"][state.output]
    _edit_manifest(artifacts_copy, edit)
    with pytest.raises(ContractError, match=rf"no output tensor '{renamed}' \(it has: "):
        Engine.load(artifacts_copy, reset="never")


def test_a_name_missing_from_the_manifest_tensors_map_is_named(artifacts_copy):
    name = load_contract(artifacts_copy).states[0].input
    _edit_manifest(artifacts_copy, lambda d: d["variants"]["float32"]["tensors"].pop(name))
    with pytest.raises(ContractError, match=f"tensors map has no entry for '{name}'"):
        Engine.load(artifacts_copy, variant="float32", reset="never")


def test_a_shape_mismatch_names_the_tensor_and_both_shapes(artifacts_copy):
    state = load_contract(artifacts_copy).states[0]
    wrong = [1, state.shape[0] + 1]
    _edit_manifest(artifacts_copy,
                   lambda d: d["variants"]["float32"]["tensors"][state.input].update(shape=wrong))
    with pytest.raises(ContractError) as err:
        Engine.load(artifacts_copy, variant="float32", reset="never")
    assert str(err.value) == (f"tensor '{state.input}': shape (batch aside) is {list(state.shape)} "
                              f"in the model but {wrong[1:]} in the manifest")


def test_a_dtype_mismatch_names_the_tensor_and_both_dtypes(artifacts_copy):
    contract = load_contract(artifacts_copy)
    x = contract.input.name
    actual = contract.variant("int8").tensors[x].dtype
    wrong = "int16" if actual == "float32" else "float32"
    _edit_manifest(artifacts_copy,
                   lambda d: d["variants"]["int8"]["tensors"][x].update(dtype=wrong))
    message = f"tensor '{x}': dtype is {actual} in the model but {wrong}"
    with pytest.raises(ContractError, match=message):
        Engine.load(artifacts_copy, variant="int8", reset="never")


def test_a_wrong_signature_key_is_refused(artifacts_copy):
    _edit_manifest(artifacts_copy, lambda d: d.update(signature_key="serving_default"))
    with pytest.raises(ContractError, match=r"no signature 'serving_default' \(it has: step\)"):
        Engine.load(artifacts_copy, reset="never")


# -- quantization helpers --------------------------------------------------------------
def _q(name, dtype, scale, zero_point, shape=(4,)):
    return B.BoundTensor(name, 0, shape, np.dtype(dtype), scale, zero_point)


def test_requantizing_between_scales_matches_dequantize_then_quantize():
    src, dst = _q("s_out", "int8", 0.0226, -2), _q("s", "int8", 0.0312, 0)
    raw = np.arange(-128, 128, dtype=np.int8).reshape(64, 4)
    cast = AffineCast.between(src, dst, raw.shape)
    got = cast(raw)
    real = (raw.astype(np.float64) + 2) * 0.0226
    want = np.clip(np.rint(real / 0.0312), -128, 127).astype(np.int8)
    assert got.dtype == np.int8
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # float32 vs float64 rounding
    assert not cast.is_identity_on(np.int8)


def test_requantizing_saturates_instead_of_wrapping():
    src, dst = _q("a", "int16", 1.0, 0), _q("b", "int8", 1.0, 0)
    cast = AffineCast.between(src, dst, (4,))
    assert cast(np.array([-30000, -129, 127, 30000], np.int16)).tolist() == [-128, -128, 127, 127]


def test_nearly_equal_scales_are_recognised_as_an_identity():
    src, dst = _q("a", "int8", 0.0046086181, -20), _q("b", "int8", 0.0046086186, -20)
    assert AffineCast.between(src, dst, (1,)).is_identity_on(np.int8)


@pytest.mark.parametrize("dtype,scale,zp", [("int8", 0.013, -7), ("int16", 0.0004, 0)])
def test_float_to_stored_and_back_is_exact_on_the_grid(dtype, scale, zp):
    t = _q("s", dtype, scale, zp, shape=(3,))
    info = np.iinfo(dtype)
    raw = np.linspace(info.min, info.max, 300).astype(dtype).reshape(100, 3)
    back = t.to_raw(t.to_real(raw), np.zeros_like(raw))
    assert np.array_equal(back, raw)
