"""The manifest is checked at load: every tampering is a one-line ``ContractError`` that
names the field (exit code 4 from the command line), never a traceback or a silent run."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.contract import MAX_MANIFEST_BYTES, load_contract, read_model_bytes
from runtime.engine import Engine
from runtime.errors import ContractError, StepwiseError

MANIFEST = "manifest.json"


@pytest.fixture
def folder(tiny_artifacts, tmp_path) -> Path:
    out = tmp_path / "artifacts"
    out.mkdir()
    for f in tiny_artifacts.iterdir():
        if f.name == MANIFEST or f.suffix == ".tflite":
            shutil.copy(f, out / f.name)
    return out


def edit(folder: Path, change) -> None:
    path = folder / MANIFEST
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def setter(dotted: str, value):
    """A change that sets ``a.b[2].c`` (keys and list indexes) to ``value``."""
    def change(data):
        *head, last = dotted.replace("[", ".").replace("]", "").split(".")
        node = data
        for key in head:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value
    return change


FLOAT = "variants.float32"
MUTATIONS = {
    "file is a folder": (setter(f"{FLOAT}.file", "."), "is a folder, not a file"),
    "file is empty": (setter(f"{FLOAT}.file", ""), f"manifest field {FLOAT}.file: must not be empty"),
    "file is a number": (setter(f"{FLOAT}.file", 123), f"manifest field {FLOAT}.file: must be a string, got 123"),
    "file goes up": (setter(f"{FLOAT}.file", "../outside/evil.tflite"),
                     f"manifest field {FLOAT}.file: must be a file inside the artifacts folder, "
                     "got '../outside/evil.tflite'"),
    "file is absolute": (setter(f"{FLOAT}.file", "/etc/passwd"),
                         f"manifest field {FLOAT}.file: must be a file inside the artifacts folder, got '/etc/passwd'"),
    "variants as a list": (setter("variants", []), "manifest field variants: must be an object, got []"),
    "no variants": (setter("variants", {}), "manifest field variants: must name at least one variant"),
    "labels empty": (setter("outputs[0].labels", []),
                     "manifest field outputs[0].labels: must have 2 entries for 1 sigmoid unit(s), got 0"),
    "units 0": (setter("outputs[0].units", 0), "manifest field outputs[0].units: must be 1..65536, got 0"),
    "units true": (setter("outputs[0].units", True), "manifest field outputs[0].units: must be an integer, got True"),
    "kind bogus": (setter("outputs[0].kind", "bogus"),
                   "manifest field outputs[0].kind: must be one of sigmoid, softmax, linear, got 'bogus'"),
    "duplicate feature names": (setter("input.feature_names", ["ax", "ax", "az"]),
                                "manifest field input.feature_names: names 'ax' twice"),
    "feature names too few": (setter("input.feature_names", ["ax"]),
                              "manifest field input.feature_names: must have 3 entries, got 1"),
    "std infinite": (setter("input.std[1]", float("inf")),
                     "manifest field input.std[1]: must be a finite number above 0, got inf"),
    "std zero": (setter("input.std[0]", 0), "manifest field input.std[0]: must be a finite number above 0, got 0"),
    "mean a string": (setter("input.mean[2]", "0.1"), "manifest field input.mean[2]: must be a finite number, got '0.1'"),
    "states as an object": (setter("states", {}), "manifest field states: must be a list, got {}"),
    "no states": (setter("states", []), "the model's signature 'step' has input tensor(s) lstm_0_c, lstm_0_h, "
                                        "lstm_1_c, lstm_1_h that the manifest does not declare"),
    "state kind": (setter("states[0].kind", "q"), "manifest field states[0].kind: must be one of h, c, ring, got 'q'"),
    "state shape": (setter("states[1].shape", [-8]),
                    "manifest field states[1].shape[0]: must be an integer 1..16777216, got -8"),
    "state names twice": (setter("states[1].name", "lstm_0_h"), "manifest field states: names 'lstm_0_h' twice"),
    "sha256 short": (setter(f"{FLOAT}.sha256", "abc"), f"manifest field {FLOAT}.sha256: must be 64 lowercase hex "
                                                       "digits, got 'abc'"),
    "bytes negative": (setter(f"{FLOAT}.bytes", -1), f"manifest field {FLOAT}.bytes: must be 1..1073741824, got -1"),
    "tensor dtype": (setter(f"{FLOAT}.tensors.x.dtype", "complex"),
                     f"manifest field {FLOAT}.tensors.x.dtype: must be one of float32, int8, int16, uint8, int32, "
                     "int64, bool, got 'complex'"),
    "default variant unknown": (setter("default_variant", "fp64"),
                                "manifest field default_variant: 'fp64' is not one of the variants"),
    "window length": (setter("window.length", 0), "manifest field window.length: must be 1..2147483648, got 0"),
    "window stride": (setter("window.stride", 0), "manifest field window.stride: must be 1..2147483648, got 0"),
    "window stride text": (setter("window.stride", "5"), "manifest field window.stride: must be an integer, got '5'"),
    "class labels": (setter("outputs[0].labels", ["idle"]), "manifest field outputs[0].labels: must have 2 entries "
                                                            "for 1 sigmoid unit(s), got 1"),
    "missing input": (lambda d: d.pop("input"), "manifest field input: is missing"),
    "schema version": (setter("schema_version", 2), "manifest schema_version 2 is not supported"),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_each_tampering_is_named(folder, name):
    change, message = MUTATIONS[name]
    edit(folder, change)
    with pytest.raises(ContractError) as e:
        Engine.load(folder, reset="never")
    assert message in str(e.value) and "\n" not in str(e.value)
    assert e.value.exit_code == 4


def write_manifest(folder: Path, raw: bytes) -> None:
    (folder / MANIFEST).write_bytes(raw)


@pytest.mark.parametrize("raw, message", [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"{\"a\": " * 40 + b"1" + b"}" * 40, "nested more than 32 levels deep"),
    ("{\"schema_version\": 1, \"x\": \"\xe9\"}".encode("latin-1"), "is not UTF-8 (byte 28)"),
    (b"123", "manifest must be a JSON object, got int"),
    (b"{\"schema_version\": " + b"1" * 5000 + b"}", "is not valid JSON: Exceeds the limit"),
    (b"{\"schema_version\": NaN}", "manifest field schema_version: must be an integer, got nan"),
    (b" " * (MAX_MANIFEST_BYTES + 1), f"more than the {MAX_MANIFEST_BYTES} allowed"),
])
def test_malformed_manifest_files(folder, raw, message):
    write_manifest(folder, raw)
    with pytest.raises(ContractError, match=None) as e:
        load_contract(folder)
    assert message in str(e.value)


def test_a_device_or_fifo_as_manifest_is_refused_without_reading_it(folder):
    (folder / MANIFEST).unlink()
    (folder / MANIFEST).symlink_to("/dev/zero")
    with pytest.raises(ContractError, match="is not a regular file"):
        load_contract(folder)
    (folder / MANIFEST).unlink()
    os.mkfifo(folder / MANIFEST)  # opening it for reading would block without O_NONBLOCK
    with pytest.raises(ContractError, match="is not a regular file"):
        load_contract(folder)


def test_model_file_links_sizes_and_devices(folder, tmp_path):
    contract = load_contract(folder)
    model = folder / contract.variant("float32").file
    outside = tmp_path / "outside.tflite"
    shutil.move(model, outside)
    model.symlink_to(outside)  # same bytes, same sha256, but outside the folder
    with pytest.raises(ContractError, match="leads out of the artifacts folder"):
        read_model_bytes(contract, folder, "float32")
    model.unlink()
    model.symlink_to("/dev/zero")
    with pytest.raises(ContractError, match="leads out of the artifacts folder"):
        read_model_bytes(contract, folder, "float32")
    model.unlink()
    model.write_bytes(outside.read_bytes() + b"\0")
    with pytest.raises(ContractError, match=rf"is {contract.variant('float32').bytes + 1} bytes, more than"):
        read_model_bytes(contract, folder, "float32")


def test_a_state_left_out_of_the_manifest_is_named(folder):
    edit(folder, lambda d: d["states"].pop())
    with pytest.raises(ContractError, match="has input tensor\\(s\\) lstm_1_c that the manifest does not declare"):
        Engine.load(folder, reset="never")


def test_the_command_line_reports_one_line_and_exit_4(folder, tmp_path):
    edit(folder, setter("input.std[1]", float("inf")))
    data = tmp_path / "x.csv"
    data.write_text("ax,ay,az\n1,2,3\n")
    result = subprocess.run([sys.executable, "-m", "stepwise_cli", "replay", "--artifacts", str(folder),
                             str(data)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 4, result.stderr
    assert "manifest field input.std[1]: must be a finite number above 0, got inf" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


# --------------------------------------------------------------------------------- fuzzing

def _mutate(value, draw):
    """One random edit somewhere in a JSON tree."""
    if isinstance(value, dict) and value and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(value)))
        return {**value, key: _mutate(value[key], draw)}
    if isinstance(value, list) and value and draw(st.booleans()):
        i = draw(st.integers(0, len(value) - 1))
        return value[:i] + [_mutate(value[i], draw)] + value[i + 1:]
    return draw(st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(),
                          st.text(max_size=8), st.just([]), st.just({}), st.just(["x"])))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_manifest_loader_raises_only_contract_errors(tiny_artifacts, data):
    from runtime.contract import ModelContract

    original = json.loads((tiny_artifacts / MANIFEST).read_text())
    mutated = original
    for _ in range(data.draw(st.integers(1, 3))):
        mutated = _mutate(mutated, data.draw)
    try:
        contract = ModelContract.from_dict(mutated)
    except StepwiseError as e:
        assert isinstance(e, ContractError) and "\n" not in str(e)
        return
    contract.input.normalisation()  # what passes is usable
    assert contract.output.kind in ("sigmoid", "softmax", "linear")


def test_window_stride_and_class_names_round_trip(folder):
    edit(folder, setter("window.stride", 5))
    edit(folder, setter("outputs[0].labels", ["idle", "shake"]))
    c = load_contract(folder)
    assert c.window.stride == 5 and c.output.labels == ("idle", "shake")
    assert json.loads(c.to_json())["window"]["stride"] == 5
    edit(folder, lambda d: d["window"].pop("stride"))
    assert "stride" not in json.loads(load_contract(folder).to_json())["window"]  # absent stays absent
