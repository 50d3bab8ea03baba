"""Fine-tuning a model trained elsewhere for its quantized variants (``stepwise convert``).

Where plain post-training quantization of the user's model misses a bar on the
validation split, a copy of the model is fine-tuned for that variant through its
simulated integer step graph (``pipeline.qat``: int8, or int16x8, with the kernels as the
kept recipe converts them), distilled from the user's model. The user's model itself is
never changed and stays the float32 variant and the reference every variant is verified
against. The variant takes the copy only where the copy, quantized with the recipe kept
for the model, misses fewer bars on the validation split (``choose``).
"""
from __future__ import annotations

import logging
from pathlib import Path

import keras

from pipeline.config import BuildConfig
from pipeline.data import Split

log = logging.getLogger(__name__)


def finetuned_copy(model: keras.Model, sp: Split, cfg: BuildConfig, variant: str = "int8",
                   split: bool = False) -> tuple[keras.Model | None, dict]:
    """The copy fine-tuned for ``variant`` (None when fine-tuning does not apply or changed
    nothing) and a record of what happened; ``split``: the kernels as the ``split_weights``
    recipe converts them."""
    from pipeline.convert import calibration_set
    from pipeline.qat import quantization_aware_finetune
    from pipeline.quantsim import StepSim

    if cfg.train.qat_epochs == 0:
        return None, {"ran": False, "why": "[train] qat_epochs = 0"}
    if not StepSim.supports(model):
        return None, {"ran": False, "why": "the simulated step graph covers LSTM, GRU and SimpleRNN stacks "
                                           "(Normalization first; Dropout, LayerNormalization and LeakyReLU "
                                           "between) under a sigmoid/softmax Dense head"}
    copy = copy_model(model)
    bits = 16 if variant == "int16x8" else 8
    result = quantization_aware_finetune(copy, sp, cfg.train, calibration_set(sp.X_train, cfg.quantize),
                                         teacher=model, bits=bits, split=split)
    summary = result["summary"]
    if not summary["kept"]:
        return None, {"ran": True, "why": f"the simulated {variant} model did not get better", "simulation": summary}
    return copy, {"ran": True, "simulation": summary}


def copy_model(model: keras.Model) -> keras.Model:
    """A copy of ``model`` with its own weights that computes what it computes
    (``stepmodel.with_weights_of``: an adapted Normalization layer included)."""
    from pipeline.stepmodel import with_weights_of

    return with_weights_of(keras.models.clone_model(model), model)


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


class Tuning:
    """Each quantized variant by the recipe search on the user's model, and where that
    misses a bar on validation, by the same recipe on a copy fine-tuned for the variant
    (``choose`` decides); ``why_off``: why no fine-tuning runs at all (None: it may).
    ``copies`` holds, per variant, the copy it was quantized from where one was kept."""

    def __init__(self, model: keras.Model, sp: Split, cfg: BuildConfig, why_off: str | None):
        self.model, self.sp, self.cfg, self.why_off = model, sp, cfg, why_off
        self.copies: dict[str, keras.Model] = {}

    def quantize(self, plain, variant: str, workdir: Path) -> tuple[bytes, dict, dict]:
        """``plain``: the ``recipes.Search`` of the user's model -> (flatbuffer, recipe
        record, the manifest's ``finetune`` record)."""
        from pipeline import recipes

        found = recipes.search(plain, variant)
        if self.why_off is not None:
            return *found, {"ran": False, "why": self.why_off, "kept": False}
        if found[1]["missed"] == 0:
            return *found, {"ran": False, "why": "plain quantization passes on the validation split", "kept": False}
        copy, info = finetuned_copy(self.model, self.sp, self.cfg, variant,
                                    split=found[1]["settings"]["layout"].endswith("+split"))
        tuned = None
        if copy is not None:
            search = recipes.Search(self.model, self.sp, self.cfg, workdir / f"tuned-{variant}", copy)
            tuned = recipes.search(search, variant, only=found[1]["name"])
        blob, recipe, record = choose(found, tuned, info)
        if record["kept"]:
            self.copies[variant] = copy
        return blob, recipe, record
