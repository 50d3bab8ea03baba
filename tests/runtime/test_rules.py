"""The rules with one home each: the class decision, normalisation, affine (de)quantization."""
from __future__ import annotations

import numpy as np
import pytest

from runtime.affine import AffineCast, dequantize, quantize
from runtime.contract import InputSpec, OutputSpec, classes, load_contract
from runtime.engine import Engine
from runtime.errors import ContractError


@pytest.mark.parametrize("kind, units", [("sigmoid", 1), ("softmax", 3), ("linear", 2), ("sigmoid", 4)])
def test_classes_and_class_of_are_one_rule(kind, units):
    rng = np.random.default_rng(units)
    y = rng.random((200, units)).astype(np.float32)
    y[:20] = 0.5  # the sigmoid boundary and all-equal outputs (the first wins)
    spec = OutputSpec("y", kind, units, tuple(str(i) for i in range(max(2, units))))
    vectorised = classes(y, kind)
    assert vectorised.dtype == np.int64 and vectorised.shape == (200,)
    assert vectorised.tolist() == [spec.class_of(row) for row in y]
    assert [spec.label_of(row) for row in y] == [spec.labels[c] for c in vectorised]


def test_class_decision_values():
    assert classes(np.array([[0.49], [0.5], [0.51]]), "sigmoid").tolist() == [0, 1, 1]
    assert classes(np.array([[0.2, 0.7, 0.1], [0.4, 0.4, 0.2]]), "softmax").tolist() == [1, 0]
    assert classes(np.zeros((2, 5, 1)), "linear").tolist() == [[0] * 5] * 2  # one unit, no threshold


def test_normalise_is_the_engines_arithmetic(tiny_artifacts):
    contract = load_contract(tiny_artifacts)
    engine = Engine.load(tiny_artifacts, variant="float32", reset="never")
    rng = np.random.default_rng(0)
    for x in rng.normal(3.0, 5.0, (50, contract.input.features)).astype(np.float32):
        engine.step(x)
        assert np.array_equal(engine._xbuf[0], contract.input.normalise(x))  # bit for bit


def test_normalisation_refuses_a_bad_manifest():
    with pytest.raises(ContractError, match="positive stds"):
        InputSpec("x", 2, ("a", "b"), (0.0, 0.0), (1.0, 0.0)).normalise([1.0, 2.0])
    with pytest.raises(ContractError, match="2 means"):
        InputSpec("x", 2, ("a", "b"), (0.0,), (1.0, 1.0)).normalisation()


def test_quantize_rounds_half_to_even_and_saturates():
    q = quantize([0.25, 0.75, -100.0, 100.0, 0.0], 0.5, 3, np.int8)
    assert q.dtype == np.int8 and q.tolist() == [4, 4, -128, 127, 3]  # 3.5 -> 4, 4.5 -> 4
    assert dequantize(q, 0.5, 3).tolist() == [0.5, 0.5, -65.5, 62.0, 0.0]
    assert quantize([1.7], 0.0, 0, np.float32).tolist() == [np.float32(1.7)]  # float: as is
    assert dequantize(np.array([5], np.int8), 0.0, 0).tolist() == [5.0]  # scale 0: not quantized


class _T:
    def __init__(self, dtype, scale, zero_point):
        self.dtype, self.scale, self.zero_point = np.dtype(dtype), scale, zero_point
        self.quantized = self.dtype.kind in "iu" and scale > 0


def test_affine_cast_applies_the_same_rule():
    real = np.linspace(-3, 3, 97, dtype=np.float32)
    cast = AffineCast.between(_T(np.float32, 0.0, 0), _T(np.int8, 0.025, -7), real.shape)
    assert np.array_equal(cast(real), quantize(real, 0.025, -7, np.int8))
    back = AffineCast.between(_T(np.int8, 0.025, -7), _T(np.float32, 0.0, 0), real.shape)
    stored = quantize(real, 0.025, -7, np.int8)
    assert np.allclose(back(stored), dequantize(stored, 0.025, -7), rtol=0, atol=1e-6)
