"""``stepwise serve`` as a real process on a real pseudo-terminal, with real signals.

The test holds the pty's master side (the "device") and writes text sample lines; the
daemon opens the slave path (through a symlink, so the port can be unplugged and
re-plugged under the same name). Outputs are compared with the runtime's replay of the
same samples: same engine, same backend, so the JSON records must be identical.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import numpy as np
import pytest

from runtime.engine import Engine
from runtime.records import prediction_record
from runtime.replay import iter_replay

TIMEOUT = 30.0


class Port:
    """A pty pair whose slave is reachable as ``path`` (a symlink we control)."""

    def __init__(self, path: Path):
        self.path = path
        self.plug()

    def plug(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(slave)
        self._slave = slave
        if self.path.is_symlink():
            self.path.unlink()
        self.path.symlink_to(os.ttyname(slave))

    def unplug(self) -> None:
        os.close(self.master)
        os.close(self._slave)
        self.path.unlink()

    def send(self, data: bytes) -> None:
        os.write(self.master, data)


class Serve:
    """The daemon process; stdout JSON lines and stderr log lines are collected."""

    def __init__(self, artifacts: Path, port: Path, state: Path, *extra: str, **popen):
        cmd = [sys.executable, "-m", "stepwise_cli", "serve", "--artifacts", str(artifacts), "--port", str(port),
               "--state-dir", str(state), "--checkpoint-interval", "0.2", "--status-interval", "0.5", *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
        self.records: list[dict] = []
        self.log: list[str] = []
        self._threads = [threading.Thread(target=self._pump, args=(self.proc.stdout, self.records, json.loads)),
                         threading.Thread(target=self._pump, args=(self.proc.stderr, self.log, str))]
        for t in self._threads:
            t.start()
        self.wait_log("serving ")

    @staticmethod
    def _pump(stream, sink, parse) -> None:
        for line in stream:
            sink.append(parse(line))

    def wait_log(self, text: str, count: int = 1) -> None:
        self._wait(lambda: sum(text in line for line in self.log) >= count, f"log line {text!r}")

    def wait_records(self, n: int) -> None:
        self._wait(lambda: len(self.records) >= n, f"{n} predictions (have {len(self.records)})")

    def _wait(self, cond, what: str) -> None:
        end = time.monotonic() + TIMEOUT
        while not cond():
            if self.proc.poll() is not None and not cond():
                time.sleep(0.2)  # let the pumps drain
                if not cond():
                    raise AssertionError(f"daemon exited ({self.proc.returncode}) before {what}:\n"
                                         + "".join(self.log[-30:]))
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for {what}:\n" + "".join(self.log[-30:]))
            time.sleep(0.01)

    def stop(self, sig=signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        rc = self.proc.wait(TIMEOUT)
        for t in self._threads:
            t.join(TIMEOUT)
        return rc


def _records(records):
    return [{k: r[k] for k in ("i", "seq", "step", "y", "label")} for r in records]


def _lines(seqs) -> list[bytes]:
    out = []
    for s, x in enumerate(seqs):
        if s:
            out.append(b"#reset\n")
        out += [(",".join(f"{v:.9g}" for v in row) + "\n").encode() for row in x]
    return out


@pytest.fixture(scope="module")
def stream(tiny_artifacts):
    with np.load(tiny_artifacts / "test_data.npz", allow_pickle=False) as z:
        seqs = [x.astype(np.float32) for x in z["X"][:6]]
    # what the device sends is what it measured: parse back the text we will send
    seqs = [np.array([[float(v) for v in line.split(b",")] for line in _lines([x])], np.float32) for x in seqs]
    engine = Engine.load(tiny_artifacts)
    expected = [prediction_record(i, s, p) for i, s, p in iter_replay(engine, seqs)]
    return seqs, _lines(seqs), _records(expected)


def test_every_sample_one_prediction_equal_to_replay_and_garbage_rejected(tiny_artifacts, tmp_path, stream):
    seqs, lines, expected = stream
    port = Port(tmp_path / "ttyDEVICE")
    d = Serve(tiny_artifacts, port.path, tmp_path / "state")
    garbage = [b"1,2,nope\n", b"1,2\n", b"nan,1,2\n", b"1,inf,2\n", b"9" * 3000 + b"\n", b"\xff\xfe\x00\x01\n"]
    port.send(b"partial line from before the port was opened\n")
    for k, line in enumerate(lines):
        port.send(line)
        if k % 5 == 2:
            port.send(garbage[(k // 5) % len(garbage)])
    d.wait_records(len(expected))
    time.sleep(0.3)
    assert d.stop() == 0
    assert _records(d.records) == expected
    status = [line for line in d.log if "shutdown checkpoint written" in line][-1]
    assert f"predictions={len(expected)}" in status and "resets=5" in status
    for reason in ("not_numeric", "field_count", "non_finite", "line_too_long"):
        assert f"rejected_{reason}=" in status, status


def test_sigterm_then_restart_equals_an_uninterrupted_run(tiny_artifacts, tmp_path, stream):
    _, lines, expected = stream
    port, first, n_first = _first_half(tiny_artifacts, tmp_path, lines)
    assert first.stop(signal.SIGTERM) == 0
    second = _second_half(tiny_artifacts, tmp_path, lines, port, n_first, len(expected))
    assert second.stop(signal.SIGINT) == 0
    assert _records(first.records + second.records) == expected


def test_sigkill_then_restart_resumes_from_the_last_checkpoint(tiny_artifacts, tmp_path, stream):
    _, lines, expected = stream
    port, first, n_first = _first_half(tiny_artifacts, tmp_path, lines)
    _wait_checkpoint(tmp_path / "state", n_first)  # the timer wrote it (0.2 s interval)
    first.stop(signal.SIGKILL)
    second = _second_half(tiny_artifacts, tmp_path, lines, port, n_first, len(expected))
    assert second.stop() == 0
    assert _records(first.records + second.records) == expected


def test_unplug_and_replug_keeps_state_and_resumes(tiny_artifacts, tmp_path, stream):
    _, lines, expected = stream
    half = 20
    port = Port(tmp_path / "ttyDEVICE")
    d = Serve(tiny_artifacts, port.path, tmp_path / "state")
    port.send(b"\n")
    for line in lines[:half]:
        port.send(line)
    n_first = sum(1 for line in lines[:half] if not line.startswith(b"#"))
    d.wait_records(n_first)
    port.unplug()
    d.wait_log("lost")
    time.sleep(0.3)
    port.plug()
    d.wait_log("is back")
    port.send(b"\n")
    for line in lines[half:]:
        port.send(line)
    d.wait_records(len(expected))
    assert d.stop() == 0
    assert _records(d.records) == expected  # state stayed in RAM across the unplug


HALF = 20


def _first_half(artifacts, tmp_path, lines):
    """A daemon on a fresh port that has answered the first HALF lines."""
    port = Port(tmp_path / "ttyDEVICE")
    daemon = Serve(artifacts, port.path, tmp_path / "state")
    port.send(b"\n")
    for line in lines[:HALF]:
        port.send(line)
    n_first = sum(1 for line in lines[:HALF] if not line.startswith(b"#"))
    daemon.wait_records(n_first)
    return port, daemon, n_first


def _second_half(artifacts, tmp_path, lines, port, n_first, total):
    """A restarted daemon on the same state dir that restored n_first samples and answered the rest."""
    daemon = Serve(artifacts, port.path, tmp_path / "state")
    assert any(f"state restored: {n_first} samples seen" in line for line in daemon.log)
    port.send(b"\n")
    for line in lines[HALF:]:
        port.send(line)
    daemon.wait_records(total - n_first)
    return daemon


def _wait_checkpoint(state: Path, samples: int) -> None:
    from runtime.store import describe_state_dir

    end = time.monotonic() + TIMEOUT
    while time.monotonic() < end:
        ck = describe_state_dir(state).get("checkpoint") or {}
        if ck.get("samples_seen") == samples:
            return
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint with {samples} samples in {state}")


def test_systemd_ready_watchdog_and_status_over_a_real_notify_socket(tiny_artifacts, tmp_path, stream):
    import socket

    _, lines, _ = stream
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(TIMEOUT)
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "200000"}
    port = Port(tmp_path / "ttyDEVICE")
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        d = Serve(tiny_artifacts, port.path, tmp_path / "state")
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    messages = [sock.recv(4096).decode()]
    assert messages[0].startswith("READY=1\nSTATUS=") and f"MAINPID={d.proc.pid}" in messages[0]
    port.send(b"\n" + b"".join(lines[:7]))
    d.wait_records(7)
    deadline = time.monotonic() + TIMEOUT
    while not any("predictions=7" in m for m in messages) and time.monotonic() < deadline:
        messages.append(sock.recv(4096).decode())
    assert d.stop() == 0
    assert messages.count("WATCHDOG=1") >= 2  # from the processing loop, every 0.1 s
    assert any(m.startswith("STATUS=") and "predictions=7" in m and "samples=7" in m for m in messages)


def test_sighup_reopens_the_output_file(tiny_artifacts, tmp_path, stream):
    _, lines, expected = stream
    out = tmp_path / "predictions.jsonl"
    port = Port(tmp_path / "ttyDEVICE")
    d = Serve(tiny_artifacts, port.path, tmp_path / "state", "--output", str(out))
    port.send(b"\n" + b"".join(lines[:5]))
    _wait_lines(out, 5)
    out.rename(tmp_path / "predictions.jsonl.1")  # what logrotate does
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log("reopened")
    port.send(b"".join(lines[5:7]))
    _wait_lines(out, 2)
    assert d.stop() == 0
    rotated = [json.loads(x) for x in (tmp_path / "predictions.jsonl.1").read_text().splitlines()]
    fresh = [json.loads(x) for x in out.read_text().splitlines()]
    assert _records(rotated + fresh) == expected[:7]


def _wait_lines(path: Path, n: int) -> None:
    end = time.monotonic() + TIMEOUT
    while time.monotonic() < end:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {n} lines")


def test_cobs_frames_set_the_checkpoints_last_frame_sequence(tiny_artifacts, tmp_path, stream):
    from firmware_bridge import cobs
    from runtime.store import describe_state_dir

    seqs, _, _ = stream
    port = Port(tmp_path / "ttyCOBS")
    d = Serve(tiny_artifacts, port.path, tmp_path / "state", "--protocol", "cobs")
    features = seqs[0].shape[1]
    frames = [cobs.encode_frame(cobs.HELLO, 500, cobs.hello_payload(features=features))]
    frames += [cobs.encode_frame(cobs.SAMPLE, 501 + t, cobs.sample_payload(row)) for t, row in enumerate(seqs[0])]
    last = 501 + len(seqs[0])
    frames.append(cobs.encode_frame(cobs.RESET, last, b""))
    frames.append(cobs.encode_frame(cobs.SAMPLE, last + 1, cobs.sample_payload(seqs[1][0])))
    port.send(cobs.DELIMITER + b"".join(frames))
    d.wait_records(len(seqs[0]) + 1)
    assert d.stop() == 0
    assert [r["frame"] for r in d.records] == list(range(501, last)) + [last + 1]
    checkpoint = describe_state_dir(tmp_path / "state")["checkpoint"]
    assert checkpoint["last_frame_seq"] == last + 1
    assert checkpoint["samples_seen"] == len(seqs[0]) + 1
