"""TensorFlow Lite Micro check of the step models (build host only).

Each variant runs through the microcontroller interpreter (the ``tflite-micro`` pip
package, imported only here, and only in a child process) one sample at a time, the way
firmware runs it: inputs normalised with the manifest's mean/std, every state carried
from its output tensor back into its input tensor, (de)quantized when the tensors are
integer. TFLite Micro binds tensors by position, so names are mapped to positions with
``export_c.bind_variant`` (the model file's signature, checked against the manifest) and
the interpreter's own input/output details are checked against those positions.

The outputs are compared with the runtime engine on the same variant (the bars of
docs/DESIGN.md, "Quality bars"), and the smallest tensor arena that allocates and invokes is found by bisection.
The interpreter runs in a child process because it can crash the process outright (a
too small arena, some unsupported models); a failure is reported, never raised:
``{"runs": False, "error": ..., "op": ...}``.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from firmware_bridge.export_c import bind_variant
from pipeline.config import VerifyConfig
from runtime.affine import dequantize, quantize
from runtime.contract import ModelContract, classes, read_model_bytes
from runtime.engine import Engine
from runtime.replay import replay
from runtime.errors import ConfigError, ContractError, DataError

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 900
ARENA_ALIGN = 16
ARENA_MAX = 256 * 1024 * 1024
_PHASES = {"start": "while starting", "allocate": "loading the model and allocating its tensors",
           "bind": "reading the input/output details", "invoke": "while invoking the model"}
_OP_PATTERNS = (r"opcode '(\w+)'", r"Node (\w+) \(number \d+\)", r"op code (\w+)")


@dataclass
class MicroRun:
    """One pass of a variant through TFLite Micro: ``y`` ``[m, T, units]`` (float, dequantized)."""

    runs: bool
    y: np.ndarray | None = None
    arena_bytes: int | None = None  # smallest arena that allocated and invoked
    arena_used_bytes: int | None = None  # what TFLM's recording allocator reported
    version: str = ""
    error: str = ""
    op: str | None = None
    notes: list[str] = field(default_factory=list)


def micro_available() -> bool:
    """True when the ``tflite-micro`` package is installed (the check needs it)."""
    return importlib.util.find_spec("tflite_micro") is not None


def normalise(contract: ModelContract, X_raw) -> np.ndarray:
    """``X_raw`` ``[m, T, F]`` (finite) -> normalised float32 (``InputSpec.normalise``)."""
    X = np.asarray(X_raw, np.float32)
    inp = contract.input
    if X.ndim != 3 or X.shape[2] != inp.features or X.shape[0] * X.shape[1] == 0:
        raise DataError(f"need sequences [m, T, {inp.features}], got {list(X.shape)}")
    if not np.isfinite(X).all():
        raise DataError("the sequences hold NaN/Inf values")
    return inp.normalise(X)


def micro_outputs(contract: ModelContract, artifacts_dir: str | os.PathLike, variant: str,
                  X_raw, *, carry: bool = True, find_arena: bool = True) -> MicroRun:
    """Run every sequence of ``X_raw`` ``[m, T, F]`` from a zero state through TFLite Micro.

    ``carry=False`` zeroes the states before every step (a check that carrying matters).
    """
    if not micro_available():
        raise ConfigError("the TFLite Micro check needs the tflite-micro package: pip install tflite-micro")
    spec = contract.variant(variant)
    model = read_model_bytes(contract, artifacts_dir, spec.name)
    bound = bind_variant(contract, spec, model)
    plan = {"tensors": {n: {"position": b.position, "input": b.side == "input", "shape": list(b.shape),
                            "dtype": b.dtype, "scale": b.scale, "zero_point": b.zero_point}
                        for n, b in bound.items()},
            "x": contract.input.name, "y": contract.output.name,
            "states": [[s.input, s.output] for s in contract.states],
            "warmup": [s.warmup for s in contract.states],
            "carry": carry, "find_arena": find_arena}
    X = normalise(contract, X_raw)
    with tempfile.TemporaryDirectory(prefix="stepwise-micro-") as tmp:
        work = Path(tmp)
        (work / "model.tflite").write_bytes(model)
        (work / "plan.json").write_text(json.dumps(plan))
        np.save(work / "x.npy", X, allow_pickle=False)
        with open(work / "tflm.log", "wb") as logf:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
            try:
                proc = subprocess.run([sys.executable, "-m", "pipeline.micro", str(work)],
                                      stdout=subprocess.DEVNULL, stderr=logf, env=env, timeout=TIMEOUT_S)
                code = proc.returncode
            except subprocess.TimeoutExpired:
                code = None
        return _collect(work, code, spec.name)


def _collect(work: Path, code: int | None, variant: str) -> MicroRun:
    text = (work / "tflm.log").read_text(errors="replace")
    result = json.loads((work / "result.json").read_text()) if (work / "result.json").exists() else {}
    if result.get("contract_error"):
        raise ContractError(f"variant {variant} under TFLite Micro: {result['contract_error']}")
    phases = [m for m in re.finditer(r"^phase: (\w+)$", text, re.M)]
    phase = phases[-1].group(1) if phases else "start"
    after = text[phases[-1].end():] if phases else text
    messages = [ln.strip() for ln in after.splitlines()
                if ln.strip() and not ln.startswith(("[RecordingMicroAllocator]", "Traceback", "  "))]
    how = ("timed out" if code is None else f"crashed (signal {-code})" if code < 0
           else f"failed (exit {code})" if code else "")
    run = MicroRun(runs=bool(result.get("runs")), version=result.get("version", ""))
    if run.runs:
        run.y = np.load(work / "y.npy", allow_pickle=False)
        run.arena_bytes, run.arena_used_bytes = result.get("arena_bytes"), result.get("arena_used_bytes")
        if how:  # the outputs are in; only the arena search went wrong
            run.notes.append(f"arena search {how}: {'; '.join(messages[-3:])}")
        return run
    what = _PHASES.get(phase, phase)
    run.error = f"TFLite Micro {how or 'failed'} {what}: {'; '.join(messages[-6:]) or 'no message'}"
    run.op = next((m.group(1) for p in _OP_PATTERNS for m in [re.search(p, after)] if m), None)
    return run


def engine_outputs(artifacts_dir: str | os.PathLike, variant: str, X_raw) -> np.ndarray:
    """The runtime engine's outputs ``[m, T, units]``, each sequence from a zero state
    (raw steps: the step model itself, as TFLite Micro runs it)."""
    engine = Engine.load(artifacts_dir, variant=variant, lanes=1, reset="never", raw=True)
    return replay(engine, np.asarray(X_raw, np.float32)).as_array()


def micro_bars(variant: str, cfg: VerifyConfig) -> dict[str, float]:
    """The variant's bars of ``cfg`` (docs/DESIGN.md, "Quality bars"), held by micro
    against the engine on the same variant."""
    if variant == "float32":
        return {"max_abs": cfg.float_max_abs}
    if variant == "int16x8":
        return {"agreement": cfg.int16x8_agreement, "p99_abs": cfg.int16x8_p99}
    return {"agreement": cfg.int8_agreement, "p99_abs": cfg.int8_p99, "max_abs": cfg.int8_max}


def compare(contract: ModelContract, variant: str, y_micro: np.ndarray, y_engine: np.ndarray,
            cfg: VerifyConfig) -> dict:
    """Micro vs engine figures and the variant's bars."""
    dy = np.abs(y_micro.astype(np.float64) - y_engine).ravel()
    out = contract.output
    flat_m, flat_e = y_micro.reshape(-1, out.units), y_engine.reshape(-1, out.units)
    agree = np.mean(classes(flat_m, out.kind) == classes(flat_e, out.kind))
    figures = {"steps": int(flat_m.shape[0]), "max_abs": float(dy.max()),
               "p99_abs": float(np.percentile(dy, 99)), "mean_abs": float(dy.mean()),
               "agreement": float(agree), "exact": float(np.mean(y_micro == y_engine))}
    bars = micro_bars(variant, cfg)
    failed = [f"{k}={figures[k]:.6g}, bar {k} {'>=' if k == 'agreement' else '<='} {v}"
              for k, v in bars.items() if (figures[k] < v if k == "agreement" else figures[k] > v)]
    figures.update(bars=dict(bars), failed=failed, passed=not failed)
    return figures


