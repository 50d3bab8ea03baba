"""The decision bars on hand-made outputs: ambiguous steps, flips on decisive steps, the
accuracy delta, and a reference that gives nothing to judge."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.decisions import decision_figures, margins
from pipeline.verify import judge

CFG = load_config().verify  # decisive margin 0.02, int8 decisive agreement >= 99.5 %


def _sigmoid_windows(m: int = 50, T: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Confident Keras outputs ``[m, T, 1]`` (0.1 or 0.9) and labels that match the last step."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, m)
    ref = np.where(rng.random((m, T, 1)) < 0.5, 0.1, 0.9).astype(np.float32)
    ref[:, -1, 0] = np.where(y == 1, 0.9, 0.1)
    return ref, y


def _judge(variant, ref, got, y, kind="sigmoid", cfg=CFG):
    stream = ref.reshape(1, -1, ref.shape[-1])
    return judge(variant, kind, ref, got, stream, got.reshape(stream.shape), y, cfg)


def test_margins_are_distance_from_half_for_sigmoid_and_top2_gap_for_softmax():
    np.testing.assert_allclose(margins(np.array([[0.5], [0.53], [0.1]]), "sigmoid"), [0.0, 0.03, 0.4])
    np.testing.assert_allclose(margins(np.array([[0.5, 0.3, 0.2], [0.34, 0.33, 0.33]]), "softmax"),
                               [0.2, 0.01], atol=1e-12)


def test_identical_outputs_pass_every_bar():
    ref, y = _sigmoid_windows()
    f = _judge("int8", ref, ref.copy(), y)
    assert f["status"] == "pass" and f["failed"] == []
    assert f["decisive_agreement"] == 1.0 and f["ambiguous_share"] == 0.0 and f["accuracy_delta"] == 0.0


def test_all_ambiguous_reference_is_not_judgeable_even_with_tiny_errors():
    rng = np.random.default_rng(1)
    ref = (0.5 + rng.uniform(-0.01, 0.01, (40, 5, 1))).astype(np.float32)
    got = ref + 0.003  # max |dy| 0.003: every distance bar holds, classes flip near 0.5
    y = (ref[:, -1, 0] >= 0.5).astype(int)
    f = _judge("int8", ref, got, y)
    assert f["agreement"] < 1.0 and np.isnan(f["decisive_agreement"]) and f["ambiguous_share"] == 1.0
    assert f["status"] == "not judgeable" and not f["judgeable"]
    assert f["failed"] == [("int8 not judgeable: 0 of 200 steps are decisive (Keras margin >= 0.02), "
                            "bar: a share >= 0.05")]


def test_one_flip_on_a_decisive_step_fails_decisive_agreement_alone():
    ref, y = _sigmoid_windows(m=25, T=4)  # 100 steps, all decisive
    ref[0, 0, 0], got = 0.53, ref.copy()
    got[0, 0, 0] = 0.47  # |dy| 0.06 (within the max bar), crosses 0.5 where Keras had margin 0.03
    f = _judge("int8", ref, got, y)
    assert f["decisive_steps"] == 100 and f["decisive_agreement"] == pytest.approx(0.99)
    assert f["status"] == "fail" and f["max_abs"] == pytest.approx(0.06, abs=1e-6)
    assert [line.split(":")[0] for line in f["failed"]] == ["int8 decisive agreement",
                                                           "int8 drift decisive agreement"]
    more_ref = np.concatenate([ref] + [_sigmoid_windows(25, 4, seed)[0] for seed in range(1, 10)])
    more_got = np.concatenate([got, more_ref[25:]])  # the same one flip among 1000 steps
    y = (more_ref[:, -1, 0] > 0.5).astype(int)
    assert _judge("int8", more_ref, more_got, y)["status"] == "pass"


def test_flips_on_ambiguous_steps_do_not_count_against_decisive_agreement():
    ref, y = _sigmoid_windows()
    ref[:10, 0, 0], got = 0.51, ref.copy()
    got[:10, 0, 0] = 0.49  # ten flips, all where Keras itself was within 0.02 of 0.5
    f = _judge("int8", ref, got, y)
    assert f["agreement"] == pytest.approx(190 / 200) and f["decisive_agreement"] == 1.0
    assert f["ambiguous_share"] == pytest.approx(10 / 200) and f["status"] == "pass"


def test_accuracy_drop_beyond_half_a_point_fails_the_accuracy_bar():
    ref, y = _sigmoid_windows(m=400, T=2)
    ref[:, 0, 0] = 0.9
    ref[:3, -1, 0] = np.where(y[:3] == 1, 0.51, 0.49)  # right, but ambiguous
    got = ref.copy()
    got[:3, -1, 0] = 1.0 - got[:3, -1, 0]  # three last-step flips: 0.75 points less accurate
    f = _judge("int8", ref, got, y)
    assert f["accuracy_delta"] == pytest.approx(-3 / 400) and f["decisive_agreement"] == 1.0
    assert f["status"] == "fail" and [line.split(":")[0] for line in f["failed"]] == ["int8 accuracy drop"]
    got[2, -1, 0] = ref[2, -1, 0]  # two flips: 0.5 points, at the bar
    assert _judge("int8", ref, got, y)["status"] == "pass"


def test_softmax_decisive_agreement_uses_the_top2_gap():
    ref = np.tile(np.array([0.7, 0.2, 0.1], np.float32), (20, 3, 1))
    ref[0, 0] = [0.41, 0.40, 0.19]  # gap 0.01: ambiguous
    got = ref.copy()
    got[0, 0] = [0.40, 0.41, 0.19]
    f = decision_figures(ref, got, "softmax", 0.02)
    assert f["agreement"] == pytest.approx(59 / 60) and f["decisive_agreement"] == 1.0
    assert f["decisive_steps"] == 59
