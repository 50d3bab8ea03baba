"""``stepwise export-c``: the model and its state layout as C source for firmware.

For each variant of the manifest, ``<variant>_model_data.h/.cc`` hold the model file as
a 16-byte aligned array (the layout of tflite-micro's ``generate_cc_arrays.py``). One
plain C99 header, ``stepwise_model.h``, holds everything firmware needs to drive the step
model without hard-coding a shape: features and normalisation, every state (shape,
element count, offset in the float32 state payload), and per variant every signature
tensor with its model tensor index, its position among the interpreter's inputs or
outputs (TFLite Micro binds positionally: ``interpreter.input(position)``), dtype, scale
and zero point, plus the model's sha256 (the hash ``stepwise_state.h`` tags saved state
with). Positions are read from the model file itself and cross-checked against the
manifest's names, indexes, shapes and dtypes. numpy and the standard library only.
"""
from __future__ import annotations

import logging
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.atomic import atomic_write_bytes
from runtime.contract import ModelContract, VariantSpec, read_model_bytes
from runtime.errors import ContractError

log = logging.getLogger(__name__)

HEADER_NAME = "stepwise_model.h"
BYTES_PER_LINE = 12
# manifest dtype -> (TFLite tensor type code, which is also TfLiteType's value)
TFLITE_TYPES = {"float32": (0, 1), "int32": (2, 2), "uint8": (3, 3), "int64": (4, 4),
                "bool": (6, 6), "int16": (7, 7), "int8": (9, 9), "float16": (1, 10)}


# -- reading the model file ------------------------------------------------------------
class _Flat:
    """Just enough of a FlatBuffers reader for the I/O tables of a ``.tflite`` file."""

    def __init__(self, buf: bytes):
        self.buf = buf

    def _u(self, fmt: str, pos: int) -> int:
        return struct.unpack_from(fmt, self.buf, pos)[0]

    def field(self, table: int, i: int) -> int | None:
        vtable = table - self._u("<i", table)
        if 4 + 2 * i >= self._u("<H", vtable):
            return None
        off = self._u("<H", vtable + 4 + 2 * i)
        return table + off if off else None

    def ref(self, table: int, i: int) -> int | None:
        pos = self.field(table, i)
        return None if pos is None else pos + self._u("<I", pos)

    def vector(self, table: int, i: int) -> tuple[int, int]:
        """``(position of element 0, length)`` of a vector field of 4-byte elements."""
        vec = self.ref(table, i)
        if vec is None:
            return 0, 0
        n = self._u("<I", vec)
        if vec + 4 + 4 * n > len(self.buf):
            raise struct.error(f"a vector of {n} elements runs past the end of the file")
        return vec + 4, n

    def tables(self, table: int, i: int) -> list[int]:
        start, n = self.vector(table, i)
        return [start + 4 * k + self._u("<I", start + 4 * k) for k in range(n)]

    def ints(self, table: int, i: int) -> tuple[int, ...]:
        start, n = self.vector(table, i)
        return struct.unpack_from(f"<{n}i", self.buf, start)

    def string(self, table: int, i: int) -> str:
        s = self.ref(table, i)
        return "" if s is None else self.buf[s + 4:s + 4 + self._u("<I", s)].decode()

    def scalar(self, table: int, i: int, fmt: str, default: int = 0) -> int:
        pos = self.field(table, i)
        return default if pos is None else self._u(fmt, pos)


@dataclass(frozen=True)
class ModelIO:
    """Subgraph 0 of a model file: its input and output tensor indexes in position order,
    each tensor's ``(shape, type code)``, the signatures and the distinct operator count."""

    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    tensors: dict[int, tuple[tuple[int, ...], int]]
    signatures: dict[str, tuple[dict[str, int], dict[str, int]]]  # key -> (inputs, outputs)
    operator_codes: int