def check_variant(contract: ModelContract, artifacts_dir: str | os.PathLike, variant: str, X_raw,
                  cfg: VerifyConfig = VerifyConfig()) -> dict:
    """Run ``variant`` on TFLite Micro over ``X_raw`` ``[m, T, F]`` and compare with the engine.

    Returns ``{"runs": True, "interpreter", "arena_bytes", "arena_used_bytes", "steps",
    "max_abs", "p99_abs", "mean_abs", "agreement", "exact", "bars", "failed", "passed"}``
    (figures vs the engine on the same variant; quantized variants add ``vs_float32``) or
    ``{"runs": False, "error": ..., "op": ...}``. A manifest that does not match the model
    raises ``ContractError``."""
    run = micro_outputs(contract, artifacts_dir, variant, X_raw)
    if not run.runs:
        log.warning("TFLite Micro cannot run %s: %s", variant, run.error)
        return {"runs": False, "error": run.error, "op": run.op, "interpreter": run.version}
    figures = compare(contract, variant, run.y, engine_outputs(artifacts_dir, variant, X_raw), cfg)
    result = {"runs": True, "interpreter": run.version, "arena_bytes": run.arena_bytes,
              "arena_used_bytes": run.arena_used_bytes, **figures}
    if variant != "float32" and "float32" in contract.variants:  # for information: no bar
        vs = compare(contract, variant, run.y, engine_outputs(artifacts_dir, "float32", X_raw), cfg)
        result["vs_float32"] = {k: vs[k] for k in ("max_abs", "p99_abs", "agreement")}
    if run.notes:
        result["notes"] = run.notes
    log.log(logging.INFO if figures["passed"] else logging.WARNING,
            "TFLite Micro %s: arena %s bytes; vs engine max |dy| %.2e p99 %.2e agreement %.2f%%%s",
            variant, run.arena_bytes, figures["max_abs"], figures["p99_abs"], 100 * figures["agreement"],
            "".join(f"; bar missed: {f}" for f in figures["failed"]))
    return result


