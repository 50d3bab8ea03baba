"""Fine-tuning a model trained elsewhere for its quantized variants (``stepwise convert``).

A copy of the user's model is fine-tuned through its simulated integer step graph
(``pipeline.qat``); the user's model itself is never changed and stays the float32
variant and the reference every variant is verified against. Each quantized variant then
takes the copy only where the copy's best recipe misses fewer bars on the validation
split than plain post-training quantization of the user's model (``build``).
"""
from __future__ import annotations

import logging

import keras

from pipeline.config import BuildConfig
from pipeline.data import Split

log = logging.getLogger(__name__)


def finetuned_copy(model: keras.Model, sp: Split, cfg: BuildConfig) -> tuple[keras.Model | None, dict]:
    """The fine-tuned copy (None when fine-tuning does not apply or changed nothing) and a
    record of what happened."""
    from pipeline.convert import calibration_set
    from pipeline.qat import quantization_aware_finetune
    from pipeline.quantsim import StepSim

    if cfg.train.qat_epochs == 0:
        return None, {"ran": False, "why": "[train] qat_epochs = 0"}
    if not StepSim.supports(model):
        return None, {"ran": False, "why": "the simulated step graph covers LSTM, GRU and SimpleRNN stacks "
                                           "(Normalization first; Dropout, LayerNormalization and LeakyReLU "
                                           "between) under a sigmoid/softmax Dense head"}
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    result = quantization_aware_finetune(copy, sp, cfg.train, calibration_set(sp.X_train, cfg.quantize))
    summary = result["summary"]
    if not summary["kept"]:
        return None, {"ran": True, "why": "the simulated int8 model did not get better", "simulation": summary}
    return copy, {"ran": True, "simulation": summary}


def choose(plain: tuple[bytes, dict], tuned: tuple[bytes, dict] | None, info: dict) -> tuple[bytes, dict, dict]:
    """Plain PTQ ``(blob, recipe record)`` or the fine-tuned copy's: the copy only when its
    kept recipe missed fewer bars on validation. Returns the blob, its recipe record and
    the manifest's ``finetune`` record."""
    if tuned is None:
        return plain[0], plain[1], {**info, "kept": False}
    kept = tuned[1]["missed"] < plain[1]["missed"]
    record = {**info, "kept": kept, "plain_missed": plain[1]["missed"], "finetuned_missed": tuned[1]["missed"],
              "plain_recipe": plain[1]["name"], "finetuned_recipe": tuned[1]["name"]}
    log.info("fine-tuned copy %s: %d bars missed on validation, plain quantization %d",
             "kept" if kept else "not kept", tuned[1]["missed"], plain[1]["missed"])
    return (*tuned, record) if kept else (*plain, record)
