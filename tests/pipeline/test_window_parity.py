"""Window heads and valid Conv1D, streamed by the runtime engine, every step against Keras.

In the kws_streaming style: tiny seeded models; the Keras model runs on the window ending
at each sample (left-padded with zeros before T samples); the converted float32 step
model runs one sample at a time through the engine under ``sliding:T``; every step must
agree to 1e-5, warm-up included.
"""
from __future__ import annotations

import json
import re
import time
from types import SimpleNamespace

import numpy as np
import pytest

import keras  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from pipeline import convert as conv  # noqa: E402
from pipeline.build import _contract  # noqa: E402
from pipeline.stepmodel import StepModel  # noqa: E402
from runtime import contract as C  # noqa: E402
from runtime.engine import Engine, warmup_payload  # noqa: E402
from runtime.errors import ConfigError, ContractError  # noqa: E402
from runtime.replay import replay  # noqa: E402
from stepwise_cli.main import cli  # noqa: E402

L = keras.layers
T, F = 6, 3


def _seq(*layers):
    return keras.Sequential([keras.Input((T, F)), *layers])


HEADS = {
    "flatten": lambda: _seq(L.LSTM(6, return_sequences=True), L.LeakyReLU(), L.Dropout(0.2),
                            L.LSTM(4, return_sequences=True), L.Dropout(0.2), L.LeakyReLU(),
                            L.Flatten(), L.Dense(1, activation="sigmoid")),
    "reshape": lambda: _seq(L.GRU(4, return_sequences=True), L.Reshape((T * 4,)), L.Dense(2)),
    "global_average": lambda: _seq(L.LSTM(5, return_sequences=True), L.GlobalAveragePooling1D(),
                                   L.Dense(3, activation="softmax")),
    "global_max": lambda: _seq(L.SimpleRNN(5, return_sequences=True), L.GlobalMaxPooling1D(),
                               L.Dense(1, activation="sigmoid")),
    "average_pool_T": lambda: _seq(L.GRU(4, return_sequences=True), L.AveragePooling1D(T), L.Flatten(),
                                   L.Dense(1, activation="sigmoid")),
    "max_pool_T": lambda: _seq(L.LSTM(4, return_sequences=True), L.Dense(3, activation="tanh"),
                               L.MaxPooling1D(T), L.Dense(2)),
    "valid_conv_flatten": lambda: _seq(L.Conv1D(4, 3, padding="valid", activation="relu"),
                                       L.LSTM(3, return_sequences=True), L.Flatten(), L.Dense(1)),
}
STREAMS = {
    "valid_conv_lstm": lambda: _seq(L.Conv1D(4, 3, padding="valid"), L.LSTM(5),
                                    L.Dense(1, activation="sigmoid")),
    "valid_dilated_conv_gru": lambda: _seq(L.Conv1D(3, 2, padding="valid", dilation_rate=2, activation="tanh"),
                                           L.GRU(4, return_sequences=True), L.Dense(2)),
}


def _artifacts(model, path):
    """A float32-only artifacts folder for ``model`` (inputs taken as they are)."""
    step = StepModel.from_keras(model)
    blob = conv.convert(step.save(path / "sm"), "float32", [])
    (path / "step_float32.tflite").write_bytes(blob)
    variant = C.VariantSpec(name="float32", file="step_float32.tflite", sha256=C.sha256_file(path / "step_float32.tflite"),
                            bytes=len(blob), tensors=conv.tensor_map(blob))
    sp = SimpleNamespace(features=F, feature_names=("a", "b", "c"), mean=np.zeros(F), std=np.ones(F), steps=T)
    contract = _contract(step, sp, {"float32": variant}, default="float32")
    C.write_contract(contract, path)
    return contract


def _keras_windows(model, stream):
    """The model on the zero-left-padded window ending at every sample of ``stream`` ``[n, F]``."""
    padded = np.concatenate([np.zeros((T - 1, F), np.float32), stream])
    windows = np.stack([padded[t:t + T] for t in range(len(stream))])
    y = np.asarray(model(windows, training=False))
    return y.reshape(len(stream), -1)


