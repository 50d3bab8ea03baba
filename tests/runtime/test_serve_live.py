"""``stepwise serve --http``: the live view of a real daemon fed through a pseudo-terminal."""
from __future__ import annotations

import json
import re
import socket
import time
import urllib.request

import numpy as np
import pytest

from test_serve import Port, Serve, _records  # the pty and daemon helpers


def live_url(daemon: Serve) -> str:
    daemon.wait_log("live view on ")
    line = next(line for line in daemon.log if "live view on " in line)
    return re.search(r"live view on (\S+)", line).group(1)


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def wait_for(fetch, cond, timeout=15.0):
    end = time.monotonic() + timeout
    while True:
        value = fetch()
        if cond(value) or time.monotonic() > end:
            return value
        time.sleep(0.1)


@pytest.fixture(scope="module")
def fed(tiny_artifacts):
    with np.load(tiny_artifacts / "test_data.npz", allow_pickle=False) as z:
        seqs = [x.astype(np.float32) for x in z["X"][:4]]
    return seqs


def send_all(port: Port, seqs) -> list[list[float]]:
    """Send ``seqs`` as text lines (``#reset`` between); returns the values as parsed back."""
    sent = []
    for s, x in enumerate(seqs):
        if s:
            port.send(b"#reset\n")
        for row in x:
            line = ",".join(f"{v:.9g}" for v in row)
            port.send((line + "\n").encode())
            sent.append([float(v) for v in line.split(",")])
    return sent


def test_page_state_holds_what_was_fed_and_what_the_daemon_answered(tiny_artifacts, tmp_path, fed):
    port = Port(tmp_path / "ttyLIVE")
    d = Serve(tiny_artifacts, port.path, tmp_path / "state", "--http", "127.0.0.1:0")
    url = live_url(d)
    assert url.startswith("http://127.0.0.1:")
    port.send(b"partial\n")
    port.send(b"1,2,nope\n")
    sent = send_all(port, fed)
    d.wait_records(len(sent))
    state = wait_for(lambda: get_json(url + "api/state"),
                     lambda s: len(s["history"].get("default", [])) == len(sent)
                     and s["counters"].get("predictions") == len(sent)
                     and s["counters"].get("last_checkpoint") is not None)
    assert d.stop() == 0
    records = _records(d.records)
    points = state["history"]["default"]
    assert [p[0] for p in points] == [r["i"] for r in records]
    for (i, seq, step, x, y, label), r, values in zip(points, records, sent):
        assert (seq, step, label) == (r["seq"], r["step"], r["label"])
        np.testing.assert_allclose(y, r["y"], rtol=1e-6)
        np.testing.assert_allclose(x, values, rtol=1e-6)
    counters = state["counters"]
    assert counters["samples"] == len(sent) and counters["rejected_not_numeric"] == 1
    assert counters["live_dropped"] == 0 and counters["last_checkpoint"] is not None
    assert state["meta"]["features"] == list(np.load(tiny_artifacts / "test_data.npz")["feature_names"])


def _stuck_viewer(url: str) -> socket.socket:
    """An event-stream viewer that connects and then never reads a byte."""
    host, port = re.match(r"http://([^:/]+):(\d+)/", url).groups()
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


@pytest.mark.parametrize("viewer", ["none", "stuck"])
def test_a_viewer_that_never_reads_costs_the_daemon_no_samples(tiny_artifacts, tmp_path, fed, viewer):
    """The same paced stream is answered in full with no viewer and with a stuck one."""
    port = Port(tmp_path / "ttySTUCK")
    d = Serve(tiny_artifacts, port.path, tmp_path / "state", "--http", "127.0.0.1:0")
    url = live_url(d)
    sock = _stuck_viewer(url) if viewer == "stuck" else None
    rows = np.concatenate(fed * 36)  # 1,008 samples at about 500 Hz: the link's queue holds 2 s of them
    lines = [(",".join(f"{v:.9g}" for v in row) + "\n").encode() for row in rows]
    port.send(b"partial\n")  # the first line after the port opens is discarded
    for k in range(0, len(lines), 10):
        port.send(b"".join(lines[k:k + 10]))
        time.sleep(0.02)
    d.wait_records(len(lines))
    counters = wait_for(lambda: get_json(url + "api/state")["counters"],
                        lambda c: c.get("predictions") == len(lines))
    assert d.stop() == 0
    if sock is not None:
        sock.close()
    assert len(d.records) == len(lines) and counters["samples"] == len(lines)
    assert counters.get("link_overflow", 0) == 0 and counters["live_dropped"] == 0
    assert counters["live_offered"] == len(lines)
    assert counters["live_clients"] == (1 if viewer == "stuck" else 0)


def test_an_address_in_use_or_malformed_is_a_one_line_error(tiny_artifacts, tmp_path):
    import subprocess
    import sys

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    host, port = taken.getsockname()
    try:
        for http, message in ((f"{host}:{port}", "cannot listen"), ("localhost:web", "expected HOST:PORT")):
            proc = subprocess.run([sys.executable, "-m", "stepwise_cli", "serve", "--artifacts", str(tiny_artifacts),
                                   "--port", "loop://", "--state-dir", str(tmp_path / "s"), "--http", http],
                                  capture_output=True, text=True, timeout=60)
            assert proc.returncode == 2, proc.stderr
            assert proc.stderr.strip().splitlines()[-1].startswith("Error: --http") and message in proc.stderr
    finally:
        taken.close()


def test_many_ports_each_a_stream_of_the_live_view(tiny_artifacts, tmp_path, fed):
    a, b = Port(tmp_path / "ttyA"), Port(tmp_path / "ttyB")
    d = Serve(tiny_artifacts, a.path, tmp_path / "state", "--port", str(b.path), "--reset", "window:7",
              "--http", "127.0.0.1:0")
    url = live_url(d)
    for port in (a, b):
        port.send(b"partial\n")
    sent_a = send_all(a, fed[:2])
    sent_b = send_all(b, fed[2:3])
    d.wait_records(len(sent_a) + len(sent_b))
    state = wait_for(lambda: get_json(url + "api/state"),
                     lambda s: sum(len(h) for h in s["history"].values()) == len(sent_a) + len(sent_b)
                     and s["counters"].get("predictions") == len(sent_a) + len(sent_b))
    assert d.stop() == 0
    assert len(state["streams"]) == 2
    by_stream = {r["stream"]: [] for r in d.records}
    for r in d.records:
        by_stream[r["stream"]].append(r)
    for stream, points in state["history"].items():
        records = by_stream[stream]
        sent = sent_a if len(records) == len(sent_a) else sent_b
        assert [p[0] for p in points] == [r["i"] for r in records]
        for (_, _, _, x, y, label), r, values in zip(points, records, sent):
            assert label == r["label"]
            np.testing.assert_allclose(y, r["y"], rtol=1e-6)
            np.testing.assert_allclose(x, values, rtol=1e-6)
    assert state["counters"]["predictions"] == len(sent_a) + len(sent_b)
