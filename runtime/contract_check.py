"""The manifest's schema, checked field by field before anything is built from it.

``check_manifest(data)`` takes the parsed JSON of ``manifest.json`` and raises
``ContractError`` with a one-line message naming the first field that is missing, of
the wrong type, out of range or inconsistent (``manifest field input.std[1]: must be a
finite number above 0, got inf``). What passes is safe to turn into the contract's
dataclasses: every list has the length the other fields imply, every name is unique,
every kind is from its enum, every number is finite.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable

from runtime.errors import ContractError

SCHEMA_VERSION = 1
OUTPUT_KINDS = ("sigmoid", "softmax", "linear")
STATE_KINDS = ("h", "c", "ring")
DTYPES = ("float32", "int8", "int16", "uint8", "int32", "int64", "bool")
MAX_FEATURES = 4096
MAX_UNITS = 1 << 16
MAX_ELEMENTS = 1 << 24  # of one state or tensor
MAX_MODEL_BYTES = 1 << 30
MAX_DEPTH = 32  # of nested objects and lists; a real manifest has 6
_SHA256 = re.compile(r"[0-9a-f]{64}")  # fullmatch on a short checked string: linear


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def fail(path: str, problem: str) -> ContractError:
    return ContractError(f"manifest field {path}: {problem}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def get(obj: dict, path: str, key: str, want: type | tuple, optional: bool = False) -> Any:
    """``obj[key]`` checked to be of type ``want`` (bool is never an int here)."""
    where = _at(path, key)
    if key not in obj:
        if optional:
            return None
        raise fail(where, "is missing")
    value = obj[key]
    wants = want if isinstance(want, tuple) else (want,)
    if isinstance(value, bool) and bool not in wants or not isinstance(value, wants):
        names = " or ".join({dict: "an object", list: "a list", str: "a string", int: "an integer",
                             float: "a number", bool: "true or false"}[w] for w in wants)
        raise fail(where, f"must be {names}, got {_shown(value)}")
    return value


def text(obj: dict, path: str, key: str, choices: tuple[str, ...] = ()) -> str:
    value = get(obj, path, key, str)
    if not value.strip():
        raise fail(_at(path, key), "must not be empty")
    if choices and value not in choices:
        raise fail(_at(path, key), f"must be one of {', '.join(choices)}, got {_shown(value)}")
    return value


def integer(obj: dict, path: str, key: str, low: int, high: int, optional: bool = False) -> int | None:
    value = get(obj, path, key, int, optional)
    if value is not None and not low <= value <= high:
        raise fail(_at(path, key), f"must be {low}..{high}, got {value}")
    return value


def items(obj: dict, path: str, key: str, check: Callable[[str, Any], None], length: int | None = None,
          minimum: int = 0) -> list:
    """``obj[key]``, a list whose every item passes ``check(item_path, item)``."""
    values = get(obj, path, key, list)
    where = _at(path, key)
    if length is not None and len(values) != length:
        raise fail(where, f"must have {length} entries, got {len(values)}")
    if len(values) < minimum:
        raise fail(where, f"must have at least {minimum} entr{'y' if minimum == 1 else 'ies'}")
    for i, value in enumerate(values):
        check(f"{where}[{i}]", value)
    return values


def finite(low: float = -math.inf, above: float | None = None) -> Callable[[str, Any], None]:
    def check(path: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < low or (above is not None and value <= above):
            bound = f" above {above:g}" if above is not None else ""
            raise fail(path, f"must be a finite number{bound}, got {_shown(value)}")
    return check


def obj(path: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise fail(path, f"must be an object, got {_shown(value)}")
    return value


def name(path: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise fail(path, f"must be a non-empty string, got {_shown(value)}")


def dimension(path: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ELEMENTS:
        raise fail(path, f"must be an integer 1..{MAX_ELEMENTS}, got {_shown(value)}")


def unique(path: str, names: list[str]) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise fail(path, f"names {n!r} twice")
        seen.add(n)


def check_depth(data: Any) -> None:
    """Nesting at most ``MAX_DEPTH`` deep (iterative: no recursion on untrusted depth)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ContractError(f"manifest is nested more than {MAX_DEPTH} levels deep")
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children)


