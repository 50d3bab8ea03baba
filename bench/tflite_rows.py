"""Rows 4 and 5 on one interpreter backend: the bare TFLite floor and the engine step.

Runs in either environment (numpy and ``runtime`` only): the device environment runs it
through ``bench.device_probe`` with tflite-runtime, the build environment with
ai-edge-litert. Every row of one backend is measured in one process, one after another.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from bench.timing import time_calls
from runtime.backend import LoadedModel, choose_backend, load_model
from runtime.contract import ModelContract, load_contract, read_model_bytes
from runtime.engine import Engine

log = logging.getLogger(__name__)

TEST_DATA = "test_data.npz"


def load_samples(artifacts: Path, contract: ModelContract, n: int = 4096) -> np.ndarray:
    """Raw (unnormalised) samples ``[n, F]``: the build's test sequences laid end to end,
    or draws from the manifest's mean/std when the folder has no test data."""
    path = Path(artifacts) / TEST_DATA
    F = contract.input.features
    if path.exists():
        with np.load(path) as z:
            flat = np.asarray(z["X"], np.float32).reshape(-1, F)
        if len(flat):
            return np.resize(flat, (n, F)).astype(np.float32)
    rng = np.random.default_rng(0)
    mean, std = np.asarray(contract.input.mean), np.asarray(contract.input.std)
    return (rng.standard_normal((n, F)) * std + mean).astype(np.float32)


def _fixed_inputs(model: LoadedModel, contract: ModelContract, sample: np.ndarray):
    """(index, raw array) for every signature input: the normalised sample, zero states."""
    real = (sample - np.asarray(contract.input.mean, np.float32)) / np.asarray(contract.input.std, np.float32)
    feeds = []
    for name, t in model.inputs.items():
        value = real[None] if name == contract.input.name else np.zeros((1, *t.shape), np.float32)
        feeds.append((t.index, t.to_raw(value, np.zeros((1, *t.shape), t.dtype))))
    return feeds


def floor_row(data: bytes, contract: ModelContract, backend: str | None, sample: np.ndarray,
              steps: int, warmup: int) -> dict:
    """Row 4: ``set_tensor`` of every input (prepared arrays) + ``invoke``; nothing read."""
    model = load_model(data, contract.signature_key, backend=backend)
    model.resize(1)
    it = model.interpreter
    set_tensor, invoke = it.set_tensor, it.invoke
    feeds = _fixed_inputs(model, contract, sample)

    def call(_i: int) -> None:
        for index, raw in feeds:
            set_tensor(index, raw)
        invoke()

    return time_calls(call, steps, warmup)


def bare_loop_row(data: bytes, contract: ModelContract, backend: str | None, sample: np.ndarray,
                  steps: int, warmup: int) -> dict:
    """Row 4b: the usual hand-written loop, ``get_tensor`` of every output and
    ``set_tensor`` of each state back (stored values copied as they are: no
    normalisation, requantization or checks)."""
    model = load_model(data, contract.signature_key, backend=backend)
    model.resize(1)
    it = model.interpreter
    set_tensor, get_tensor, invoke = it.set_tensor, it.get_tensor, it.invoke
    x_index, x_raw = next((i, a) for i, a in _fixed_inputs(model, contract, sample)
                          if i == model.inputs[contract.input.name].index)
    carry = [(model.outputs[s.output].index, model.inputs[s.input].index,
              np.zeros((1, *model.inputs[s.input].shape), model.inputs[s.input].dtype))
             for s in contract.states]
    y_index = model.outputs[contract.output.name].index

    def call(_i: int) -> None:
        set_tensor(x_index, x_raw)
        invoke()
        get_tensor(y_index)
        for out_index, in_index, buf in carry:
            np.copyto(buf, get_tensor(out_index), casting="unsafe")
            set_tensor(in_index, buf)

    return time_calls(call, steps, warmup)


def engine_row(artifacts: Path, variant: str, backend: str | None, samples: np.ndarray,
               steps: int, warmup: int) -> dict:
    """Row 5: ``Engine.step(sample)`` (reset never)."""
    engine = Engine.load(artifacts, variant=variant, reset="never", backend=backend)
    rows = [np.array(s) for s in samples]
    n = len(rows)
    step = engine.step
    return time_calls(lambda i: step(rows[i % n]), steps, warmup)


def lanes_row(artifacts: Path, variant: str, backend: str | None, samples: np.ndarray,
              lanes: int, steps: int, warmup: int) -> dict:
    """``Engine.step_lanes(X[lanes, F])``: one invoke for ``lanes`` streams."""
    engine = Engine.load(artifacts, variant=variant, lanes=lanes, reset="never", backend=backend)
    batches = [np.ascontiguousarray(np.roll(samples, -k, axis=0)[:lanes]) for k in range(64)]
    step_lanes = engine.step_lanes
    result = time_calls(lambda i: step_lanes(batches[i % 64]), steps, warmup)
    per_invoke = result["median_us"]
    return {"lanes": lanes, **result, "samples_per_s": lanes / (per_invoke * 1e-6),
            "us_per_stream": per_invoke / lanes}


def measure(artifacts: Path, backend: str | None, variants: list[str] | None, lanes: list[int],
            steps: int, warmup: int) -> dict:
    """Floor, bare loop and engine per variant, then the lanes sweep on the default variant."""
    artifacts = Path(artifacts)
    contract = load_contract(artifacts)
    samples = load_samples(artifacts, contract)
    name, _, version = choose_backend(backend)
    out: dict = {"backend": name, "backend_version": version, "numpy": np.__version__,
                 "default_variant": contract.default_variant, "variants": {}, "lanes": []}
    for v in variants or list(contract.variants):
        data = read_model_bytes(contract, artifacts, v)
        rows = out["variants"][v] = {
            "floor": floor_row(data, contract, name, samples[0], steps, warmup),
            "bare_loop": bare_loop_row(data, contract, name, samples[0], steps, warmup),
            "engine": engine_row(artifacts, v, name, samples, steps, warmup),
        }
        log.info("%s %s: floor %.1f us, engine %.1f us", name, v, rows["floor"]["median_us"],
                 rows["engine"]["median_us"])
    for n in lanes:
        out["lanes"].append(lanes_row(artifacts, contract.default_variant, name, samples, n,
                                      steps, warmup))
    return out