def _data(seed=5, m=3):
    return np.random.default_rng(seed).normal(0, 1.5, (m, T, F)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_window_head_every_step_matches_keras_window(name, tmp_path):
    keras.utils.set_random_seed(11)
    model = HEADS[name]()
    contract = _artifacts(model, tmp_path)
    assert (contract.window.mode, contract.window.length, contract.window.reset) == ("window_head", T, f"sliding:{T}")
    assert any(s.kind == "ring" and s.shape[0] <= T for s in contract.states)
    stream = _data().reshape(-1, F)  # three sequences back to back, no resets
    engine = Engine.load(tmp_path)
    preds = [engine.step(x) for x in stream]
    got = np.stack([p.y for p in preds])
    ref = _keras_windows(model, stream)
    assert np.abs(got - ref)[: T - 1].max() <= 1e-5  # warm-up: zero-padded windows
    assert np.abs(got - ref)[T - 1:].max() <= 1e-5  # every full window
    assert [p.warmup for p in preds] == [True] * (T - 1) + [False] * (len(stream) - T + 1)


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_valid_conv1d_streams_with_warmup(name, tmp_path):
    keras.utils.set_random_seed(3)
    model = STREAMS[name]()
    contract = _artifacts(model, tmp_path)
    span = model.layers[0].dilation_rate[0] * (model.layers[0].kernel_size[0] - 1)
    assert contract.window.mode == "stream" and contract.window.warmup == span
    X = _data(m=4)
    got = replay(Engine.load(tmp_path, reset="never"), X).as_array()  # reset per sequence
    for t in range(T):
        if t >= span:  # the model on the prefix itself
            y = np.asarray(model(X[:, : t + 1], training=False))
        else:  # warm-up: the prefix zero-left-padded to the kernel's span + 1
            y = np.asarray(model(np.concatenate([np.zeros((4, span - t, F), np.float32), X[:, : t + 1]], 1)))
        ref = y[:, -1] if y.ndim == 3 else y
        assert np.abs(got[:, t] - ref).max() <= 1e-5, t


def test_window_head_refuses_other_reset_policies(tmp_path):
    keras.utils.set_random_seed(0)
    _artifacts(HEADS["global_average"](), tmp_path)
    for policy in ("never", "window:6", "sliding:5", "gap:2"):
        with pytest.raises(ConfigError, match=f"sliding:{T}"):
            Engine.load(tmp_path, reset=policy)
    res = CliRunner().invoke(cli, ["replay", "--artifacts", str(tmp_path), "--reset", "never",
                                   str(_npz(tmp_path))])
    assert res.exit_code != 0 and "only under sliding:6" in res.output


def _npz(path):
    np.savez(path / "held.npz", X=_data(m=2), y=np.zeros(2, np.int64))
    return path / "held.npz"


def test_replay_marks_and_suppresses_warmup(tmp_path):
    keras.utils.set_random_seed(1)
    model = HEADS["flatten"]()
    _artifacts(model, tmp_path)
    data = _npz(tmp_path)
    args = ["replay", "--artifacts", str(tmp_path), "--reset", f"sliding:{T}", str(data)]
    rows = [json.loads(line) for line in CliRunner().invoke(cli, args).output.splitlines()]
    assert [r.get("warmup", False) for r in rows] == [True] * (T - 1) + [False] * (2 * T - T + 1)
    ref = _keras_windows(model, np.load(data)["X"].reshape(-1, F))
    assert np.abs(np.array([r["y"] for r in rows]) - ref).max() <= 1e-5
    quiet = [json.loads(line) for line in CliRunner().invoke(cli, [*args[:-1], "--no-warmup", str(data)]).output.splitlines()]
    assert quiet == rows[T - 1:]


def test_window_head_snapshot_mid_warmup_resumes_exactly(tmp_path):
    keras.utils.set_random_seed(2)
    _artifacts(HEADS["valid_conv_flatten"](), tmp_path)
    stream = _data().reshape(-1, F)
    whole = [Engine.load(tmp_path)]
    ref = np.stack([whole[0].step(x).y for x in stream])
    for cut in (2, T + 1):
        first = Engine.load(tmp_path)
        head = [first.step(x).y for x in stream[:cut]]
        second = Engine.load(tmp_path)
        second.restore(first.snapshot())
        tail = [second.step(x).y for x in stream[cut:]]
        assert np.abs(np.stack(head + tail) - ref).max() == 0.0


def test_export_c_carries_window_layout_and_warmup_states(tmp_path):
    from firmware_bridge.export_c import export_c

    keras.utils.set_random_seed(4)
    contract = _artifacts(HEADS["flatten"](), tmp_path)
    with pytest.raises(ContractError, match="warm-up states"):
        export_c(contract, tmp_path, tmp_path / "fw")
    export_c(contract, tmp_path, tmp_path / "fw", warmup_payload(tmp_path))
    header = (tmp_path / "fw" / "stepwise_model.h").read_text()
    assert "#define SW_MODEL_WINDOW_HEAD 1" in header and f"#define SW_MODEL_WARMUP_STEPS {T - 1}" in header
    ring = next(s for s in contract.states if s.kind == "ring")
    assert f'"{ring.name}", "{ring.input}", "{ring.output}", "{ring.layer}", "ring"' in header
    snap = Engine.load(tmp_path).snapshot()
    lane1 = np.concatenate([snap.states[s.name][1].ravel() for s in contract.states])
    body = header.split("static const float sw_model_warmup_states")[1].split("};")[0]
    rows = re.findall(r"\{([^{}]*)\}", body)
    assert len(rows) == T
    values = np.array([float(v.strip().rstrip("f")) for v in rows[1].split(",") if v.strip()])
    assert values.shape == lane1.shape and np.abs(values - lane1).max() <= 1e-6


def test_serve_streams_a_window_head_and_can_leave_warmup_out(tmp_path):
    from tests.runtime.test_serve import Port, Serve

    keras.utils.set_random_seed(6)
    model = HEADS["flatten"]()
    _artifacts(model, tmp_path)
    stream = _data(m=2).reshape(-1, F)
    lines = [(",".join(f"{v:.9g}" for v in row) + "\n").encode() for row in stream]
    sent = np.array([[float(v) for v in line.split(b",")] for line in lines], np.float32)
    ref = _keras_windows(model, sent)
    for flag, first in (("--warmup", 0), ("--no-warmup", T - 1)):
        port = Port(tmp_path / f"tty{flag}")
        d = Serve(tmp_path, port.path, tmp_path / f"state{flag}", flag)
        port.send(b"\n")  # the first line after opening is discarded
        for line in lines:
            port.send(line)
        d.wait_records(len(lines) - first)
        time.sleep(0.2)
        assert d.stop() == 0
        assert [r.get("warmup", False) for r in d.records] == [True] * (T - 1 - first) + [False] * (len(lines) - T + 1)
        assert np.abs(np.array([r["y"] for r in d.records]) - ref[first:]).max() <= 1e-5
        port.unplug()
