"""The firmware simulator over real pseudo-terminals, read back through the real link."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from firmware_bridge import cobs
from firmware_bridge.link import Link
from firmware_bridge.ports import PtyPort
from firmware_bridge.reconnect import Backoff
from firmware_bridge.simulate import Faults, FirmwareSimulator
from runtime.datafile import Sequences, read_sequences
from runtime.events import Reset, Sample
from stepwise_cli.main import cli
from stepwise_cli.simulate import simulate_cmd

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("a", "b", "c")
FAST = Backoff(0.02, 0.1)


@pytest.fixture
def sequences() -> Sequences:
    rng = np.random.default_rng(7)
    X = rng.normal(scale=3.0, size=(4, 6, 3)).astype(np.float32)
    return Sequences(X=tuple(X), y=np.array([0, 1, 0, 1]), feature_names=NAMES, source="test")


def drain(link: Link, idle: float = 0.3) -> list:
    """Every event until the link has been quiet for ``idle`` seconds."""
    events = []
    while (event := link.get(idle)) is not None:
        events.append(event)
    return events


def simulate(tmp_path, sequences, protocol, link_names=NAMES, **options):
    """Run a simulator on a pty and a link on its symlink; returns (report, events, link)."""
    path = tmp_path / "ttySIM"
    port = PtyPort(path, settle=0.05)
    try:
        with Link.open(str(path), protocol, feature_names=link_names, backoff=FAST, queue_size=4096) as link:
            with FirmwareSimulator(port, sequences, protocol=protocol, reader_timeout=5, **options) as simulator:
                report = simulator.run()
            if protocol == "cobs":  # one last frame, so that gaps at the very end are seen too
                port.write(cobs.encode_frame(cobs.RESET, simulator.next_seq))
            events = drain(link)
    finally:
        port.close()
    assert not path.exists()
    if protocol == "cobs":
        assert isinstance(events[-1], Reset) and events[-1].seq == simulator.next_seq
        events = events[:-1]
    return report, events, link


def stream_with_resets(sequences) -> list:
    out = []
    for i, x in enumerate(sequences.X):
        if i:
            out.append("reset")
        out.extend(row.tolist() for row in x)
    return out


def as_stream(events) -> list:
    return ["reset" if isinstance(e, Reset) else e.values.tolist() for e in events]


@pytest.mark.parametrize("protocol", ["text", "cobs"])
def test_clean_stream_arrives_exactly(tmp_path, sequences, protocol):
    report, events, link = simulate(tmp_path, sequences, protocol)
    assert as_stream(events) == stream_with_resets(sequences)
    assert report.samples == report.sent == 24 and report.resets == 3
    assert link.counters["samples"] == 24 and link.counters.rejected == {}
    assert link.counters["dropped"] == 0
    if protocol == "cobs":
        assert [e.seq for e in events] == list(range(1, 28))  # HELLO is seq 0


def test_header_reorders_columns_for_the_receiver(tmp_path, sequences):
    report, events, link = simulate(tmp_path, sequences, "text", link_names=("c", "a", "b"),
                                    header=True, reset_between=False, repeat=2)
    expected = np.concatenate(sequences.X * 2)[:, [2, 0, 1]]
    assert np.array([e.values for e in events]).tobytes() == expected.tobytes()
    assert report.sent == 48 and report.resets == 0


def is_subsequence(sub, full) -> bool:
    it = iter(full)
    return all(any(x == y for y in it) for x in sub)


@pytest.mark.parametrize("protocol", ["text", "cobs"])
def test_faults_are_counted_the_same_on_both_sides(tmp_path, sequences, protocol):
    faults = Faults(drop=0.15, corrupt=0.15, garbage=0.3, seed=3)
    report, events, link = simulate(tmp_path, sequences, protocol, faults=faults, repeat=3)
    assert report.samples == 72
    assert report.dropped > 0 and report.corrupted > 0 and report.garbage > 0
    assert report.sent + report.dropped + report.corrupted == report.samples
    samples = [e.values.tolist() for e in events if isinstance(e, Sample)]
    assert len(samples) == report.sent == link.counters["samples"]
    assert is_subsequence(samples, [row.tolist() for _ in range(3) for x in sequences.X for row in x])
    rejected = link.counters.rejected
    assert sum(rejected.values()) == report.corrupted + report.garbage
    for reason, n in report.corrupted_by_reason.items():
        assert rejected.get(reason, 0) >= n
    if protocol == "cobs":
        assert link.counters["dropped"] == report.dropped + report.corrupted


def test_fault_injection_is_reproducible(tmp_path, sequences):
    faults = Faults(drop=0.2, corrupt=0.2, garbage=0.2, seed=11)
    first, _, _ = simulate(tmp_path, sequences, "text", faults=faults)
    second, _, _ = simulate(tmp_path, sequences, "text", faults=faults)
    assert (first.sent, first.dropped, first.corrupted, first.garbage, first.corrupted_by_reason) == (
        second.sent, second.dropped, second.corrupted, second.garbage, second.corrupted_by_reason)


@pytest.mark.parametrize("protocol", ["text", "cobs"])
def test_unplugging_loses_nothing_and_the_link_reconnects(tmp_path, sequences, protocol):
    faults = Faults(disconnect_after=10, disconnect_wait=0.05)
    report, events, link = simulate(tmp_path, sequences, protocol, faults=faults)
    assert report.disconnects == 2 and report.announcements == 3
    assert as_stream(events) == stream_with_resets(sequences)
    assert link.reconnects == 2 and link.counters["disconnects"] == 2
    if protocol == "cobs":
        assert link.counters["hellos"] == 3 and link.counters["dropped"] == 0


@pytest.mark.parametrize("protocol", ["text", "cobs"])
def test_predictions_written_back_are_read_by_the_simulator(tmp_path, sequences, protocol):
    path = tmp_path / "ttySIM"
    port = PtyPort(path, settle=0.05)
    with Link.open(str(path), protocol, feature_names=NAMES) as link, \
            FirmwareSimulator(port, sequences, protocol=protocol, rate=200, reader_timeout=5) as simulator:
        worker = threading.Thread(target=simulator.run)
        worker.start()
        answered = 0
        while answered < 24 and (event := link.get(5)) is not None:
            if isinstance(event, Sample):
                assert link.write_prediction([0.5], 0, "0", seq=event.seq)
                answered += 1
        worker.join(10)
        assert simulator.wait_replies(quiet=0.3, timeout=5) == 24
    port.close()


def test_simulator_waits_for_a_reader(tmp_path, sequences):
    port = PtyPort(tmp_path / "ttySIM")
    try:
        with pytest.raises(Exception, match="nobody opened"):
            FirmwareSimulator(port, sequences, reader_timeout=0.05).run()
    finally:
        port.close()


# ----------------------------------------------------------------------------- command line


def write_csv(path: Path, sequences: Sequences) -> Path:
    rows = ["sequence,a,b,c,label"]
    for i, x in enumerate(sequences.X):
        rows += [f"{i}," + ",".join(str(v) for v in row) + f",{int(sequences.y[i])}" for row in x]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_command_streams_a_csv_through_a_pty(tmp_path, sequences):
    data = write_csv(tmp_path / "data.csv", sequences)
    path = tmp_path / "ttyCLI"
    with Link.open(str(path), "cobs", feature_names=NAMES, require_port=False, backoff=FAST) as link:
        result = CliRunner().invoke(simulate_cmd, [
            "--pty", str(path), "--input", str(data), "--protocol", "cobs", "--rate", "0",
            "--garbage", "0.5", "--seed", "1"])
        events = drain(link)
    assert result.exit_code == 0, result.output
    assert as_stream(events) == stream_with_resets(read_sequences(data))
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("24 samples") and "sent 24" in summary
    garbage = int(summary.split("garbage ")[1].split(",")[0])
    assert garbage > 0 and sum(link.counters.rejected.values()) == garbage


def test_command_in_a_subprocess(tmp_path, sequences):
    data = tmp_path / "data.npz"
    np.savez(data, X=np.stack(sequences.X), y=sequences.y)
    path = tmp_path / "ttySUB"
    with Link.open(str(path), "text", feature_names=("f0", "f1", "f2"), require_port=False, backoff=FAST) as link:
        proc = subprocess.run(
            [sys.executable, "-m", "stepwise_cli", "simulate", "--pty", str(path),
             "--input", str(data), "--no-reset-between", "--header"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        events = drain(link)
    assert proc.returncode == 0, proc.stderr
    assert "sent 24" in proc.stdout
    assert np.array([e.values for e in events]).tobytes() == np.concatenate(sequences.X).tobytes()


@pytest.mark.parametrize("args, message", [
    (["--input", "{data}"], "exactly one of --port URL or --pty LINK"),
    (["--port", "loop://", "--pty", "{tmp}/x", "--input", "{data}"], "exactly one"),
    (["--port", "loop://", "--input", "{data}", "--drop", "1.5"], "--drop"),
    (["--port", "loop://", "--input", "{data}", "--protocol", "xml"], "--protocol"),
])
def test_command_rejects_bad_arguments(tmp_path, sequences, args, message):
    data = write_csv(tmp_path / "data.csv", sequences)
    args = [a.format(data=data, tmp=tmp_path) for a in args]
    result = CliRunner().invoke(simulate_cmd, args)
    assert result.exit_code == 2 and message in result.output


def test_command_refuses_to_replace_a_regular_file(tmp_path, sequences):
    data = write_csv(tmp_path / "data.csv", sequences)
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me")
    result = CliRunner().invoke(cli, ["simulate", "--pty", str(precious), "--input", str(data)])
    assert result.exit_code == 7 and "not a symlink" in result.output
    assert precious.read_text() == "keep me"


def test_sigterm_unplugs_cleanly_and_reports(tmp_path, sequences):
    data = write_csv(tmp_path / "data.csv", sequences)
    path = tmp_path / "ttyTERM"
    with Link.open(str(path), "text", feature_names=NAMES, require_port=False, backoff=FAST) as link:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stepwise_cli", "simulate", "--pty", str(path),
             "--input", str(data), "--repeat", "0", "--rate", "200"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            first = [link.get(10) for _ in range(30)]  # forever: still sending after 30 samples
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=20)
        finally:
            proc.kill()
        assert link.wait_connected(5, connected=False)
    assert all(e is not None for e in first)
    assert proc.returncode == 0, err
    assert "interrupted" in err and "sent" in out
    assert not os.path.lexists(path)
