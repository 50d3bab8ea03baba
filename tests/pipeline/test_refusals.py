"""Models that cannot stream are refused by name, with the reason and the fix."""
from __future__ import annotations

import numpy as np
import pytest

import keras  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from pipeline.stepmodel import StepModel  # noqa: E402
from stepwise_cli.main import cli  # noqa: E402
from runtime.errors import UnstreamableModelError  # noqa: E402

L = keras.layers


def _seq(*layers):
    return keras.Sequential([keras.Input((7, 3)), *layers])


def _free(*layers):
    return keras.Sequential([keras.Input((None, 3)), *layers])


def _attention():
    inp = keras.Input((7, 3))
    x = L.LSTM(4, return_sequences=True)(inp)
    x = L.MultiHeadAttention(num_heads=1, key_dim=4, name="mha")(x, x)
    return keras.Model(inp, L.Dense(1)(L.LSTM(2)(x)))


def _branching():
    inp = keras.Input((7, 3))
    a = L.LSTM(4, return_sequences=True)(inp)
    b = L.GRU(4, return_sequences=True)(inp)
    return keras.Model(inp, L.Dense(1)(L.LSTM(2)(L.Add(name="merge")([a, b]))))


CASES = {
    "reshape_across_time": (lambda: _seq(L.LSTM(4, return_sequences=True), L.Reshape((14, 2), name="rs"), L.Dense(1)),
                            ["'rs' (Reshape)", "time axis", "[time * units]"]),
    "pool_part_of_window": (lambda: _seq(L.LSTM(4, return_sequences=True), L.MaxPooling1D(2, name="mp"), L.Flatten(),
                                         L.Dense(1)),
                            ["'mp' (MaxPooling1D)", "pool_size=2", "window of 7 steps", "pool_size equal to the window"]),
    "second_window_head": (lambda: _seq(L.LSTM(4, return_sequences=True), L.GlobalAveragePooling1D(keepdims=True),
                                        L.GlobalMaxPooling1D(name="again"), L.Dense(1)),
                           ["'again' (GlobalMaxPooling1D)", "already has a window head"]),
    "two_valid_convs": (lambda: _seq(L.Conv1D(4, 2), L.Conv1D(4, 2, name="c2"), L.LSTM(2), L.Dense(1)),
                        ["'c2' (Conv1D)", "second valid convolution", "padding='causal'"]),
    "bidirectional": (lambda: _seq(L.Bidirectional(L.LSTM(4), name="bi"), L.Dense(1)),
                      ["'bi' (Bidirectional)", "unidirectional"]),
    "go_backwards": (lambda: _seq(L.LSTM(4, go_backwards=True, name="back"), L.Dense(1)),
                     ["'back' (LSTM)", "go_backwards"]),
    "same_conv": (lambda: _seq(L.Conv1D(4, 3, padding="same", name="conv"), L.LSTM(2), L.Dense(1)),
                  ["'conv' (Conv1D)", "padding='same'", "padding='causal'"]),
    "global_pool_free_time": (lambda: _free(L.LSTM(4, return_sequences=True), L.GlobalAveragePooling1D(name="gap"),
                                            L.Dense(1)), ["'gap' (GlobalAveragePooling1D)", "whole window", "fixed"]),
    "attention": (_attention, ["'mha' (MultiHeadAttention)"]),
    "per_step_prelu": (lambda: _seq(L.SimpleRNN(4, return_sequences=True), L.PReLU(name="pr", alpha_initializer="random_uniform"),
                                    L.LSTM(2), L.Dense(1)),
                       ["'pr' (PReLU)", "shared_axes=[1]"]),
    "branching": (_branching, ["single path"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_unstreamable_model_is_refused_with_reason_and_fix(case):
    build, expected = CASES[case]
    keras.utils.set_random_seed(0)
    with pytest.raises(UnstreamableModelError) as e:
        StepModel.from_keras(build())
    for text in expected:
        assert text in str(e.value)


def test_convert_command_refuses_bidirectional_cleanly_and_writes_nothing(tmp_path):
    keras.utils.set_random_seed(0)
    model = _seq(L.LSTM(8, return_sequences=True), L.LeakyReLU(0.1), L.Bidirectional(L.LSTM(4), name="bi"),
                 L.Dense(1, activation="sigmoid"))
    model.save(tmp_path / "m.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", X=rng.normal(size=(40, 7, 3)).astype(np.float32), y=rng.integers(0, 2, 40))
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["convert", str(tmp_path / "m.keras"), "--data", str(tmp_path / "d.npz"),
                                   "--out", str(out)])
    assert res.exit_code == UnstreamableModelError.exit_code
    assert "layer 'bi' (Bidirectional) cannot stream" in res.output
    assert "Traceback" not in res.output and res.exception.__class__ is SystemExit
    assert not out.exists() or not any(out.iterdir())