# -- the sections ------------------------------------------------------------------------
def check_manifest(data: Any) -> None:
    """Raise ``ContractError`` naming the first bad field of a parsed manifest."""
    check_depth(data)
    if not isinstance(data, dict):
        raise ContractError(f"manifest must be a JSON object, got {type(data).__name__}")
    version = get(data, "", "schema_version", int)
    if version != SCHEMA_VERSION:
        raise ContractError(f"manifest schema_version {version} is not supported "
                            f"(this stepwise reads {SCHEMA_VERSION})")
    text(data, "", "signature_key")
    get(data, "", "tool", dict, optional=True)
    _input(get(data, "", "input", dict))
    # an empty list is a stateless model; a model whose states are left out is caught
    # against the model's own signature (runtime.backend.check_tensors)
    states = items(data, "", "states", lambda p, v: _state(p, obj(p, v)))
    unique("states", [s["name"] for s in states])
    unique("states", [s["input"] for s in states] + [s["output"] for s in states])
    outputs = items(data, "", "outputs", lambda p, v: _output(p, obj(p, v)), minimum=1)
    unique("outputs", [o["name"] for o in outputs])
    _window(get(data, "", "window", dict))
    variants = get(data, "", "variants", dict)
    if not variants:
        raise fail("variants", "must name at least one variant")
    for key, spec in variants.items():
        _variant(f"variants.{key}", get(variants, "variants", key, dict))
    default = text(data, "", "default_variant")
    if default not in variants:
        raise fail("default_variant", f"{default!r} is not one of the variants ({', '.join(variants)})")


WINDOW_MODES = ("stream", "window_head")


def _window(window: dict) -> None:
    """Length, reset, stride, and a window head's mode and warm-up (``length - 1`` outputs)."""
    length = None
    if window.get("length") is not None:
        length = integer(window, "window", "length", 1, 1 << 31)
    text(window, "window", "reset")
    mode = text(window, "window", "mode", WINDOW_MODES) if "mode" in window else "stream"
    warmup = integer(window, "window", "warmup", 0, 1 << 31, optional=True)
    if window.get("stride") is not None:  # training windows cut every stride samples
        integer(window, "window", "stride", 1, 1 << 31)
    if mode == "window_head" and (length is None or warmup != length - 1):
        raise fail("window", f"a window_head needs a length and warmup = length - 1, got "
                             f"length {length} and warmup {warmup}")


def _input(inp: dict) -> None:
    text(inp, "input", "name")
    features = integer(inp, "input", "features", 1, MAX_FEATURES)
    names = items(inp, "input", "feature_names", name, length=features)
    unique("input.feature_names", names)
    items(inp, "input", "mean", finite(), length=features)
    items(inp, "input", "std", finite(above=0.0), length=features)
    if "dtype" in inp:
        text(inp, "input", "dtype", ("float32",))


def _state(path: str, s: dict) -> None:
    for key in ("name", "input", "output", "layer"):
        text(s, path, key)
    text(s, path, "kind", STATE_KINDS)
    integer(s, path, "warmup", 0, 1 << 31, optional=True)
    shape = items(s, path, "shape", dimension, minimum=1)
    if math.prod(shape) > MAX_ELEMENTS:
        raise fail(f"{path}.shape", f"holds more than {MAX_ELEMENTS} values")
    if "dtype" in s:
        text(s, path, "dtype", DTYPES)


def _output(path: str, o: dict) -> None:
    text(o, path, "name")
    kind = text(o, path, "kind", OUTPUT_KINDS)
    units = integer(o, path, "units", 1, MAX_UNITS)
    labels = items(o, path, "labels", name)
    need = 2 if kind == "sigmoid" and units == 1 else units
    if kind != "linear" and len(labels) != need:
        raise fail(f"{path}.labels", f"must have {need} entries for {units} {kind} unit(s), got {len(labels)}")


def _variant(path: str, v: dict) -> None:
    file = text(v, path, "file")
    parts = file.replace("\\", "/").split("/")
    if file.startswith(("/", "\\")) or ".." in parts or "\0" in file or (len(file) > 1 and file[1] == ":"):
        raise fail(f"{path}.file", f"must be a file inside the artifacts folder, got {_shown(file)}")
    sha = get(v, path, "sha256", str)
    if not _SHA256.fullmatch(sha):
        raise fail(f"{path}.sha256", f"must be 64 lowercase hex digits, got {_shown(sha)}")
    integer(v, path, "bytes", 1, MAX_MODEL_BYTES)
    tensors = get(v, path, "tensors", dict)
    for key in tensors:
        _tensor(f"{path}.tensors.{key}", get(tensors, f"{path}.tensors", key, dict))
    for key in ("quantization", "verification", "micro"):
        get(v, path, key, dict, optional=True)
    get(v, path, "passed", bool, optional=True)


def _tensor(path: str, t: dict) -> None:
    integer(t, path, "index", 0, 1 << 31)
    shape = items(t, path, "shape", dimension, minimum=1)
    if math.prod(shape) > MAX_ELEMENTS:
        raise fail(f"{path}.shape", f"holds more than {MAX_ELEMENTS} values")
    text(t, path, "dtype", DTYPES)
    if "scale" in t:
        finite(low=0.0)(f"{path}.scale", t["scale"])
    integer(t, path, "zero_point", -(1 << 31), (1 << 31) - 1, optional=True)
