"""``stepwise build`` / ``stepwise convert``: from data (and maybe a model) to ``artifacts/``.

Everything is produced in a staging folder inside ``out``; only when the float32 variant
has passed parity are the files moved into ``out``, the manifest last. An interrupted or
failed build never leaves a folder that looks complete (``out`` keeps its previous build,
or has no manifest).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from firmware_bridge.export_c import export_c
from pipeline import __version__
from pipeline import convert as conv
from pipeline import micro
from pipeline.artifacts import MODEL_FILE, TEST_DATA, load_keras_model
from pipeline.config import BuildConfig, DataConfig, VerifyConfig
from pipeline.data import Split, load_training_data, manifest_window, split
from pipeline.finetune import Tuning
from pipeline.stepmodel import INPUT_NAME, OUTPUT_NAME, SIGNATURE_KEY, StepModel, keras_sequence_outputs
from pipeline.train import TrainResult, save_history, train
from pipeline.verify import verify_all
from runtime import contract as C
from runtime.atomic import atomic_write_bytes
from runtime.engine import warmup_payload
from runtime.errors import DataError, VerificationError

log = logging.getLogger(__name__)

STEP_PARITY_TF = 1e-5  # the TensorFlow step model itself, before conversion


@dataclass(frozen=True)
class BuildResult:
    contract: C.ModelContract
    out: Path
    results: dict[str, dict]
    seconds: float


def build_artifacts(cfg: BuildConfig, out: str | os.PathLike, data: str | None = None) -> BuildResult:
    """The default job: train on ``data`` (or the synthetic set) and package."""
    t0 = time.monotonic()
    _phase("loading data")
    seqs = load_training_data(data, cfg.data)
    sp = split(seqs, cfg.data)
    _phase("training")
    calibration = conv.calibration_set(sp.X_train, cfg.quantize, sp.len_train)
    result = train(sp, cfg.model, cfg.train, calibration=calibration)
    return package(result.model, sp, cfg, Path(out), result, t0)


def convert_artifacts(model_path: str | os.PathLike, data: str, cfg: BuildConfig,
                      out: str | os.PathLike, finetune: bool = True) -> BuildResult:
    """A model trained elsewhere: ``data`` calibrates and verifies; inputs go in as-is.
    With ``finetune``, a copy fine-tuned for the quantized variants is tried as well
    (``pipeline.finetune``); the float32 variant is always the model as given."""
    t0 = time.monotonic()
    _phase("loading the model and data")
    model = load_keras_model(model_path)
    seqs = load_training_data(data, cfg.data)
    sp = split(seqs, cfg.data, normalise=False)
    _check_data_fits(model, sp)
    return package(model, sp, cfg, Path(out), None, t0, finetune=finetune)


def _check_data_fits(model: keras.Model, sp: Split) -> None:
    _, steps, features = model.inputs[0].shape
    if features != sp.features:
        raise DataError(f"{sp.source}: data has {sp.features} features, the model takes {features}")
    if steps is not None and steps != sp.steps:
        raise DataError(f"{sp.source}: sequences have {sp.steps} steps, the model takes {steps}")


def package(model: keras.Model, sp: Split, cfg: BuildConfig, out: Path,
            trained: TrainResult | None, t0: float, finetune: bool = False) -> BuildResult:
    """Step model, variants, verification and export of ``model`` into ``out``; with
    ``finetune``, the quantized variants may come from a fine-tuned copy."""
    _phase("building the one-step model")
    step = StepModel.from_keras(model, cfg.quantize.cell_layout)  # refuses unstreamable models first
    _check_step_parity(model, step, sp)
    tuned = Tuning(model, sp, cfg, None if finetune and not sp.variable_length else
                   "turned off" if not finetune else "recordings of different lengths")
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        contract, results = _stage(model, step, sp, cfg, stage, trained, tuned)
        _promote(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    seconds = time.monotonic() - t0
    log.info("build complete in %.1f s: %s (default variant %s)", seconds, out, contract.default_variant)
    return BuildResult(contract, out, results, seconds)


def _phase(what: str) -> None:
    """One INFO line as each long phase starts (the command's -q hides them)."""
    log.info("== %s", what)


def _check_step_parity(model: keras.Model, step: StepModel, sp: Split) -> None:
    X = sp.X_test[:64]
    ref = keras_sequence_outputs(model, X)
    ys = step.reference_rollout(X)
    err = float(np.abs(ys - ref).max())
    log.info("step model vs Keras (TensorFlow, before conversion): max |dy| %.2e", err)
    if err > STEP_PARITY_TF:
        raise VerificationError(f"step model differs from Keras by {err:.3g} (> {STEP_PARITY_TF}): a stepwise bug")


def _stage(model, step: StepModel, sp: Split, cfg: BuildConfig, stage: Path,
           trained: TrainResult | None, tuned: Tuning) -> tuple[C.ModelContract, dict]:
    model.save(stage / MODEL_FILE)
    (stage / "config.toml").write_text(cfg.to_toml())
    if trained is not None:
        save_history(trained, stage / "training_history.json")
    np.savez(stage / TEST_DATA, X=sp.raw(sp.X_test, sp.len_test), y=sp.y_test,
             feature_names=np.array(sp.feature_names), lengths=sp.len_test)
    _phase(f"converting and quantizing ({', '.join(cfg.quantize.variants)})")
    variants = _convert_variants(model, step, sp, cfg, stage, tuned)
    contract = _contract(step, sp, variants, default="float32", data=cfg.data)
    C.write_contract(contract, stage)
    _phase("checking each variant with TFLite Micro")
    micro = _micro_check(contract, stage, sp, cfg.verify)
    contract = _contract(step, sp, {v: replace(spec, micro=micro.get(v, {})) for v, spec in variants.items()},
                         default="float32", data=cfg.data)
    C.write_contract(contract, stage)
    _phase("verifying parity, agreement and drift; writing the report")
    results = verify_all(stage, cfg.verify, report=True,
                         history=trained.history if trained else None)
    failed_float = results["float32"]["failed"]
    if failed_float:
        raise VerificationError("float32 step model failed parity (a stepwise bug): " + "; ".join(failed_float))
    _attribute(step, sp, stage, contract, results, (model, tuned.copies, cfg))
    variants = {v: replace(spec, verification=results[v], passed=results[v]["status"] == "pass")
                for v, spec in contract.variants.items()}
    passed = [v for v in ("float32", "int16x8", "int8") if v in variants and variants[v].passed]
    from pipeline.recommend import recommend

    contract = replace(_contract(step, sp, variants, default="float32" if "float32" in passed else passed[0],
                                 data=cfg.data),
                       recommended=recommend(variants))
    from pipeline.report import append_recommendation

    append_recommendation(stage / "report", contract.recommended)
    C.write_contract(contract, stage)
    _phase("exporting the firmware files")
    export_c(contract, stage, warm=warmup_payload(stage) if step.window_head else None)
    return contract, results


def _attribute(step: StepModel, sp: Split, stage: Path, contract: C.ModelContract, results: dict,
               sources: tuple) -> None:
    """Each quantized variant's error per tensor and layer (``pipeline.attribution``) on up
    to 64 test windows, into its verification figures and the report; for a variant that
    missed, also each layer and tensor kept in float one at a time in the simulation, on
    the model it was quantized from (``sources``: the model, the fine-tuned copies per
    variant, the configuration)."""
    from pipeline.attribution import attribute, one_at_a_time, stream_windows
    from pipeline.report import append_attribution

    float_blob = (stage / contract.variants["float32"].file).read_bytes()
    names = [(s.input, s.output, s.shape) for s in step.states]
    model, copies, cfg = sources
    for v, spec in contract.variants.items():
        if v == "float32":
            continue
        q = spec.quantization
        settings = q.get("recipe", {}).get("settings", {})
        layout = settings.get("layout", cfg.quantize.cell_layout)
        twin = float_blob
        if layout != cfg.quantize.cell_layout:  # compare with a float twin of the same graph
            with tempfile.TemporaryDirectory() as tmp:
                twin = conv.convert(StepModel.from_keras(model, layout).save(Path(tmp) / "saved"), "float32", [])
        results[v]["attribution"] = attribute(twin, (stage / spec.file).read_bytes(), names, sp.X_test[:64])
        if results[v]["status"] != "pass":
            qc = replace(cfg.quantize, calibration_stream_steps=cfg.quantize.calibration_stream_steps
                         * settings.get("stream_factor", 1))
            results[v]["attribution"]["one_at_a_time"] = one_at_a_time(
                copies.get(v, model), conv.calibration_set(sp.X_train, qc),
                stream_windows(sp.X_test, 8, ONE_AT_A_TIME_STEPS), 16 if v == "int16x8" else 8,
                split=layout.endswith("+split"))
    append_attribution(stage / "report", {v: f["attribution"] for v, f in results.items() if "attribution" in f})


ONE_AT_A_TIME_STEPS = 1000  # per lane (8 lanes) of the one-at-a-time attribution's no-reset streams


def _micro_check(contract: C.ModelContract, stage: Path, sp: Split, cfg: VerifyConfig) -> dict[str, dict]:
    """Each variant through the TFLite Micro interpreter (arena size, parity with the engine)."""
    if not micro.micro_available():
        log.warning("tflite-micro is not installed: the microcontroller check is skipped")
        return {}
    found = micro.check_all(contract, stage, sp.raw(sp.X_test[:64]), cfg)
    for v, r in found.items():
        log.info("TFLite Micro %s: %s", v, f"arena {r.get('arena_bytes')} bytes, max |dy| vs engine "
                 f"{r.get('max_abs', float('nan')):.2e}" if r.get("runs") else f"cannot run: {r.get('error')}")
    return found


def _convert_variants(model: keras.Model, step: StepModel, sp: Split, cfg: BuildConfig, stage: Path,
                      tuned: Tuning) -> dict[str, C.VariantSpec]:
    """float32 from ``step`` as it is; each quantized variant by its recipe search, from
    ``model`` or from a copy fine-tuned for it (``pipeline.finetune.Tuning``)."""
    from pipeline import recipes

    variants = {}
    with tempfile.TemporaryDirectory() as tmp:
        plain = recipes.Search(model, sp, cfg, Path(tmp) / "plain")
        for v in cfg.quantize.variants:
            t = time.monotonic()
            extra = {}
            if v == "float32":
                blob = conv.convert(step.save(Path(tmp) / "saved_float32"), v, [])
            else:
                blob, recipe, ft = tuned.quantize(plain, v, Path(tmp))
                extra = {"recipe": recipe, "finetune": ft}
            name = f"step_{v}.tflite"
            (stage / name).write_bytes(blob)
            log.info("converted %s: %d bytes in %.1f s", v, len(blob), time.monotonic() - t)
            summary = conv.quantization_summary(blob, v) | extra
            variants[v] = C.VariantSpec(
                name=v, file=name, sha256=C.sha256_file(stage / name), bytes=len(blob),
                tensors=conv.tensor_map(blob), quantization=summary,
            )
    return variants


def _contract(step: StepModel, sp: Split, variants: dict[str, C.VariantSpec], default: str,
              data: DataConfig = DataConfig()) -> C.ModelContract:
    units = step.units
    labels = tuple(str(i) for i in range(max(2, units) if step.output_kind == "sigmoid" else units))
    names = getattr(sp, "class_names", None)
    if names and len(names) == len(labels):  # text labels: the class names
        labels = tuple(names)
    return C.ModelContract(
        schema_version=C.SCHEMA_VERSION,
        tool={"name": "stepwise", "version": __version__, "tensorflow": tf.__version__,
              "keras": keras.__version__},
        signature_key=SIGNATURE_KEY,
        input=C.InputSpec(name=INPUT_NAME, features=sp.features, feature_names=sp.feature_names,
                          mean=tuple(float(v) for v in sp.mean), std=tuple(float(v) for v in sp.std)),
        states=tuple(step.states),
        outputs=(C.OutputSpec(name=OUTPUT_NAME, kind=step.output_kind, units=units, labels=labels),),
        window=manifest_window(step.window_spec(sp.steps), data),
        variants=variants,
        default_variant=default,
    )


def _promote(stage: Path, out: Path) -> None:
    """Move staged files into ``out``: old manifest removed first, new manifest last."""
    old = out / C.MANIFEST_NAME
    if old.exists():
        old.unlink()
    for item in sorted(stage.iterdir()):
        if item.name == C.MANIFEST_NAME:
            continue
        target = out / item.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    data = (stage / C.MANIFEST_NAME).read_bytes()
    atomic_write_bytes(out / C.MANIFEST_NAME, data)
    json.loads(data)  # sanity: what we wrote parses
