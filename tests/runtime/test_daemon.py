"""The daemon's loop with an injected sample source: no port, no wire format.

``Daemon.run(source)`` takes any object with ``get_many``, ``write_prediction`` and
``close`` (``runtime.events.SampleSource``); here a scripted in-memory one.
"""
from __future__ import annotations

import json
import signal

import numpy as np
import pytest

from runtime.contract import classes
from runtime.daemon import Daemon, ServeOptions
from runtime.engine import Engine
from runtime.events import Reset, Sample
from runtime.records import prediction_record
from runtime.replay import iter_replay
from runtime.store import describe_state_dir


class ScriptedSource:
    """Hands out ``batches`` one per ``get_many``; then asks the daemon to stop the way
    SIGTERM does (through its handler)."""

    def __init__(self, batches, daemon_ref: list):
        self.batches = list(batches)
        self.daemon_ref = daemon_ref
        self.replies: list[tuple] = []
        self.closed = False

    def get_many(self, limit, timeout=None):
        if self.batches:
            return self.batches.pop(0)[:limit]
        self.daemon_ref[0]._on_stop(signal.SIGTERM, None)
        return []

    def write_prediction(self, outputs, class_index, label, seq=None):
        self.replies.append((list(outputs), class_index, label, seq))
        return True

    def close(self):
        self.closed = True


@pytest.fixture
def sequences(tiny_artifacts):
    with np.load(tiny_artifacts / "test_data.npz", allow_pickle=False) as z:
        return [x.astype(np.float32) for x in z["X"][:3]]


def _events(sequences, first_seq=100):
    events, seq = [], first_seq
    for s, x in enumerate(sequences):
        if s:
            events.append(Reset(seq))
            seq += 1
        for row in x:
            events.append(Sample(row, seq))
            seq += 1
    return events, seq - 1


def test_run_serves_an_injected_source_and_checkpoints_its_frame_sequence(tiny_artifacts, tmp_path, sequences):
    events, last_seq = _events(sequences)
    out = tmp_path / "out.jsonl"
    opts = ServeOptions(artifacts=tiny_artifacts, port="scripted", protocol="cobs", state_dir=tmp_path / "state",
                        output=out, reset="never")
    ref: list = []
    daemon = Daemon(opts)
    ref.append(daemon)
    source = ScriptedSource([events[:5], [], events[5:]], ref)
    assert daemon.run(source) == 0 and source.closed

    engine = Engine.load(tiny_artifacts, reset="never")
    expected = [prediction_record(i, s, p) for i, s, p in iter_replay(engine, sequences)]
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [{k: r[k] for k in expected[0]} for r in got] == expected
    samples = [e for e in events if isinstance(e, Sample)]
    assert [r["frame"] for r in got] == [e.seq for e in samples]
    y = np.array([r[0] for r in source.replies])
    assert [r[1] for r in source.replies] == classes(y, engine.contract.output.kind).tolist()
    assert [r[3] for r in source.replies] == [e.seq for e in samples]
    checkpoint = describe_state_dir(tmp_path / "state")["checkpoint"]
    assert checkpoint["last_frame_seq"] == last_seq
    assert checkpoint["samples_seen"] == len(samples) and checkpoint["extra"]["seq"] == len(sequences) - 1


def test_the_stop_handler_only_records_the_signal(tiny_artifacts, tmp_path, caplog):
    daemon = Daemon(ServeOptions(artifacts=tiny_artifacts, port="scripted", state_dir=tmp_path / "state"))
    caplog.clear()
    with caplog.at_level("INFO"):
        daemon._on_stop(signal.SIGINT, None)
    assert daemon._stop == signal.SIGINT and caplog.records == []
    with caplog.at_level("INFO"):
        assert daemon.run(ScriptedSource([], [daemon])) == 0  # stops at once, and says why
    assert "SIGINT received" in caplog.text and "shutdown checkpoint written" in caplog.text
