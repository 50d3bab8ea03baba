"""Window-head rules on the device side: the policy, the lanes' zero-sample credit, the manifest."""
from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.contract import ModelContract, WindowSpec
from runtime.errors import ConfigError, ContractError
from runtime.reset import parse_reset, sliding_lanes
from runtime.window import check_policy, lane_offsets

HEAD = WindowSpec(length=7, reset="sliding:7", mode="window_head", warmup=6)


@pytest.mark.parametrize("policy", ["never", "window:7", "sliding:6", "sliding:8", "gap:1"])
def test_window_head_needs_sliding_over_its_window(policy):
    with pytest.raises(ConfigError, match="fixed window of 7 steps.*only under sliding:7"):
        check_policy(HEAD, parse_reset(policy))
    check_policy(HEAD, parse_reset("sliding:7"))
    check_policy(WindowSpec(length=7, reset="sliding:7"), parse_reset(policy))  # a plain stream: any
    with pytest.raises(ConfigError, match="3 streams in one engine.*one --port"):
        check_policy(HEAD, parse_reset("sliding:7"), streams=3)


def test_each_lane_is_credited_the_zero_samples_that_complete_its_first_window():
    T = 7
    assert lane_offsets(T, 0).tolist() == [0, 6, 5, 4, 3, 2, 1]
    for phase in range(T + 2):  # lane j read after sample j - 1 has seen T samples, zeros included
        credit = lane_offsets(T, phase)
        for j in range(T):
            if j >= phase:
                assert credit[j] + j == T or j == 0
            else:  # restarted by the sliding schedule before sample j: no credit
                assert credit[j] == 0
    # the schedule restarts lane k before sample k: the lane read at sample t < T is t + 1
    assert [sliding_lanes(t, T)[1] for t in range(T)] == [1, 2, 3, 4, 5, 6, 0]


def _manifest(window: dict) -> dict:
    return {"schema_version": 1, "signature_key": "step",
            "input": {"name": "x", "features": 1, "feature_names": ["a"], "mean": [0.0], "std": [1.0]},
            "states": [{"name": "r", "input": "r", "output": "r_out", "shape": [7, 2], "layer": "flatten",
                        "kind": "ring", "warmup": 0}],
            "outputs": [{"name": "y", "kind": "linear", "units": 1, "labels": ["0"]}],
            "window": window, "default_variant": "float32",
            "variants": {"float32": {"file": "step_float32.tflite", "sha256": "0" * 64, "bytes": 100, "tensors": {}}}}


def test_manifest_window_mode_and_warmup_are_checked():
    c = ModelContract.from_dict(_manifest({"length": 7, "reset": "sliding:7", "mode": "window_head", "warmup": 6}))
    assert c.window == HEAD and c.states[0].kind == "ring"
    assert json.loads(c.to_json())["window"] == {"length": 7, "reset": "sliding:7", "mode": "window_head", "warmup": 6}
    old = ModelContract.from_dict(_manifest({"length": 7, "reset": "sliding:7"}))  # before window heads
    assert (old.window.mode, old.window.warmup, old.states[0].warmup) == ("stream", 0, 0)
    for bad, text in (({"mode": "future"}, "window.mode"), ({"warmup": -1}, "window.warmup"),
                      ({"mode": "window_head", "warmup": 3}, "warmup = length - 1"),
                      ({"mode": "window_head", "length": None, "warmup": 6}, "needs a length")):
        with pytest.raises(ContractError, match=text):
            ModelContract.from_dict(_manifest({"length": 7, "reset": "sliding:7", **bad}))
    bad_state = _manifest({"length": 7, "reset": "sliding:7"})
    bad_state["states"][0]["warmup"] = -2
    with pytest.raises(ContractError, match=r"states\[0\]\.warmup"):
        ModelContract.from_dict(bad_state)
    assert np.array_equal(lane_offsets(1, 0), [0])