def read_model_io(model: bytes) -> ModelIO:
    """Parse ``model`` (a ``.tflite`` flatbuffer); ``ContractError`` if it is not one."""
    if len(model) < 8 or model[4:8] != b"TFL3":
        raise ContractError("the model file is not a TFLite flatbuffer (no 'TFL3' identifier)")
    fb = _Flat(model)
    try:
        root = fb._u("<I", 0)
        sub = fb.tables(root, 2)[0]
        inputs, outputs = fb.ints(sub, 1), fb.ints(sub, 2)
        tensors = {i: (fb.ints(t, 0), fb.scalar(t, 1, "<b")) for i, t in enumerate(fb.tables(sub, 0))
                   if i in inputs or i in outputs}
        signatures = {}
        for sig in fb.tables(root, 7):
            if fb.scalar(sig, 4, "<I") == 0:
                maps = [{fb.string(m, 0): fb.scalar(m, 1, "<I") for m in fb.tables(sig, k)} for k in (0, 1)]
                signatures[fb.string(sig, 2)] = (maps[0], maps[1])
        return ModelIO(inputs, outputs, tensors, signatures, len(fb.tables(root, 1)))
    except (struct.error, IndexError, UnicodeDecodeError) as e:
        raise ContractError(f"the model file is not a valid TFLite flatbuffer ({e})") from None


@dataclass(frozen=True)
class Binding:
    """One signature tensor of a variant, as firmware addresses it."""

    name: str
    side: str  # "input" or "output"
    position: int  # among the subgraph's inputs (or outputs)
    index: int  # tensor index in the model file
    shape: tuple[int, ...]  # with the batch axis
    dtype: str
    scale: float
    zero_point: int


def bind_variant(contract: ModelContract, spec: VariantSpec, model: bytes) -> dict[str, Binding]:
    """Every name of ``spec.tensors`` -> its ``Binding``, checked against the model file:
    the signature's index for the name, the side, the shape and the dtype must agree."""
    io = read_model_io(model)
    sig_in, sig_out = io.signatures.get(contract.signature_key, (None, None))
    wanted_in = [contract.input.name] + [s.input for s in contract.states]
    wanted_out = [o.name for o in contract.outputs] + [s.output for s in contract.states]
    missing = [n for n in wanted_in + wanted_out if n not in spec.tensors]
    if missing:
        raise ContractError(f"variant {spec.name}: the manifest's tensors map lacks {missing}")
    bound = {}
    for name, t in spec.tensors.items():
        side, order, sig = (("input", io.inputs, sig_in) if t.index in io.inputs
                            else ("output", io.outputs, sig_out))
        where = f"variant {spec.name} ({spec.file}): tensor {name!r} (index {t.index})"
        role = "input" if name in wanted_in else "output" if name in wanted_out else side
        if t.index not in order or role != side:
            raise ContractError(f"{where} is not an {role} of the model's subgraph")
        if sig is not None and sig.get(name) != t.index:
            found = "lacks it" if name not in sig else f"has it at index {sig[name]}"
            raise ContractError(f"{where}: the model's signature {contract.signature_key!r} {found}")
        shape, code = io.tensors[t.index]
        if tuple(shape) != tuple(t.shape) or TFLITE_TYPES.get(t.dtype, (None,))[0] != code:
            raise ContractError(f"{where}: the model file has shape {list(shape)} type code {code}, "
                                f"the manifest {list(t.shape)} {t.dtype}")
        bound[name] = Binding(name, side, order.index(t.index), t.index, tuple(t.shape), t.dtype,
                              t.scale, t.zero_point)
    return bound


