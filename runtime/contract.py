"""The artifact contract: ``artifacts/manifest.json``.

The pipeline writes it (last, atomically); the runtime and the firmware side read only
this. Nothing about the model is hard-coded on the device: shapes, names, normalisation,
quantization parameters and the tensor index map all come from here.

Layout (``schema_version`` 1)::

    {
      "schema_version": 1,
      "tool": {"name": "stepwise", "version": "...", "tensorflow": "...", "keras": "..."},
      "signature_key": "step",
      "input":  {"name": "x", "features": 3, "feature_names": [...], "dtype": "float32",
                 "mean": [...], "std": [...]},
      "states": [{"name": "lstm_h", "input": "lstm_h", "output": "lstm_h_out",
                  "shape": [32], "dtype": "float32", "layer": "lstm", "kind": "h"}, ...],
      "outputs": [{"name": "y", "kind": "sigmoid", "units": 1, "labels": ["0", "1"]}],
      "window": {"length": 7, "reset": "sliding:7", "mode": "stream", "warmup": 0},
                 (and "stride": S when the training windows were cut every S samples)
      "variants": {"float32": {"file": "step_float32.tflite", "sha256": "...", "bytes": 1234,
                               "quantization": {...}, "tensors": {"x": {...}, ...},
                               "verification": {...}, "passed": true}, ...},
      "default_variant": "float32"
    }

``variants[v].tensors`` maps every signature name (the sample input, each state's input
and output, each output) to ``{"index", "shape", "dtype", "scale", "zero_point"}`` of
that variant's model file. ``shape`` there includes the batch axis (1).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.atomic import atomic_write_bytes
from runtime.contract_check import OUTPUT_KINDS, SCHEMA_VERSION, check_manifest  # noqa: F401 (re-exported)
from runtime.errors import ContractError, ModelIntegrityError

MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 4 << 20  # a real one is a few kB
VARIANTS = ("float32", "int16x8", "int8")


@dataclass(frozen=True)
class InputSpec:
    """The per-sample input: ``[batch, features]`` float32 before normalisation."""

    name: str
    features: int
    feature_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dtype: str = "float32"

    def normalisation(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std)``, float32 ``[features]`` each; ``ContractError`` unless there are
        ``features`` means and as many positive stds."""
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        if mean.shape != (self.features,) or std.shape != (self.features,) or not np.all(std > 0):
            raise ContractError(f"manifest normalisation needs {self.features} means and "
                                f"positive stds, got mean={self.mean} std={self.std}")
        return mean, std

    def normalise(self, x) -> np.ndarray:
        """Raw samples ``[..., features]`` -> the model's input ``(x - mean) / std``, in
        float32: the engine's arithmetic exactly (it does the same in place, per step)."""
        mean, std = self.normalisation()
        return (np.asarray(x, np.float32) - mean) / std


@dataclass(frozen=True)
class StateSpec:
    """One recurrent state tensor, carried from ``output`` back into ``input``.

    ``shape`` excludes the batch axis, e.g. ``[units]`` for an LSTM's h or c.
    """

    name: str
    input: str
    output: str
    shape: tuple[int, ...]
    layer: str
    kind: str  # "h", "c" or "ring" (a convolution's input history, a window head's outputs)
    dtype: str = "float32"
    warmup: int = 0  # steps after a reset that leave it as it is (a valid convolution below fills)

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def decision_threshold(kind: str, units: int) -> float | None:
    """The output value where the class flips: 0.5 for one sigmoid unit or two softmax
    units; None where the class is an argmax over more (no fixed threshold)."""
    return 0.5 if (kind, units) in (("sigmoid", 1), ("softmax", 2)) else None


@dataclass(frozen=True)
class OutputSpec:
    name: str
    kind: str  # one of OUTPUT_KINDS
    units: int
    labels: tuple[str, ...]

    def class_of(self, y) -> int:
        """``classes`` of one output vector ``y`` ``[units]``, without array overhead (the
        daemon asks once per sample)."""
        if self.kind == "sigmoid" and self.units == 1:
            return int(float(y[0]) >= 0.5)
        return int(np.argmax(y))

    @property
    def threshold(self) -> float | None:
        return decision_threshold(self.kind, self.units)

    def label_of(self, y) -> str:
        """Class label for one output vector ``y`` ``[units]``."""
        best = self.class_of(y)
        return self.labels[best] if best < len(self.labels) else str(best)


