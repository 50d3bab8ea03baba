"""A quantization recipe per model: candidates measured by the same bars, the best kept.

A ``Recipe`` fixes how one quantized variant is made: the cell layout of the step graph
(one FULLY_CONNECTED per gate, or one fused matmul then SPLIT), weight scales per output
channel or per tensor, what the converter calibrates on (the training windows, plus a
no-reset stream, or a stream four times as long), and how the LSTM cell-state range is
handled (all calibration rows, or without the ``trim`` share of rows whose cell states
are the most extreme: a tighter grid for the common values, extremes clamped), and
whether each kernel is split into its int8 grid values plus the rest (two
FULLY_CONNECTED ops: about 15-bit kernels for twice the weight bytes and matmuls).

``search`` converts the candidates in order and judges each on the *validation* split
(every prefix of the windows and a no-reset stream) with ``verify.judge``, the very bars
``stepwise verify`` applies later on the test split. With ``search = "until_pass"`` the search stops at the first recipe that passes, with
``"all"`` it tries them all and keeps the best passing one (fewest bars missed, then the
smallest worst figure as a share of its bar); when none passes, the closest is kept.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import keras
import numpy as np

from pipeline import convert as conv
from pipeline.config import RECIPE_NAMES, BuildConfig, QuantizeConfig
from pipeline.data import Split
from pipeline.stepmodel import INPUT_NAME, SIGNATURE_KEY, StepModel, keras_sequence_outputs
from pipeline.verify import Bar, bars_for, judge, long_stream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    name: str
    layout: str = "per_gate"  # cells' gate layout: "per_gate" or "fused"; "+split": kernels as two
    # FULLY_CONNECTED (the int8 grid values plus the rest, ``cells.denser``)
    per_channel: bool = True  # weight scales per output channel (else per tensor)
    stream_factor: int = 1  # calibration stream = calibration_stream_steps * this
    trim: float = 0.0  # share of calibration rows with the most extreme cell states left out


RECIPES = {  # name -> the recipe, given [quantize] (its cell_layout where the name does not say)
    "per_gate": lambda qc: Recipe("per_gate", "per_gate"),
    "fused": lambda qc: Recipe("fused", "fused"),
    "long_stream": lambda qc: Recipe("long_stream", qc.cell_layout, stream_factor=4),
    "trim_c": lambda qc: Recipe("trim_c", qc.cell_layout, trim=0.002),
    "per_tensor": lambda qc: Recipe("per_tensor", qc.cell_layout, per_channel=False),
    "split_weights": lambda qc: Recipe("split_weights", qc.cell_layout + "+split"),
}

assert tuple(RECIPES) == RECIPE_NAMES


def candidates(qc: QuantizeConfig, has_lstm: bool) -> list[Recipe]:
    """The configured recipes in order; ``trim_c`` and a second layout only for models with
    an LSTM (only the LSTM cell has a layout choice and a cell state)."""
    out = [RECIPES[n](qc) for n in qc.recipes if n != "trim_c" or has_lstm]
    if not has_lstm:
        layouts = [r for r in out if r.name in ("per_gate", "fused")]
        out = [r for r in out if r.name not in ("per_gate", "fused") or r is layouts[0]]
    return out


@dataclass
class Tried:
    recipe: Recipe
    blob: bytes | None
    figures: dict

    @property
    def rank(self) -> tuple[int, float]:
        """(bars missed, worst figure as a share of its bar): lower is better."""
        return (self.figures.get("missed", 99), self.figures.get("worst", math.inf))

    def record(self) -> dict:
        keep = ("status", "missed", "worst", "decisive_agreement", "agreement", "ambiguous_share",
                "accuracy_delta", "p99_abs", "max_abs", "drift_p99_abs", "drift_max_abs", "error")
        return {"recipe": self.recipe.name, "settings": asdict(self.recipe),
                **{k: self.figures[k] for k in keep if k in self.figures}}


def worst_share(bars: list[Bar], figures: dict) -> float:
    """The worst figure as a share of what its bar allows (<= 1: within every bar)."""
    out = 0.0
    for b in bars:
        v = figures[b.figure]
        if isinstance(v, float) and math.isnan(v):
            return math.inf
        share = (1.0 - v) / max(1e-12, 1.0 - b.limit) if b.higher_is_better else v / max(1e-12, b.limit)
        out = max(out, share)
    return out


class Search:
    """Step models, calibration sets and validation references shared by the candidates of
    one model (``model`` ``[m, T, F]`` Keras, ``sp`` its split). ``quantized`` (default:
    ``model``) is what gets quantized, e.g. a fine-tuned copy; the reference stays ``model``."""

    def __init__(self, model: keras.Model, sp: Split, cfg: BuildConfig, workdir: Path,
                 quantized: keras.Model | None = None):
        self.model, self.sp, self.cfg, self.workdir = model, sp, cfg, workdir
        self.quantized = quantized if quantized is not None else model
        workdir.mkdir(parents=True, exist_ok=True)
        self._saved: dict[str, tuple[StepModel, Path]] = {}
        self._calibration: dict[tuple, list] = {}
        qc = cfg.quantize
        self.X = sp.X_val[: qc.search_sequences].astype(np.float32)
        self.y = sp.y_val[: qc.search_sequences]
        self.lengths = sp.len_val[: qc.search_sequences]  # true lengths: padding is not judged
        self.stream = long_stream(sp.X_val, qc.search_stream_steps, seed=qc.seed + 2, lengths=sp.len_val)
        self.ref = keras_sequence_outputs(model, self.X)
        self.stream_ref = keras_sequence_outputs(model, self.stream)

    def step_model(self, layout: str) -> tuple[StepModel, Path]:
        if layout not in self._saved:
            step = StepModel.from_keras(self.quantized, layout)
            self._saved[layout] = (step, step.save(self.workdir / f"saved_{layout}"))
        return self._saved[layout]

    def calibration(self, r: Recipe) -> list[dict[str, np.ndarray]]:
        key = (r.layout, r.stream_factor, r.trim)
        if key not in self._calibration:
            qc = self.cfg.quantize
            qc = replace(qc, calibration_stream_steps=qc.calibration_stream_steps * r.stream_factor)
            cal = conv.calibration_set(self.sp.X_train, qc, self.sp.len_train)
            rows = conv.calibration_inputs(self.step_model(r.layout)[0], cal)
            self._calibration[key] = trim_rows(rows, self.step_model(r.layout)[0], r.trim)
        return self._calibration[key]

    def try_recipe(self, variant: str, r: Recipe) -> Tried:
        step, saved = self.step_model(r.layout)
        try:
            blob = conv.convert(saved, variant, self.calibration(r), per_channel=r.per_channel)
            ys, stream_ys = run_tflite(blob, step, self.X), run_tflite(blob, step, self.stream)
        except Exception as e:  # a candidate the converter or the interpreter refuses is a result
            log.info("recipe %s for %s: %s", r.name, variant, e)
            return Tried(r, None, {"status": "error", "error": f"{type(e).__name__}: {e}"[:300]})
        f = judge(variant, self.step_kind(step), self.ref, ys, self.stream_ref, stream_ys, self.y, self.cfg.verify,
                  self.lengths)
        bars = bars_for(variant, self.cfg.verify)
        f["missed"] = len(f["failed"]) if f["judgeable"] else len(bars)
        f["worst"] = worst_share(bars, f)
        return Tried(r, blob, f)

    @staticmethod
    def step_kind(step: StepModel) -> str:
        return step.output_kind


def search(s: Search, variant: str, only: str | None = None) -> tuple[bytes, dict]:
    """The kept variant's flatbuffer, and the manifest's record of the search (``missed``:
    bars the kept recipe missed on validation); ``only``: just that recipe."""
    qc = s.cfg.quantize
    has_c = any(st.kind == "c" for st in s.step_model(qc.cell_layout)[0].states)
    tried: list[Tried] = []
    chosen = candidates(qc, has_c) if only is None else [RECIPES[only](qc)]
    for r in chosen:
        tried.append(s.try_recipe(variant, r))
        log.info("recipe %s for %s on the validation split: %s (worst figure %.2f of its bar)", r.name,
                 variant, tried[-1].figures["status"], tried[-1].figures.get("worst", math.inf))
        if qc.search == "until_pass" and tried[-1].figures["status"] == "pass":
            break
        if qc.search == "off":
            break
    usable = [t for t in tried if t.blob is not None]
    if not usable:
        raise conv.StepwiseError(f"no recipe converts the {variant} variant: {tried[0].figures['error']}")
    best = min(usable, key=lambda t: t.rank)
    log.info("%s: recipe %s kept (%s on validation)", variant, best.recipe.name, best.figures["status"])
    return best.blob, {"name": best.recipe.name, "settings": asdict(best.recipe), "selected_on": "validation split",
                       "search": qc.search, "missed": best.rank[0], "worst": best.rank[1],
                       "tried": [t.record() for t in tried]}


def trim_rows(rows: list[dict[str, np.ndarray]], step: StepModel, share: float) -> list[dict[str, np.ndarray]]:
    """``rows`` without the ``share`` of them whose cell states, fed or produced, reach
    furthest out (each row's step is run once, all rows in one batch)."""
    specs = [st for st in step.states if st.kind == "c"]
    if share <= 0 or not specs:
        return rows
    import tensorflow as tf

    batch = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    out = step.step(tf.constant(batch[INPUT_NAME]), *[tf.constant(batch[st.input]) for st in step.states])
    reach = np.zeros(len(rows))
    for st in specs:
        for v in (batch[st.input], out[st.output].numpy()):
            reach = np.maximum(reach, np.abs(v).reshape(len(rows), -1).max(axis=1))
    cut = np.quantile(reach, 1.0 - share)
    return [r for r, v in zip(rows, reach) if v <= cut]


def run_tflite(blob: bytes, step: StepModel, X: np.ndarray) -> np.ndarray:
    """``X`` ``[m, T, F]`` through a model file, each sequence a lane from zero states."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=blob).get_signature_runner(SIGNATURE_KEY)
    states = {s.input: np.zeros((X.shape[0], *s.shape), np.float32) for s in step.states}
    ys = []
    for t in range(X.shape[1]):
        out = runner(**{INPUT_NAME: np.ascontiguousarray(X[:, t], np.float32)}, **states)
        ys.append(out["y"])
        states = {s.input: out[s.output] for s in step.states}
    return np.stack(ys, axis=1)
