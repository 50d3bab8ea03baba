"""The block line writer writes exactly what record_line writes, for any output value."""
from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.contract import OutputSpec
from runtime.records import record_line
from runtime.stream_block import BlockResult, LineWriter, y_texts


class Pred:
    def __init__(self, y, step, label):
        self.y, self.step, self.label = y, step, label


EDGES = [0.0, -0.0, 1.0, 0.5, 1e-5, 1.2345678e-5, 0.1, 1 / 3, 123456.79, 99999999.0,
         -2.0, 3.4e-38, 1e-45, 0.99999994, 7.0, 16777216.0]


@pytest.mark.parametrize("units,kind", [(1, "sigmoid"), (4, "softmax")])
def test_lines_equal_record_line(units, kind):
    rng = np.random.default_rng(units)
    y = np.concatenate([np.array(EDGES, np.float32).repeat(units).reshape(-1, units),
                        (rng.normal(size=(300, units)) * 10.0 ** rng.integers(-6, 8, (300, 1)))
                        .astype(np.float32)])
    labels = tuple(f"c{k}" for k in range(max(2, units)))
    spec = OutputSpec("y", kind, units, labels)
    n = len(y)
    streams = [f"s{k % 5}" for k in range(n)]
    res = BlockResult(streams, list(range(n)), np.arange(n) % 3, np.arange(n) + 1, y,
                      np.zeros(n, bool))
    got_streams, lines = LineWriter(spec).lines(res, 1700000000.25)
    assert got_streams == streams
    for k, line in enumerate(lines):
        want = record_line(k, k % 3, Pred(y[k], k + 1, spec.label_of(y[k])))
        assert line == f'{{"stream": "{streams[k]}", ' + want[1:-2] + ', "t": 1700000000.25}'
        json.loads(line)


def test_rejected_rows_are_left_out_and_non_finite_or_huge_values_take_record_lines_path():
    spec = OutputSpec("y", "sigmoid", 1, ("no", "yes"))
    y = np.array([[0.25], [np.nan], [3e9], [0.75]], np.float32)
    res = BlockResult(["a", "b", "c", "d"], [0, -1, 0, 4], np.zeros(4, int), np.ones(4, int), y,
                      np.array([False, True, False, False]))
    streams, lines = LineWriter(spec).lines(res, 5.0)
    assert streams == ["a", "c", "d"]
    assert [json.loads(x)["y"] for x in lines] == [[0.25], [3e9], [0.75]]
    assert lines[1] == '{"stream": "c", ' + record_line(0, 0, Pred(y[2], 1, "yes"))[1:-2] + ', "t": 5.0}'
    assert y_texts(np.array([[1.0, 0.5]], np.float32)) == ["1.0, 0.5"]
