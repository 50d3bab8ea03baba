"""stepwise export-c: the model arrays hold the model files byte for byte, the header
compiles as C99 and C++ and, read back by a compiled C program, says what the manifest
says (positions checked against the interpreter's own input/output order)."""
from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from firmware_bridge.export_c import (HEADER_NAME, bind_variant, export_c, read_model_io)
from runtime.backend import choose_backend
from stepwise_cli.main import cli
from runtime.contract import ModelContract, TensorSpec, load_contract
from runtime.errors import ContractError, ModelIntegrityError

CHECK_C = Path(__file__).resolve().parents[2] / "firmware_bridge" / "c" / "tests" / "export_check.c"
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
CXXFLAGS = ["-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic"]
DTYPE_CODES = {"float32": 1, "int32": 2, "uint8": 3, "int16": 7, "int8": 9}


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, **kw)
    assert result.returncode == 0, f"{cmd[0]} failed:\n{result.stderr!r}"
    return result


@pytest.fixture(scope="module")
def contract(tiny_artifacts) -> ModelContract:
    return load_contract(tiny_artifacts)


@pytest.fixture(scope="module")
def exported(contract, tiny_artifacts, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("firmware")
    export_c(contract, tiny_artifacts, out)
    return out


def header_records(out: Path, tmp: Path) -> list[list[str]]:
    """Compile export_check.c against ``out``/stepwise_model.h and run it."""
    exe = tmp / "export_check"
    run(["gcc", *CFLAGS, "-I", str(out), "-o", str(exe), str(CHECK_C)])
    return [line.split("\t") for line in run([str(exe)]).stdout.decode().splitlines()]


def f32(text: str) -> np.float32:
    return np.float32(float(text))


def test_writes_the_arrays_and_the_header_for_every_variant(contract, exported):
    expected = {HEADER_NAME} | {f"{v}_model_data.{ext}" for v in contract.variants for ext in ("h", "cc")}
    assert {p.name for p in exported.iterdir()} == expected


def test_model_arrays_equal_the_model_files_byte_for_byte(contract, exported, tiny_artifacts):
    for v, spec in contract.variants.items():
        model = (tiny_artifacts / spec.file).read_bytes()
        source = (exported / f"{v}_model_data.cc").read_text()
        decl = rf"alignas\(16\) const unsigned char g_{v}_model_data\[\] = \{{(.*?)\}};"
        body = re.search(decl, source, re.S)
        assert bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", body.group(1))) == model
        assert f"const unsigned int g_{v}_model_data_size = {len(model)};" in source
        header = (exported / f"{v}_model_data.h").read_text()
        assert f"extern const unsigned char g_{v}_model_data[];" in header
        assert f"extern const unsigned int g_{v}_model_data_size;" in header


def test_compiled_arrays_hold_the_model_bytes(contract, exported, tiny_artifacts, tmp_path):
    """g++ compiles each .cc; a program linked with them writes the arrays back out."""
    objects = []
    for v in contract.variants:
        obj = tmp_path / f"{v}.o"
        run(["g++", *CXXFLAGS, "-c", "-o", str(obj), str(exported / f"{v}_model_data.cc")])
        objects.append(str(obj))
    lines = [f'#include "{v}_model_data.h"' for v in contract.variants]
    lines += ["#include <cstdint>", "#include <cstdio>", "int main() {"]
    for v in contract.variants:
        lines += [f"  if ((reinterpret_cast<std::uintptr_t>(g_{v}_model_data) & 15u) != 0) return 2;",
                  f"  std::fwrite(g_{v}_model_data, 1, g_{v}_model_data_size, stdout);"]
    (tmp_path / "dump.cc").write_text("\n".join(lines + ["  return 0;", "}"]) + "\n")
    exe = tmp_path / "dump"
    run(["g++", *CXXFLAGS, "-I", str(exported), "-o", str(exe), str(tmp_path / "dump.cc"), *objects])
    expected = b"".join((tiny_artifacts / s.file).read_bytes() for s in contract.variants.values())
    assert run([str(exe)]).stdout == expected


@pytest.mark.parametrize("compiler, flags, suffix", [("gcc", CFLAGS, "c"), ("g++", CXXFLAGS, "cc")])
def test_header_compiles_as_c99_and_cpp(exported, tmp_path, compiler, flags, suffix):
    src = tmp_path / f"use.{suffix}"
    src.write_text('#include "stepwise_model.h"\n#include "stepwise_model.h"\n'
                   "int main(void) {\n"
                   "    return (int)sw_model_variants[SW_MODEL_DEFAULT_VARIANT].op_count == 0;\n}\n")
    run([compiler, *flags, "-I", str(exported), "-o", str(tmp_path / "use"), str(src)])
    assert run([str(tmp_path / "use")]).returncode == 0


def test_header_values_match_the_manifest(contract, exported, tiny_artifacts, tmp_path):
    recs = header_records(exported, tmp_path)
    by = lambda kind: [r[1:] for r in recs if r[0] == kind]  # noqa: E731
    inp = contract.input
    assert by("model") == [[str(contract.schema_version), contract.signature_key, inp.name,
                            str(contract.window.length or 0), contract.window.reset,
                            str(list(contract.variants).index(contract.default_variant))]]
    total = sum(s.size for s in contract.states)
    sizes = (inp.features, len(contract.states), total, 4 * total, len(contract.outputs),
             contract.output.units, len(contract.variants))
    assert by("sizes") == [[str(v) for v in sizes]]
    feats = by("feature")
    assert [f[0] for f in feats] == list(inp.feature_names)
    assert [f32(f[1]) for f in feats] == [np.float32(m) for m in inp.mean]
    assert [f32(f[2]) for f in feats] == [np.float32(s) for s in inp.std]
    offsets = np.cumsum([0] + [4 * s.size for s in contract.states])[:-1]
    assert by("state") == [[s.name, s.input, s.output, s.layer, s.kind, "1", str(s.size), str(off),
                            ",".join(map(str, s.shape))] for s, off in zip(contract.states, offsets)]
    assert by("output") == [[o.name, o.kind, str(("sigmoid", "softmax", "linear").index(o.kind)),
                             str(o.units), *o.labels] for o in contract.outputs]
    for v, spec in contract.variants.items():
        check_variant_records(contract, spec, recs, tiny_artifacts)


def check_variant_records(contract, spec, recs, artifacts: Path) -> None:
    v = spec.name
    (row,) = [r[2:] for r in recs if r[:2] == ["variant", v]]
    model = (artifacts / spec.file).read_bytes()
    assert row[:2] == [spec.file, str(spec.bytes)] and row[5:] == [spec.sha256, spec.sha256]
    assert int(row[2]) == read_model_io(model).operator_codes > 0
    # positions: the order of the interpreter's own input/output details
    _, interpreter_cls, _ = choose_backend()
    it = interpreter_cls(model_content=model)
    order = {True: [d["index"] for d in it.get_input_details()],
             False: [d["index"] for d in it.get_output_details()]}
    tensors = {r[2]: r[3:] for r in recs if r[:2] == ["tensor", v]}
    assert set(tensors) == set(spec.tensors) and int(row[4]) == len(tensors)
    for name, t in spec.tensors.items():
        is_input, position, index, dtype, scale, zp = tensors[name]
        assert int(index) == t.index and order[is_input == "1"][int(position)] == t.index
        assert (int(dtype), f32(scale), int(zp)) == (DTYPE_CODES[t.dtype], np.float32(t.scale), t.zero_point)
    assert [r[2] for r in recs if r[:2] == ["input", v]] == [contract.input.name]
    carry = [r[2:] for r in recs if r[:2] == ["carry", v]]
    assert carry == [[s.name, s.input, s.output] for s in contract.states]
    assert [r[2] for r in recs if r[:2] == ["out", v]] == [o.name for o in contract.outputs]


def test_awkward_names_values_and_measured_arena_survive_the_round_trip(contract, tiny_artifacts, tmp_path):
    names = ('quote"d', "back\\slash", "tilt-\u00b5?")[: contract.input.features]
    names += tuple(f"f{i}" for i in range(len(names), contract.input.features))
    mean = (1e-38, -123456.789, 0.1, 3.0517578125e-05)[: contract.input.features]
    mean += (0.0,) * (contract.input.features - len(mean))
    variants = dict(contract.variants)
    first, *rest = variants
    variants[first] = dataclasses.replace(variants[first], micro={"runs": True, "arena_bytes": 15504})
    for v in rest:
        variants[v] = dataclasses.replace(variants[v], micro={"runs": False, "error": "op"})
    odd = dataclasses.replace(contract, variants=variants,
                              input=dataclasses.replace(contract.input, feature_names=names, mean=mean),
                              window=dataclasses.replace(contract.window, length=None))
    out = tmp_path / "fw"
    export_c(odd, tiny_artifacts, out)
    recs = header_records(out, tmp_path)
    feats = [r[1:] for r in recs if r[0] == "feature"]
    assert [f[0] for f in feats] == list(names)
    assert [f32(f[1]) for f in feats] == [np.float32(m) for m in mean]
    assert [r[4] for r in recs if r[0] == "model"] == ["0"]
    arenas = {r[1]: r[5] for r in recs if r[0] == "variant"}
    assert arenas == {first: "15504", **{v: "0" for v in rest}}


def test_cli_writes_into_artifacts_firmware_by_default(contract, exported, tiny_artifacts, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(tiny_artifacts, art)
    result = CliRunner().invoke(cli, ["export-c", "--artifacts", str(art)])
    assert result.exit_code == 0, result.output
    written = sorted(Path(line) for line in result.output.split())
    assert written == sorted(art / "firmware" / p.name for p in exported.iterdir())
    for path in written:
        assert path.read_bytes() == (exported / path.name).read_bytes()
    result = CliRunner().invoke(cli, ["export-c", "--artifacts", str(art), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0 and len(list((tmp_path / "o").iterdir())) == len(written)


def test_a_tampered_model_file_is_refused(contract, tiny_artifacts, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(tiny_artifacts, art)
    spec = contract.variants[list(contract.variants)[-1]]
    data = bytearray((art / spec.file).read_bytes())
    data[len(data) // 2] ^= 0x01
    (art / spec.file).write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        export_c(contract, art, tmp_path / "fw")
    assert not (tmp_path / "fw").exists()
    result = CliRunner().invoke(cli, ["export-c", "--artifacts", str(art), "--out", str(tmp_path / "fw2")])
    assert result.exit_code == ModelIntegrityError.exit_code and spec.file in result.output
    assert not (tmp_path / "fw2").exists()


def test_a_manifest_index_the_model_does_not_have_is_refused(contract, tiny_artifacts, tmp_path):
    spec = contract.variants[contract.default_variant]
    model = (tiny_artifacts / spec.file).read_bytes()
    state = contract.states[0]
    wrong = spec.tensors[contract.input.name].index
    tensors = {**spec.tensors, state.input: dataclasses.replace(spec.tensors[state.input], index=wrong)}
    with pytest.raises(ContractError, match=state.input):
        bind_variant(contract, dataclasses.replace(spec, tensors=tensors), model)
    bad_shape = TensorSpec(index=spec.tensors[state.input].index, shape=(1, state.size + 1), dtype="float32")
    with pytest.raises(ContractError, match="shape"):
        tensors = {**spec.tensors, state.input: bad_shape}
        bind_variant(contract, dataclasses.replace(spec, tensors=tensors), model)
    with pytest.raises(ContractError, match="TFLite"):
        read_model_io(b"\x00" * 64)


def test_missing_manifest_is_a_clear_cli_error(tmp_path):
    result = CliRunner().invoke(cli, ["export-c", "--artifacts", str(tmp_path)])
    assert result.exit_code == ContractError.exit_code and "no manifest" in result.output
