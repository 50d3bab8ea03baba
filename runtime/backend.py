"""The TFLite interpreter backend: which package runs the model, and tensors by name.

Three packages provide the same ``Interpreter`` class; the first one installed wins:

1. ``tflite_runtime.interpreter`` (the device package, a few MB),
2. ``ai_edge_litert.interpreter`` (its successor),
3. ``tensorflow.lite`` (last resort, with a warning: it costs seconds and hundreds of MB).

``backend=`` or the environment variable ``STEPWISE_BACKEND`` forces one. Tensor names are
resolved to indexes through the model's signature once, at load, and checked against the
manifest's ``tensors`` map (docs/DESIGN.md, "The artifact contract"): a missing name,
another shape (batch axis aside) or dtype is a ``ContractError`` naming the tensor and both values.
"""
from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from runtime import native_log
from runtime.affine import dequantize, is_quantized, quantize
from runtime.contract import TensorSpec
from runtime.errors import ConfigError, ContractError

log = logging.getLogger(__name__)

ENV_VAR = "STEPWISE_BACKEND"
# name -> (module holding Interpreter, package whose __version__ is reported)
BACKENDS: dict[str, tuple[str, str]] = {
    "tflite_runtime": ("tflite_runtime.interpreter", "tflite_runtime"),
    "ai_edge_litert": ("ai_edge_litert.interpreter", "ai_edge_litert"),
    "tensorflow": ("tensorflow.lite", "tensorflow"),
}
ALIASES = {"tflite-runtime": "tflite_runtime", "tflite": "tflite_runtime",
           "ai-edge-litert": "ai_edge_litert", "litert": "ai_edge_litert", "tf": "tensorflow"}


