"""The TFLite Micro check: each step model runs in the microcontroller interpreter with its
states carried by name, matches the runtime engine, and reports its arena; a model with an
operator TFLite Micro lacks is reported by name, not raised."""
from __future__ import annotations

import dataclasses
import hashlib
import shutil

import numpy as np
import pytest

from pipeline.config import VerifyConfig
from pipeline.micro import _collect, check_all, check_variant, engine_outputs, micro_bars, micro_outputs
from runtime.contract import load_contract, write_contract
from runtime.errors import ContractError


@pytest.fixture(scope="module")
def contract(tiny_artifacts):
    return load_contract(tiny_artifacts)


@pytest.fixture(scope="module")
def X(tiny_artifacts) -> np.ndarray:
    with np.load(tiny_artifacts / "test_data.npz") as data:
        return data["X"][:60]


@pytest.fixture(scope="module")
def results(contract, tiny_artifacts, X) -> dict[str, dict]:
    return check_all(contract, tiny_artifacts, X)


def test_every_variant_runs_on_tflite_micro_within_its_bars(contract, results, X):
    assert set(results) == set(contract.variants)
    for variant, r in results.items():
        if not r["runs"]:  # allowed, but only with the operator named
            assert r["op"] and r["op"] in r["error"], r
            continue
        assert r["steps"] == X.shape[0] * X.shape[1]
        assert r["passed"] and not r["failed"], (variant, r)
        assert r["bars"] == micro_bars(variant, VerifyConfig())
        if variant == "float32":
            assert r["max_abs"] <= 1e-5
        else:  # same quantized math on both sides: at most a few output quantization steps
            assert r["p99_abs"] <= micro_bars(variant, VerifyConfig())["p99_abs"] and r["max_abs"] <= 0.02
            assert r["agreement"] >= micro_bars(variant, VerifyConfig())["agreement"]
            assert set(r["vs_float32"]) == {"max_abs", "p99_abs", "agreement"}
            assert r["vs_float32"]["p99_abs"] >= 0 and 0.9 <= r["vs_float32"]["agreement"] <= 1


def test_arena_sizes_are_measured(results):
    for variant, r in results.items():
        if r["runs"]:
            assert 0 < r["arena_used_bytes"] <= r["arena_bytes"] < 4 * 1024 * 1024, (variant, r)
            assert r["arena_bytes"] % 16 == 0


def test_states_are_really_carried(contract, tiny_artifacts, X):
    variant = contract.default_variant
    carried = micro_outputs(contract, tiny_artifacts, variant, X, find_arena=False)
    fresh = micro_outputs(contract, tiny_artifacts, variant, X, carry=False, find_arena=False)
    assert carried.runs and fresh.runs and carried.arena_bytes is None
    assert carried.y.shape == (X.shape[0], X.shape[1], contract.output.units)
    # the first step starts from the zero state either way; later steps need the carried state
    np.testing.assert_array_equal(carried.y[:, 0], fresh.y[:, 0])
    assert np.abs(carried.y[:, 1:] - fresh.y[:, 1:]).max() > 1e-2
    engine = engine_outputs(tiny_artifacts, variant, X)
    assert np.abs(carried.y - engine).max() <= 1e-5 < np.abs(fresh.y - engine).max()


def replace_op(model: bytes, old: str, new: str) -> bytes:
    """``model`` with every use of builtin operator ``old`` turned into ``new``."""
    import flatbuffers
    from tflite_micro.python.tflite_micro import runtime
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    m = runtime.convert_bytearray_to_object(bytearray(model))
    codes = schema.BuiltinOperator
    code = runtime.get_builtin_code_from_operator_code
    hits = [oc for oc in m.operatorCodes if code(oc) == getattr(codes, old)]
    assert hits, f"the model has no {old}"
    for oc in hits:
        oc.builtinCode = oc.deprecatedBuiltinCode = getattr(codes, new)
    builder = flatbuffers.Builder(0)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_an_operator_tflite_micro_lacks_is_reported_by_name(contract, tiny_artifacts, X, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(tiny_artifacts, art)
    spec = contract.variants["float32"]
    bad = replace_op((art / spec.file).read_bytes(), "TANH", "UNIQUE")
    (art / spec.file).write_bytes(bad)
    spec = dataclasses.replace(spec, sha256=hashlib.sha256(bad).hexdigest(), bytes=len(bad))
    broken = dataclasses.replace(contract, variants={**contract.variants, "float32": spec})
    write_contract(broken, art)
    r = check_variant(broken, art, "float32", X[:2])
    assert r["runs"] is False and r["op"] == "UNIQUE"
    assert "UNIQUE" in r["error"] and "allocating" in r["error"]


def test_a_model_that_does_not_match_the_manifest_is_refused(contract, tiny_artifacts, X):
    spec = contract.variants["float32"]
    name = contract.states[0].input
    tensors = {**spec.tensors, name: dataclasses.replace(spec.tensors[name], shape=(1, 999))}
    broken = dataclasses.replace(contract, variants={"float32": dataclasses.replace(spec, tensors=tensors)})
    with pytest.raises(ContractError, match=name):
        check_variant(broken, tiny_artifacts, "float32", X[:1])


def test_a_crashed_interpreter_is_reported_with_its_last_messages(tmp_path):
    (tmp_path / "tflm.log").write_text("phase: allocate\nFailed to allocate tail memory. Requested: 104\n")
    run = _collect(tmp_path, -11, "int8")
    assert not run.runs and "crashed (signal 11)" in run.error and "Requested: 104" in run.error
