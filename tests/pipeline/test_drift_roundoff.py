"""The float32 drift bar knows the rounding noise a model amplifies over a long stream:
a step model within a few times the distance of float32 Keras from float64 Keras is not a
conversion error; one farther than that is."""
from __future__ import annotations

import keras
import numpy as np

from pipeline.config import load_config
from pipeline.stepmodel import keras_sequence_outputs
from pipeline.verify import judge, roundoff_sensitivity

CFG = load_config().verify  # float_max_abs 1e-5: drift bar 1e-4 at least, roundoff factor 4


def _float32(stream_offset: float, roundoff: float) -> dict:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 20)
    ref = np.where(y[:, None, None] == 1, 0.9, 0.1).repeat(5, axis=1).astype(np.float32)
    stream = (rng.integers(1, 8, (1, 500, 1)) / 8).astype(np.float32)  # + 2^-11 stays exact
    return judge("float32", "sigmoid", ref, ref.copy(), stream, stream + stream_offset, y, CFG,
                 drift_roundoff=roundoff)


def test_drift_beyond_the_plain_bar_fails_without_roundoff_and_passes_within_four_times_it():
    off = 2.0 ** -11  # 0.000488281
    failed = _float32(off, 0.0)
    assert failed["status"] == "fail"
    assert failed["failed"] == ["float32 drift parity: drift_max_abs=0.000488281, bar drift_max_abs <= 0.0001"]
    assert _float32(off, 2e-4)["status"] == "pass"  # bar 8e-4 > 4.9e-4
    assert _float32(off, 1e-4)["failed"] == [
        "float32 drift parity: drift_max_abs=0.000488281, bar drift_max_abs <= 0.0004"]
    assert _float32(off, 2e-4)["drift_roundoff"] == 2e-4


def _rnn(scale: float) -> keras.Model:
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.SimpleRNN(16),
                              keras.layers.Dense(1, activation="sigmoid")])
    kernel, recurrent, bias = model.layers[0].get_weights()
    model.layers[0].set_weights([kernel, recurrent * scale, bias])
    return model


def test_roundoff_sensitivity_is_larger_for_a_model_that_amplifies_rounding():
    """Float32 against float64 Keras on a 2,000-step stream: a contractive SimpleRNN stays
    within float32 rounding, one with its recurrent weights scaled up amplifies it."""
    stream = np.random.default_rng(1).normal(size=(1, 2000, 3)).astype(np.float32)
    figures = {}
    for scale in (0.3, 3.0):
        model = _rnn(scale)
        figures[scale] = roundoff_sensitivity(model, stream, keras_sequence_outputs(model, stream))
    assert 0.0 < figures[0.3] < 1e-6
    assert figures[3.0] > 10 * figures[0.3]