def check_all(contract: ModelContract, artifacts_dir: str | os.PathLike, X_raw,
              cfg: VerifyConfig = VerifyConfig()) -> dict[str, dict]:
    """``check_variant`` for every variant of the manifest, against the bars of ``cfg``."""
    return {v: check_variant(contract, artifacts_dir, v, X_raw, cfg) for v in contract.variants}


# -- the child process: everything that touches the TFLite Micro interpreter -------------
def _phase(name: str) -> None:
    print(f"phase: {name}", file=sys.stderr, flush=True)


def _to_raw(t: dict, real: np.ndarray) -> np.ndarray:
    return quantize(real, t["scale"], t["zero_point"], t["dtype"])


def _to_real(t: dict, raw: np.ndarray) -> np.ndarray:
    return dequantize(np.asarray(raw, t["dtype"]), t["scale"], t["zero_point"])


def _interpreter(runtime, model: bytes, arena: int, log_path: Path, known_to_fit: bool = False):
    """An interpreter with ``arena`` bytes, or None when that is too little memory. With
    ``known_to_fit`` (a larger arena worked) every allocation failure means too little;
    otherwise only one whose messages say so (other failures raise RuntimeError)."""
    seen = log_path.stat().st_size
    try:
        return runtime.Interpreter.from_bytes(model, arena_size=arena)
    except RuntimeError:
        sys.stderr.flush()
        said = log_path.read_text(errors="replace")[seen:]
        if known_to_fit or re.search(r"Failed to allocate|Too many buffers|memory planning", said):
            return None
        raise


def _check_details(interp, plan: dict) -> str:
    """The first place where TFLM's view of a position differs from the plan, or ''."""
    for name, t in plan["tensors"].items():
        get = interp.get_input_details if t["input"] else interp.get_output_details
        d = get(t["position"])
        shape, dtype = [int(v) for v in d["shape"]], np.dtype(d["dtype"]).name
        if shape != t["shape"] or dtype != t["dtype"]:
            side = "input" if t["input"] else "output"
            return (f"{side} position {t['position']} ({name!r}) is {shape} {dtype} in TFLite Micro, "
                    f"{t['shape']} {t['dtype']} in the manifest")
    return ""