# -- C text ----------------------------------------------------------------------------
def c_string(s: str) -> str:
    """A C string literal of ``s`` (UTF-8; non-printable bytes as octal escapes)."""
    out = []
    for b in s.encode():
        ch = chr(b)
        out.append("\\" + ch if ch in '"\\' else ch if 0x20 <= b < 0x7F and ch != "?" else f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def c_float(v: float) -> str:
    """``v`` rounded to float32, written so a C compiler reads back exactly that float."""
    f = np.float32(v)
    if not np.isfinite(f):
        raise ContractError(f"value {v} is not a finite float32")
    text = f"{float(f):.9g}"
    return (text if any(c in text for c in ".e") else text + ".0") + "f"


def c_ident(name: str) -> str:
    """Upper-case C identifier part for a manifest name (letters, digits, underscores)."""
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def c_array(values, fmt: str = "{}", per_line: int = 8, indent: str = "    ") -> str:
    items = [fmt.format(v) for v in values]
    rows = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return ",\n".join(indent + r for r in rows)


def model_data_sources(variant: str, model: bytes, origin: str) -> tuple[str, str]:
    """``(<variant>_model_data.h, <variant>_model_data.cc)`` texts for ``model``."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", variant):
        raise ContractError(f"variant name {variant!r} is not a C identifier")
    guard, arr = f"STEPWISE_{c_ident(variant)}_MODEL_DATA_H_", f"g_{variant}_model_data"
    note = f"// Generated by stepwise export-c from {origin}. Do not edit.\n"
    header = (f"{note}\n#ifndef {guard}\n#define {guard}\n\n"
              f"extern const unsigned char {arr}[];\n"
              f"extern const unsigned int {arr}_size;\n\n#endif  // {guard}\n")
    body = c_array(model, "0x{:02x}", BYTES_PER_LINE)
    source = (f"{note}\n#include \"{variant}_model_data.h\"\n\n"
              f"alignas(16) const unsigned char {arr}[] = {{\n{body}\n}};\n\n"
              f"const unsigned int {arr}_size = {len(model)};\n")
    return header, source


# -- stepwise_model.h ------------------------------------------------------------------
_TYPES = """\
/* Tensor element types; the values are TfLiteType's (kTfLiteFloat32 == 1, ...). */
typedef enum {
    SW_DTYPE_FLOAT32 = 1, SW_DTYPE_INT32 = 2, SW_DTYPE_UINT8 = 3, SW_DTYPE_INT64 = 4,
    SW_DTYPE_BOOL = 6, SW_DTYPE_INT16 = 7, SW_DTYPE_INT8 = 9, SW_DTYPE_FLOAT16 = 10
} sw_dtype;

typedef enum { SW_OUTPUT_SIGMOID = 0, SW_OUTPUT_SOFTMAX = 1, SW_OUTPUT_LINEAR = 2 } sw_output_kind;

/* One signature tensor of one variant. real = scale * (stored - zero_point) when
 * scale > 0; scale == 0: not quantized. */
typedef struct {
    const char *name;   /* signature name */
    int32_t is_input;   /* 1: a model input, 0: a model output */
    int32_t position;   /* TFLite Micro: interpreter.input(position) / output(position) */
    int32_t index;      /* tensor index in the model file */
    sw_dtype dtype;
    float scale;
    int32_t zero_point;
} sw_tensor_ref;

/* One recurrent state; its values go from tensor `output` back into `input` each step. */
typedef struct {
    const char *name, *input, *output, *layer, *kind;
    sw_dtype dtype;
    uint32_t rank;
    uint32_t shape[SW_MODEL_MAX_RANK]; /* batch axis excluded; unused entries 0 */
    uint32_t elements;
    uint32_t offset; /* byte offset in the float32 state payload (manifest order) */
    uint32_t warmup; /* steps after a reset that leave it as it is (a valid convolution fills) */
} sw_state_info;

typedef struct {
    const sw_tensor_ref *in;
    const sw_tensor_ref *out;
} sw_state_binding;

typedef struct {
    const char *name, *kind_name;
    sw_output_kind kind;
    uint32_t units, num_labels;
    const char *const *labels;
} sw_output_info;

typedef struct {
    const char *name, *file;
    uint32_t bytes;
    const uint8_t *sha256;   /* 32 bytes: the model hash to give sw_state_init */
    const char *sha256_hex;
    uint32_t op_count;       /* distinct operators: tflite::MicroMutableOpResolver<op_count> */
    uint32_t arena_bytes;    /* smallest arena in the build's TFLM check (64-bit host; add a
                                margin); 0: not measured */
    uint32_t num_tensors;
    const sw_tensor_ref *tensors;        /* every signature name */
    const sw_tensor_ref *input;          /* the sample input */
    const sw_state_binding *states;      /* SW_MODEL_NUM_STATES, manifest order */
    const sw_tensor_ref *const *outputs; /* SW_MODEL_NUM_OUTPUTS */
} sw_variant_info;
"""

_USAGE = """\
 * Per step (variant v = &sw_model_variants[SW_MODEL_VARIANT_<NAME>], TFLite Micro):
 *   x[i] = (sample[i] - sw_model_mean[i]) / sw_model_std[i], quantized with
 *   v->input->scale/zero_point if it is, into interpreter.input(v->input->position);
 *   Invoke(); then for every state s: interpreter.output(v->states[s].out->position)
 *   into interpreter.input(v->states[s].in->position), requantized when their
 *   dtype/scale/zero_point differ, except in the first sw_model_states[s].warmup
 *   steps after a reset. Reset: write real 0 (the zero point) into each.
 * Window head (SW_MODEL_WINDOW_HEAD 1): run SW_MODEL_WINDOW_LENGTH lanes (batch rows)
 *   on the same samples; before sample k reset lane k % T, after it read lane
 *   (k + 1) % T. A full reset puts lane j in the float32 state payload
 *   sw_model_warmup_states[j] (the state after (T - j) % T zero samples): the first
 *   SW_MODEL_WARMUP_STEPS outputs are then the model on zero-left-padded windows.
 * Persistence (stepwise_state.h): dequantize state s to float32 at byte
 *   sw_model_states[s].offset of a SW_MODEL_STATES_FLOAT_BYTES payload; tag it with
 *   v->sha256; size the slots with SW_STATE_SLOT_BYTES(SW_MODEL_STATES_FLOAT_BYTES, ...)."""


def _table(decl: str, body: str) -> str:
    return f"{decl} = {{\n{body}\n}};"


def _rows(rows) -> str:
    return ",\n".join(f"    {{{r}}}" for r in rows)


def _model_section(c: ModelContract) -> str:
    inp, states = c.input, c.states
    total = sum(s.size for s in states)
    lines = [f"#define SW_MODEL_SCHEMA_VERSION {c.schema_version}",
             f"#define SW_MODEL_SIGNATURE_KEY {c_string(c.signature_key)}",
             f"#define SW_MODEL_INPUT_NAME {c_string(inp.name)}",
             f"#define SW_MODEL_FEATURES {inp.features}",
             f"#define SW_MODEL_WINDOW_LENGTH {c.window.length or 0} /* 0: none */",
             f"#define SW_MODEL_RESET_POLICY {c_string(c.window.reset)}",
             f"#define SW_MODEL_WINDOW_MODE {c_string(c.window.mode)}",
             f"#define SW_MODEL_WINDOW_HEAD {int(c.window.mode == 'window_head')}",
             f"#define SW_MODEL_WARMUP_STEPS {c.window.warmup} /* outputs after a reset from padded windows */",
             f"#define SW_MODEL_NUM_STATES {len(states)}",
             f"#define SW_MODEL_MAX_RANK {_max_rank(c)}",
             f"#define SW_MODEL_STATES_ELEMENTS {total}",
             f"#define SW_MODEL_STATES_FLOAT_BYTES {4 * total} /* all states as float32 */",
             f"#define SW_MODEL_NUM_OUTPUTS {len(c.outputs)}",
             f"#define SW_MODEL_OUTPUT_UNITS {c.output.units} /* output 0 */",
             f"#define SW_MODEL_OUTPUT_KIND SW_OUTPUT_{c_ident(c.output.kind)} /* output 0 */",
             f"#define SW_MODEL_NUM_VARIANTS {len(c.variants)}",
             f"#define SW_MODEL_DEFAULT_VARIANT SW_MODEL_VARIANT_{c_ident(c.default_variant)}"]
    for prefix, names in (("STATE", [s.name for s in states]), ("VARIANT", list(c.variants))):
        idents = [c_ident(n) for n in names]
        if len(set(idents)) != len(idents):
            raise ContractError(f"names {names} are not distinct as C identifiers {idents}")
        lines += [f"#define SW_MODEL_{prefix}_{ident} {i}" for i, ident in enumerate(idents)]
    return "\n".join(lines)


def _max_rank(c: ModelContract) -> int:
    return max([len(s.shape) for s in c.states] + [1])


def _tables_section(c: ModelContract) -> list[str]:
    inp, offset, rows = c.input, 0, []
    if len(inp.mean) != inp.features or len(inp.std) != inp.features or min(inp.std) <= 0:
        raise ContractError(f"manifest normalisation needs {inp.features} means and positive stds")
    for s in c.states:
        shape = list(s.shape) + [0] * (_max_rank(c) - len(s.shape))
        names = ", ".join(c_string(v) for v in (s.name, s.input, s.output, s.layer, s.kind))
        rows.append(f"{names}, {_dtype(s.dtype)}, {len(s.shape)}, {{{', '.join(map(str, shape))}}}, "
                    f"{s.size}, {offset}, {s.warmup}")
        offset += 4 * s.size
    out = [_table("static const char *const sw_model_feature_names[SW_MODEL_FEATURES]",
                  c_array(map(c_string, inp.feature_names)))]
    out += [_table(f"static const float sw_model_{k}[SW_MODEL_FEATURES]",
                   c_array(map(c_float, v), per_line=4))
            for k, v in (("mean", inp.mean), ("std", inp.std))]
    if rows:
        out.append(_table("static const sw_state_info sw_model_states[SW_MODEL_NUM_STATES]", _rows(rows)))
    infos = []
    for i, o in enumerate(c.outputs):
        labels = f"sw_model_output{i}_labels" if o.labels else "NULL"
        if o.labels:
            out.append(_table(f"static const char *const {labels}[{len(o.labels)}]",
                              c_array(map(c_string, o.labels))))
        infos.append(f"{c_string(o.name)}, {c_string(o.kind)}, SW_OUTPUT_{c_ident(o.kind)}, {o.units}, "
                     f"{len(o.labels)}, {labels}")
    out.append(_table("static const sw_output_info sw_model_outputs[SW_MODEL_NUM_OUTPUTS]", _rows(infos)))
    return out


def _dtype(name: str) -> str:
    if name not in TFLITE_TYPES:
        raise ContractError(f"dtype {name!r} has no C equivalent (known: {', '.join(TFLITE_TYPES)})")
    return f"SW_DTYPE_{name.upper()}"


def _variant_section(c: ModelContract, spec: VariantSpec, bound: dict[str, Binding],
                     ops: int) -> tuple[list[str], str]:
    """The variant's definitions and its row of ``sw_model_variants``."""
    v, V, names = spec.name, c_ident(spec.name), list(bound)
    arena = int(spec.micro.get("arena_bytes") or 0) if spec.micro.get("runs", True) else 0
    at = lambda name: f"&sw_model_{v}_tensors[{names.index(name)}]"  # noqa: E731
    refs = [f"{c_string(b.name)}, {int(b.side == 'input')}, {b.position}, {b.index}, {_dtype(b.dtype)}, "
            f"{c_float(b.scale)}, {b.zero_point}" for b in bound.values()]
    out = [f"/* ---- variant {v}: {spec.file} ---- */\n"
           f"#define SW_MODEL_{V}_FILE {c_string(spec.file)}\n"
           f"#define SW_MODEL_{V}_BYTES {spec.bytes}\n"
           f"#define SW_MODEL_{V}_SHA256_HEX {c_string(spec.sha256)}\n"
           f"#define SW_MODEL_{V}_OP_COUNT {ops}\n"
           f"#define SW_MODEL_{V}_ARENA_BYTES {arena} /* 0: not measured */\n"
           f"#define SW_MODEL_{V}_NUM_TENSORS {len(names)}",
           _table(f"static const uint8_t sw_model_{v}_sha256[32]",
                  c_array(bytes.fromhex(spec.sha256), "0x{:02x}", 16)),
           _table(f"static const sw_tensor_ref sw_model_{v}_tensors[SW_MODEL_{V}_NUM_TENSORS]", _rows(refs))]
    if c.states:
        out.append(_table(f"static const sw_state_binding sw_model_{v}_states[SW_MODEL_NUM_STATES]",
                          _rows(f"{at(s.input)}, {at(s.output)}" for s in c.states)))
    out.append(_table(f"static const sw_tensor_ref *const sw_model_{v}_outputs[SW_MODEL_NUM_OUTPUTS]",
                      c_array([at(o.name) for o in c.outputs], per_line=1)))
    row = (f"{c_string(v)}, SW_MODEL_{V}_FILE, SW_MODEL_{V}_BYTES, sw_model_{v}_sha256,\n"
           f"     SW_MODEL_{V}_SHA256_HEX, SW_MODEL_{V}_OP_COUNT, SW_MODEL_{V}_ARENA_BYTES,\n"
           f"     SW_MODEL_{V}_NUM_TENSORS, sw_model_{v}_tensors, {at(c.input.name)},\n"
           f"     {f'sw_model_{v}_states' if c.states else 'NULL'}, sw_model_{v}_outputs")
    return out, row


def model_header(contract: ModelContract, bindings: dict[str, tuple[dict[str, Binding], int]],
                 warm=None) -> str:
    """The text of ``stepwise_model.h``; ``bindings``: variant -> (its bindings, operator count);
    ``warm``: a window head's lane states after a full reset ``[T, states elements]``."""
    parts, rows = [_model_section(contract), _TYPES.rstrip(), *_tables_section(contract)], []
    if warm is not None:
        body = ",\n".join("    {\n" + c_array(map(c_float, row), per_line=6, indent="        ") + "\n    }"
                          for row in warm)
        parts.append(_table("static const float sw_model_warmup_states[SW_MODEL_WINDOW_LENGTH]"
                            "[SW_MODEL_STATES_ELEMENTS]", body))
    for name, spec in contract.variants.items():
        sections, row = _variant_section(contract, spec, *bindings[name])
        parts += sections
        rows.append(row)
    parts.append(_table("static const sw_variant_info sw_model_variants[SW_MODEL_NUM_VARIANTS]", _rows(rows)))
    return (f"/* Generated by stepwise {contract.tool.get('version', '')} export-c from manifest.json. "
            f"Do not edit.\n *\n * The step model's contract for firmware (plain C99, also valid C++)."
            f"\n{_USAGE}\n */\n#ifndef STEPWISE_MODEL_H\n#define STEPWISE_MODEL_H\n\n"
            f"#include <stddef.h>\n#include <stdint.h>\n\n" + "\n\n".join(parts)
            + "\n\n#endif /* STEPWISE_MODEL_H */\n")


def export_c(contract: ModelContract, artifacts_dir: str | os.PathLike,
             out_dir: str | os.PathLike | None = None, warm=None) -> list[Path]:
    """Write the firmware files for every variant into ``out_dir`` (default
    ``<artifacts_dir>/firmware``); returns their paths. Each model file must match the
    manifest's sha256 (``ModelIntegrityError`` otherwise). A window-head model needs
    ``warm``, its lanes' states after a reset ``[T, states elements]``
    (``runtime.engine.warmup_payload``)."""
    if contract.window.mode == "window_head" and warm is None:
        raise ContractError("a window_head model's firmware files need its warm-up states")
    out = Path(out_dir) if out_dir is not None else Path(artifacts_dir) / "firmware"
    files: dict[str, str] = {}
    bindings = {}
    for name, spec in contract.variants.items():
        model = read_model_bytes(contract, artifacts_dir, name)
        bindings[name] = (bind_variant(contract, spec, model), read_model_io(model).operator_codes)
        origin = f"{spec.file} (sha256 {spec.sha256})"
        files[f"{name}_model_data.h"], files[f"{name}_model_data.cc"] = model_data_sources(
            name, model, origin)
    files[HEADER_NAME] = model_header(contract, bindings, warm)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fname, text in files.items():
        atomic_write_bytes(out / fname, text.encode())
        paths.append(out / fname)
    log.info("export-c: %d files in %s", len(paths), out)
    return paths