def classes(y, kind: str) -> np.ndarray:
    """The class decision, the one rule: output vectors ``[..., units]`` -> int64 ``[...]``.
    A single sigmoid unit is class 1 at ``y >= 0.5``, else 0; otherwise the largest output
    (the first of equal ones)."""
    y = np.asarray(y)
    if kind == "sigmoid" and y.shape[-1] == 1:
        return (y[..., 0] >= 0.5).astype(np.int64)
    return np.argmax(y, axis=-1).astype(np.int64)


@dataclass(frozen=True)
class TensorSpec:
    """A tensor of one variant's model file."""

    index: int
    shape: tuple[int, ...]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.dtype in ("int8", "int16", "uint8") and self.scale > 0.0


@dataclass(frozen=True)
class VariantSpec:
    name: str
    file: str
    sha256: str
    bytes: int
    tensors: dict[str, TensorSpec]
    quantization: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    passed: bool = True
    micro: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WindowSpec:
    """``mode`` ``"stream"``: one output per prefix; ``"window_head"``: the head reads a
    fixed window of ``length`` steps, streamed exactly under ``sliding:length``.
    ``warmup``: outputs after a reset that come from a zero-left-padded window."""

    length: int | None
    reset: str
    mode: str = "stream"
    warmup: int = 0
    stride: int | None = None  # training windows cut from longer recordings every stride samples


@dataclass(frozen=True)
class ModelContract:
    schema_version: int
    tool: dict[str, str]
    signature_key: str
    input: InputSpec
    states: tuple[StateSpec, ...]
    outputs: tuple[OutputSpec, ...]
    window: WindowSpec
    variants: dict[str, VariantSpec]
    default_variant: str
    recommended: dict[str, Any] = field(default_factory=dict)  # target -> {"variant", "why"}

    @property
    def output(self) -> OutputSpec:
        return self.outputs[0]

    def variant(self, name: str | None = None) -> VariantSpec:
        name = name or self.default_variant
        if name not in self.variants:
            raise ContractError(
                f"variant {name!r} is not in the manifest (it has: {', '.join(self.variants)})"
            )
        return self.variants[name]

    # -- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = _plain(dataclasses.asdict(self))
        if d["window"]["stride"] is None:  # not cut from longer recordings: as before windowing existed
            del d["window"]["stride"]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelContract":
        """The contract of a parsed manifest; ``ContractError`` naming the first bad field."""
        check_manifest(d)
        try:
            version = d["schema_version"]
            inp = d["input"]
            return cls(
                schema_version=version,
                tool=dict(d.get("tool", {})),
                signature_key=str(d["signature_key"]),
                input=InputSpec(
                    name=inp["name"],
                    features=int(inp["features"]),
                    feature_names=tuple(inp["feature_names"]),
                    mean=tuple(float(v) for v in inp["mean"]),
                    std=tuple(float(v) for v in inp["std"]),
                    dtype=inp.get("dtype", "float32"),
                ),
                states=tuple(
                    StateSpec(
                        name=s["name"], input=s["input"], output=s["output"],
                        shape=tuple(int(v) for v in s["shape"]), layer=s["layer"],
                        kind=s["kind"], dtype=s.get("dtype", "float32"),
                        warmup=int(s.get("warmup", 0)),
                    )
                    for s in d["states"]
                ),
                outputs=tuple(
                    OutputSpec(name=o["name"], kind=o["kind"], units=int(o["units"]),
                               labels=tuple(str(v) for v in o["labels"]))
                    for o in d["outputs"]
                ),
                window=WindowSpec(length=d["window"].get("length"), reset=d["window"]["reset"],
                                  mode=str(d["window"].get("mode", "stream")),
                                  warmup=int(d["window"].get("warmup", 0)),
                                  stride=d["window"].get("stride")),
                variants={k: _variant_from_dict(k, v) for k, v in d["variants"].items()},
                default_variant=str(d["default_variant"]),
                recommended=dict(d.get("recommended", {})),
            )
        except ContractError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise ContractError(f"manifest is malformed: {type(e).__name__}: {e}") from None