def _run_all(interp, plan: dict, X: np.ndarray) -> np.ndarray:
    """Every sequence of ``X`` ``[m, T, F]`` (normalised) from a zero state -> ``[m, T, units]``."""
    T = plan["tensors"]
    x, y = T[plan["x"]], T[plan["y"]]
    pairs = [(T[i], T[o]) for i, o in plan["states"]]
    zeros = [_to_raw(ti, np.zeros(ti["shape"], np.float32)) for ti, _ in pairs]
    out = np.zeros((*X.shape[:2], int(np.prod(y["shape"]))), np.float32)
    for i, seq in enumerate(X):
        state = list(zeros)
        for t, sample in enumerate(seq):
            interp.set_input(_to_raw(x, sample.reshape(x["shape"])), x["position"])
            for (ti, _), value in zip(pairs, state if plan["carry"] else zeros):
                interp.set_input(value, ti["position"])
            interp.invoke()
            state = [_to_raw(ti, _to_real(to, interp.get_output(to["position"]))) if t >= w else old
                     for (ti, to), w, old in zip(pairs, plan.get("warmup", [0] * len(pairs)), state)]
            out[i, t] = _to_real(y, interp.get_output(y["position"])).ravel()
    return out


def _smallest_arena(runtime, model: bytes, plan: dict, lo: int, hi: int, log_path: Path) -> int:
    """Bisection between ``lo`` (too small or untested) and ``hi`` (works), in steps of 16."""
    lo, hi = lo // ARENA_ALIGN * ARENA_ALIGN, -(-hi // ARENA_ALIGN) * ARENA_ALIGN
    x = plan["tensors"][plan["x"]]
    while hi - lo > ARENA_ALIGN:
        mid = (lo + hi) // 2 // ARENA_ALIGN * ARENA_ALIGN
        interp = _interpreter(runtime, model, mid, log_path, known_to_fit=True)
        if interp is not None:
            interp.set_input(_to_raw(x, np.zeros(x["shape"], np.float32)), x["position"])
            interp.invoke()
        lo, hi = (lo, mid) if interp is not None else (mid, hi)
    return hi


def _recorded_total(interp, log_path: Path) -> int | None:
    seen = log_path.stat().st_size
    interp.print_allocations()
    sys.stderr.flush()
    found = re.findall(r"Arena allocation total (\d+) bytes", log_path.read_text(errors="replace")[seen:])
    return int(found[-1]) if found else None


def _child(work: Path) -> None:
    """Run the plan in ``work``; stderr is ``work/tflm.log`` (TFLM prints there too)."""
    import tflite_micro
    from tflite_micro.python.tflite_micro import runtime

    log_path, result = work / "tflm.log", {"runs": False, "version": str(tflite_micro.__version__)}

    def save() -> None:
        (work / "result.json").write_text(json.dumps(result))

    save()
    plan = json.loads((work / "plan.json").read_text())
    model = (work / "model.tflite").read_bytes()
    _phase("allocate")
    arena = max(64 * 1024, 16 * len(model))
    interp = _interpreter(runtime, model, arena, log_path)
    while interp is None:
        arena *= 2
        if arena > ARENA_MAX:
            raise RuntimeError(f"no arena up to {ARENA_MAX} bytes is large enough")
        interp = _interpreter(runtime, model, arena, log_path)
    _phase("bind")
    result["contract_error"] = _check_details(interp, plan)
    if result["contract_error"]:
        save()
        return
    _phase("invoke")
    np.save(work / "y.npy", _run_all(interp, plan, np.load(work / "x.npy")), allow_pickle=False)
    result["runs"] = True
    save()
    if plan["find_arena"]:
        _phase("arena")
        used = _recorded_total(interp, log_path)
        result["arena_used_bytes"] = used
        lo = (used or 1024) - ARENA_ALIGN  # the recorded total may itself be enough
        result["arena_bytes"] = _smallest_arena(runtime, model, plan, lo, arena, log_path)
        save()


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