@dataclass(frozen=True)
class BoundTensor:
    """One signature tensor of the loaded model, as the interpreter reports it.

    ``shape`` excludes the batch axis; ``scale``/``zero_point`` are 0 for float tensors.
    """

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return is_quantized(self.dtype, self.scale)

    def to_raw(self, real: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Real values -> this tensor's stored values (quantized if it is), into ``out``."""
        np.copyto(out, quantize(real, self.scale, self.zero_point, self.dtype), casting="unsafe")
        return out

    def to_real(self, raw: np.ndarray) -> np.ndarray:
        """Stored values -> real float32 values (dequantized if quantized)."""
        return dequantize(raw, self.scale, self.zero_point)


@dataclass
class LoadedModel:
    """An interpreter, the backend that made it, and its signature tensors by name."""

    interpreter: Any
    backend: str
    version: str
    signature_key: str
    inputs: dict[str, BoundTensor] = field(default_factory=dict)
    outputs: dict[str, BoundTensor] = field(default_factory=dict)
    model: bytes = b""  # kept alive for the interpreter's lifetime

    def resize(self, lanes: int) -> None:
        """Give every signature input a batch axis of ``lanes`` and allocate.

        Call it before taking any ``view``: the interpreter refuses to reallocate while
        views of its buffers exist."""
        for t in self.inputs.values():
            self.interpreter.resize_tensor_input(t.index, [lanes, *t.shape], strict=False)
        self.interpreter.allocate_tensors()

    def view(self, t: BoundTensor) -> np.ndarray:
        """A numpy array on ``t``'s own buffer in the interpreter (no copy): writing it
        sets the tensor, reading it after an invoke reads the output."""
        return self.interpreter.tensor(t.index)()

    def pinned_invoke(self, views: list[tuple[BoundTensor, np.ndarray]]) -> Callable[[], None]:
        """The invoke to use while ``views`` are held.

        The public ``Interpreter.invoke`` refuses to run while any view exists, because
        an interpreter with dynamic tensors may move its buffers during an invoke. The
        step models' tensors all have static shapes, which this checks: it invokes once
        and requires every buffer to be where its view points. Then the wrapper's own
        ``Invoke`` (what ``invoke`` calls after its check) is returned.
        """
        raw = self.interpreter._interpreter.Invoke
        raw()
        for t, v in views:
            now = self.interpreter.tensor(t.index)()
            if now.ctypes.data != v.ctypes.data or now.shape != v.shape:
                raise ContractError(f"tensor {t.name!r} moved to another buffer during an "
                                    "invoke: the step model must have static shapes")
        return raw


def backend_names() -> tuple[str, ...]:
    return tuple(BACKENDS)


def resolve_backend_name(requested: str | None) -> tuple[str | None, str]:
    """``(backend name or None for automatic, where the request came from)``."""
    source = "backend argument"
    if not requested:
        requested = os.environ.get(ENV_VAR, "").strip() or None
        source = f"{ENV_VAR} environment variable"
    if not requested or requested == "auto":
        return None, "first installed"
    name = ALIASES.get(requested.lower(), requested.lower())
    if name not in BACKENDS:
        raise ConfigError(
            f"unknown interpreter backend {requested!r} (from the {source}); "
            f"use one of: {', '.join(BACKENDS)} or auto"
        )
    return name, f"forced by the {source}"


def _import_interpreter(name: str) -> tuple[Callable[..., Any], str]:
    module_name, package = BACKENDS[name]
    module = importlib.import_module(module_name)
    version = getattr(importlib.import_module(package), "__version__", "unknown")
    return module.Interpreter, str(version)


def choose_backend(requested: str | None = None) -> tuple[str, Callable[..., Any], str]:
    """Pick the interpreter package: ``(name, Interpreter class, version)``."""
    name, reason = resolve_backend_name(requested)
    if name is not None:
        try:
            cls, version = _import_interpreter(name)
        except ImportError as e:
            raise ConfigError(
                f"interpreter backend {name!r} was {reason} but cannot be imported ({e})"
            ) from None
        _log_choice(name, version, reason)
        return name, cls, version
    for candidate in BACKENDS:
        try:
            cls, version = _import_interpreter(candidate)
        except ImportError:
            log.debug("interpreter backend %s is not installed", candidate)
            continue
        _log_choice(candidate, version, reason)
        return candidate, cls, version
    raise ConfigError(
        "no TFLite interpreter is installed: pip install tflite-runtime (device) "
        "or ai-edge-litert"
    )


_announced: set[str] = set()  # backends already named at INFO in this process


def _log_choice(name: str, version: str, reason: str) -> None:
    first = name not in _announced
    _announced.add(name)
    log.log(logging.INFO if first else logging.DEBUG, "interpreter backend: %s %s (%s)", name, version, reason)
    if name == "tensorflow" and first:
        log.warning(
            "running the model with tensorflow.lite: slow to import and large; install "
            "tflite-runtime or ai-edge-litert for the device"
        )


def load_model(model: bytes, signature_key: str, *, backend: str | None = None,
               num_threads: int | None = None) -> LoadedModel:
    """Create an interpreter for ``model`` and bind its signature's tensors by name."""
    name, cls, version = choose_backend(backend)
    with native_log.filtered():  # the XNNPACK delegate's INFO line
        try:
            interpreter = cls(model_content=model, num_threads=num_threads)
        except (ValueError, RuntimeError) as e:
            raise ContractError(f"the {name} interpreter cannot load the model: {e}") from None
        loaded = LoadedModel(interpreter=interpreter, backend=name, version=version,
                             signature_key=signature_key, model=model)
        loaded.inputs, loaded.outputs = _signature_tensors(interpreter, signature_key)
        interpreter.allocate_tensors()
    return loaded


def _signature_tensors(interpreter: Any, key: str
                       ) -> tuple[dict[str, BoundTensor], dict[str, BoundTensor]]:
    signatures = interpreter.get_signature_list()
    if key not in signatures:
        raise ContractError(
            f"the model has no signature {key!r} (it has: {', '.join(signatures) or 'none'})"
        )
    runner = interpreter.get_signature_runner(key)
    inputs = {n: _bound(n, d) for n, d in runner.get_input_details().items()}
    outputs = {n: _bound(n, d) for n, d in runner.get_output_details().items()}
    # The runner holds a reference into the interpreter, which blocks resizing.
    del runner
    return inputs, outputs


def _bound(name: str, details: Mapping[str, Any]) -> BoundTensor:
    scale, zero_point = details.get("quantization", (0.0, 0))
    return BoundTensor(name=name, index=int(details["index"]),
                       shape=tuple(int(v) for v in details["shape"][1:]),
                       dtype=np.dtype(details["dtype"]), scale=float(scale),
                       zero_point=int(zero_point))


def check_tensors(loaded: LoadedModel, expected: Mapping[str, TensorSpec],
                  required_inputs: list[str], required_outputs: list[str]) -> None:
    """Cross-check the signature against the manifest's ``tensors`` map.

    Raises ``ContractError`` naming the first tensor that is missing or differs, or a
    tensor of the model's signature that the manifest does not declare (a state left out
    of ``states`` would silently never be carried).
    """
    for names, side, found in ((required_inputs, "input", loaded.inputs),
                               (required_outputs, "output", loaded.outputs)):
        for name in names:
            if name not in found:
                raise ContractError(
                    f"the model's signature {loaded.signature_key!r} has no {side} tensor "
                    f"{name!r} (it has: {', '.join(sorted(found))})"
                )
            if name not in expected:
                raise ContractError(f"the manifest's tensors map has no entry for {name!r}")
            _compare(found[name], expected[name])
    for side, found, wanted in (("input", loaded.inputs, required_inputs),
                                ("output", loaded.outputs, required_outputs)):
        extra = sorted(set(found) - set(wanted))
        if extra:
            raise ContractError(f"the model's signature {loaded.signature_key!r} has {side} tensor(s) "
                                f"{', '.join(extra)} that the manifest does not declare")


def _compare(actual: BoundTensor, spec: TensorSpec) -> None:
    want_shape = tuple(spec.shape[1:])
    if actual.shape != want_shape:
        raise ContractError(
            f"tensor {actual.name!r}: shape (batch aside) is {list(actual.shape)} in the model "
            f"but {list(want_shape)} in the manifest"
        )
    if actual.dtype != np.dtype(spec.dtype):
        raise ContractError(
            f"tensor {actual.name!r}: dtype is {actual.dtype.name} in the model "
            f"but {spec.dtype} in the manifest"
        )
    if actual.quantized and (actual.zero_point != spec.zero_point
                             or not np.isclose(actual.scale, spec.scale, rtol=1e-6, atol=0.0)):
        raise ContractError(
            f"tensor {actual.name!r}: quantization is scale={actual.scale} "
            f"zero_point={actual.zero_point} in the model but scale={spec.scale} "
            f"zero_point={spec.zero_point} in the manifest"
        )
    if actual.index != spec.index:
        log.warning("tensor %r has index %d in the model but %d in the manifest; binding by name",
                    actual.name, actual.index, spec.index)