def _variant_from_dict(name: str, v: dict[str, Any]) -> VariantSpec:
    return VariantSpec(
        name=name,
        file=v["file"],
        sha256=v["sha256"],
        bytes=int(v["bytes"]),
        tensors={
            k: TensorSpec(index=int(t["index"]), shape=tuple(int(s) for s in t["shape"]),
                          dtype=t["dtype"], scale=float(t.get("scale", 0.0)),
                          zero_point=int(t.get("zero_point", 0)))
            for k, t in v["tensors"].items()
        },
        quantization=dict(v.get("quantization", {})),
        verification=dict(v.get("verification", {})),
        passed=bool(v.get("passed", True)),
        micro=dict(v.get("micro", {})),
    )


def _plain(obj: Any) -> Any:
    """Tuples to lists, recursively, so the JSON is the same after a round trip."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# -- files -------------------------------------------------------------------------
def load_contract(artifacts: str | os.PathLike) -> ModelContract:
    """Read and check ``<artifacts>/manifest.json`` (a regular file of at most
    ``MAX_MANIFEST_BYTES``, UTF-8 JSON, every field as ``contract_check`` wants it)."""
    path = Path(artifacts) / MANIFEST_NAME
    try:
        raw = read_regular_file(path, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise ContractError(
            f"no manifest at {path}: run 'stepwise build' (or 'make build') first, "
            f"or point --artifacts at a folder that has one"
        ) from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ContractError(f"{path} is not UTF-8 (byte {e.start})") from None
    except ValueError as e:  # JSONDecodeError, or an integer of more than 4300 digits
        raise ContractError(f"{path} is not valid JSON: {e}") from None
    except RecursionError:
        raise ContractError(f"{path} is nested too deeply to be a manifest") from None
    return ModelContract.from_dict(data)


def read_regular_file(path: Path, limit: int) -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes; ``ContractError``
    for anything else (a folder, a FIFO, a device such as ``/dev/zero``, a larger file).
    ``FileNotFoundError`` passes through."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ContractError(f"cannot read {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ContractError(f"{path} is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise ContractError(f"{path} is not a regular file")
        if st.st_size > limit:
            raise ContractError(f"{path} is {st.st_size} bytes, more than the {limit} allowed")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ContractError(f"{path} grew past the {limit} bytes allowed while being read")
    return data


def write_contract(contract: ModelContract, artifacts: str | os.PathLike) -> Path:
    """Write the manifest atomically: temp file, fsync, rename, directory fsync."""
    path = Path(artifacts) / MANIFEST_NAME
    atomic_write_bytes(path, contract.to_json().encode())
    return path


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def read_model_bytes(contract: ModelContract, artifacts: str | os.PathLike,
                     variant: str | None = None) -> bytes:
    """The variant's model file: a regular file inside ``artifacts`` (no absolute path,
    no ``..``, no link leading out) of exactly the manifest's ``bytes``, refused unless
    its sha256 matches the manifest."""
    spec = contract.variant(variant)
    folder = Path(artifacts).resolve()
    path = Path(artifacts) / spec.file
    where = f"manifest field variants.{spec.name}.file"
    if Path(spec.file).is_absolute() or ".." in Path(spec.file).parts:
        raise ContractError(f"{where}: {spec.file!r} must be a file inside the artifacts folder")
    if not path.resolve().is_relative_to(folder):
        raise ContractError(f"{where}: {spec.file!r} leads out of the artifacts folder {folder}")
    try:
        data = read_regular_file(path, spec.bytes)
    except FileNotFoundError:
        raise ContractError(f"model file {path} named by the manifest is missing") from None
    if len(data) != spec.bytes:
        raise ModelIntegrityError(f"model file {path} is {len(data)} bytes, the manifest says {spec.bytes} "
                                  f"(modified or from another build); rebuild or restore the file")
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise ModelIntegrityError(
            f"model file {path} does not match the manifest: sha256 {digest[:16]}... "
            f"!= {spec.sha256[:16]}... (modified or from another build); rebuild or "
            f"restore the file"
        )
    return data
