"""The build report's figures: the data behind each one, then the files on disk."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.figures import ERROR_FLOOR, error_histograms, sequence_panels, training_panels
from runtime.contract import decision_threshold


def _outputs(m=30, T=7, units=1, seed=0):
    rng = np.random.default_rng(seed)
    ref = rng.uniform(0, 1, size=(m, T, units)).astype(np.float32)
    outputs = {"float32": ref.copy(),  # exact: every step has |dy| = 0
               "int16x8": ref + rng.normal(0, 1e-4, ref.shape).astype(np.float32),
               "int8": ref + rng.normal(0, 1e-2, ref.shape).astype(np.float32)}
    outputs["float32"][3, 2, 0] += 1e-6
    labels = rng.integers(0, 2, size=m)
    return ref, outputs, labels


def test_error_histogram_counts_every_step_of_every_sequence_for_every_variant():
    ref, outputs, _ = _outputs(m=40, T=9)
    hists = error_histograms(ref, outputs)
    assert [h.variant for h in hists] == ["float32", "int16x8", "int8"]
    for h in hists:
        assert h.steps == 40 * 9 and int(h.counts.sum()) == 40 * 9
        assert len(h.counts) == len(h.edges) - 1
    f32 = hists[0]
    assert f32.exact == 40 * 9 - 1 and f32.counts[0] == 40 * 9 - 1  # zeros land in the floor bin
    assert f32.max == pytest.approx(1e-6, rel=0.1)
    int8 = hists[2]
    assert int8.max == pytest.approx(float(np.abs(outputs["int8"] - ref).max()), rel=1e-6)
    assert int8.p99 > hists[1].p99 > ERROR_FLOOR


def test_error_histogram_takes_the_largest_output_per_step_and_refuses_a_shape_mismatch():
    ref = np.zeros((2, 3, 4), np.float32)
    got = ref.copy()
    got[0, 0] = [0.1, 0.5, 0.2, 0.0]
    (h,) = error_histograms(ref, {"int8": got})
    assert h.steps == 6 and h.max == pytest.approx(0.5) and h.exact == 5
    with pytest.raises(ValueError, match="do not match"):
        error_histograms(ref, {"int8": got[:1]})


def test_sequence_panels_carry_the_true_label_the_threshold_and_the_difference_from_keras():
    ref, outputs, labels = _outputs()
    panels = sequence_panels(ref, outputs, labels, "sigmoid", ["rest", "gesture"], count=4)
    assert len(panels) == 4
    assert {p.label for p in panels} == {0, 1}  # one of each class at least
    worst = int(np.argmax(np.abs(outputs["int8"] - ref).max(axis=(1, 2))))
    assert worst in [p.index for p in panels]
    for p in panels:
        assert p.threshold == 0.5
        assert p.label == labels[p.index] and p.label_name == ["rest", "gesture"][p.label]
        assert p.unit_name == "P(gesture)"
        np.testing.assert_array_equal(p.steps, np.arange(1, 8))
        np.testing.assert_allclose(p.keras, ref[p.index, :, 0])
        np.testing.assert_allclose(p.diff["int8"], outputs["int8"][p.index, :, 0] - ref[p.index, :, 0], atol=1e-7)


def test_softmax_panels_show_the_true_class_and_no_fixed_threshold_beyond_two_classes():
    rng = np.random.default_rng(1)
    ref = rng.dirichlet(np.ones(3), size=(6, 5)).astype(np.float32)
    labels = np.array([2, 0, 1, 2, 1, 0])
    panels = sequence_panels(ref, {"int8": ref}, labels, "softmax", ["a", "b", "c"], count=3)
    assert [p.index for p in panels] == [0, 1, 2]
    assert [p.unit for p in panels] == [2, 0, 1] and panels[0].unit_name == "P(c)"
    assert all(p.threshold is None for p in panels)
    assert decision_threshold("softmax", 2) == 0.5 and decision_threshold("sigmoid", 1) == 0.5


def test_training_panels_put_the_fine_tuning_epochs_after_training():
    history = {"loss": [0.7, 0.5, 0.4], "val_loss": [0.72, 0.55, 0.45], "accuracy": [0.6, 0.8, 0.9],
               "val_accuracy": [0.58, 0.79, 0.88], "qat_task_loss": [0.41, 0.40], "qat_drift": [1e-3, 4e-4]}
    loss, acc, drift = training_panels(history)
    assert loss.ylabel == "cross-entropy (nats)" and acc.ylabel == "accuracy (%)"
    tuned = loss.curves[-1]
    assert tuned.name == "fine-tuning task loss"
    np.testing.assert_array_equal(tuned.epochs, [4, 5])
    np.testing.assert_allclose(acc.curves[0].values, [60, 80, 90])
    assert drift.log_y and drift.finetune_from == 3.5
    np.testing.assert_array_equal(drift.curves[0].epochs, [4, 5])
    assert acc.finetune_from is None and loss.finetune_from == 3.5
    assert [p.title for p in training_panels({"loss": [1.0]})] == ["loss"]
    assert training_panels({}) == []


def test_write_report_draws_every_figure_from_every_test_step(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from pipeline import report

    ref, outputs, labels = _outputs(m=12, T=5)
    drawn = {}
    real_plot_errors = report.plot_errors

    def plot_errors(path, hists):
        drawn["errors"] = hists
        real_plot_errors(path, hists)

    monkeypatch.setattr(report, "plot_errors", plot_errors)
    manifest = {"states": [{"name": "h", "shape": [1, 4]}],
                "input": {"features": 3, "feature_names": ["a", "b", "c"]},
                "outputs": [{"kind": "sigmoid", "units": 1, "labels": ["rest", "gesture"]}],
                "default_variant": "float32", "variants": {}}
    history = {"loss": [0.5, 0.4], "qat_task_loss": [0.39], "qat_drift": [1e-3]}
    path = report.write_report(tmp_path, manifest, {}, ref, outputs, labels, history)
    assert [int(h.counts.sum()) for h in drawn["errors"]] == [60, 60, 60]
    for name in ("sequences.png", "training.png", "quantization_error.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = path.read_text()
    assert "![training.png](training.png)" in text and "![sequences.png](sequences.png)" in text


def test_error_plot_file_is_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from pipeline.report import plot_errors

    ref, outputs, _ = _outputs()
    plot_errors(tmp_path / "e.png", error_histograms(ref, outputs))
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
