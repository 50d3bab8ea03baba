"""A model ``factor`` times wider than the built one, packaged as a float32-only artifacts
folder so the same probes time it: same layers, every recurrent layer with ``factor`` x
the units, random weights (timing does not depend on them), converted through the
pipeline's own functions (``StepModel.from_keras``, ``.save``, ``pipeline.convert``)."""
from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

import keras

from bench.keras_rows import load_keras
from pipeline import convert as conv
from pipeline.stepmodel import StepModel
from runtime import contract as C

log = logging.getLogger(__name__)

VARIANT = "float32"


def wider_model(model: keras.Model, factor: int, seed: int = 0) -> keras.Model:
    """Same architecture, ``units * factor`` in every recurrent layer, fresh random weights."""
    keras.utils.set_random_seed(seed)
    layers: list = [keras.Input(tuple(model.inputs[0].shape[1:]))]
    for layer in model.layers:
        config = layer.get_config()
        if isinstance(layer, keras.layers.RNN):
            config["units"] = int(config["units"]) * factor
        layers.append(type(layer).from_config(config))
    return keras.Sequential(layers, name=f"{model.name}_x{factor}")


def build_wider_artifacts(artifacts: str | Path, out: Path, factor: int = 4) -> dict:
    """Write ``out/manifest.json`` and ``out/step_float32.tflite`` for the wider model;
    returns a description (units per recurrent layer, parameters, bytes)."""
    base = C.load_contract(artifacts)
    model = wider_model(load_keras(artifacts), factor)
    step = StepModel.from_keras(model)
    with tempfile.TemporaryDirectory() as tmp:
        blob = conv.convert(step.save(Path(tmp) / "saved_model"), VARIANT, [])
    out.mkdir(parents=True, exist_ok=True)
    name = f"step_{VARIANT}.tflite"
    (out / name).write_bytes(blob)
    spec = C.VariantSpec(name=VARIANT, file=name, sha256=C.sha256_file(out / name), bytes=len(blob),
                         tensors=conv.tensor_map(blob))
    contract = dataclasses.replace(base, states=tuple(step.states), variants={VARIANT: spec},
                                   default_variant=VARIANT)
    C.write_contract(contract, out)
    units = [int(layer.units) for layer in model.layers if isinstance(layer, keras.layers.RNN)]
    log.info("wider model (x%d): units %s, %d parameters, %d bytes", factor, units,
             model.count_params(), len(blob))
    return {"factor": factor, "units": units, "parameters": int(model.count_params()),
            "tflite_bytes": len(blob)}


def default_model_info(artifacts: str | Path) -> dict:
    """The same description of the built model."""
    model = load_keras(artifacts)
    contract = C.load_contract(artifacts)
    units = [int(layer.units) for layer in model.layers if isinstance(layer, keras.layers.RNN)]
    return {"factor": 1, "units": units, "parameters": int(model.count_params()),
            "tflite_bytes": contract.variant(VARIANT).bytes}
