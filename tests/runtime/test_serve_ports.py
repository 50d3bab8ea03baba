"""``stepwise serve`` with several ``--port``s: each pseudo-terminal one stream."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import numpy as np

from runtime.engine import Engine
from tests.runtime.test_serve import Port

TIMEOUT = 30.0


def test_two_ports_two_streams_each_equal_to_its_own_run(tiny_artifacts, tmp_path):
    ports = [Port(tmp_path / "ttyA"), Port(tmp_path / "ttyB")]
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "stepwise_cli", "serve", "--artifacts", str(tiny_artifacts),
           "--port", str(ports[0].path), "--port", str(ports[1].path), "--reset", "never",
           "--state-dir", str(tmp_path / "state"), "--output", str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True)
    reader.start()
    rng = np.random.default_rng(3)
    data = [rng.normal(size=(9, 3)).astype(np.float32) for _ in ports]
    deadline = time.monotonic() + TIMEOUT
    while not any("serving up to" in x for x in log) and time.monotonic() < deadline:
        time.sleep(0.05)  # both ports open (the first line after opening is discarded)
    for port in ports:
        port.send(b"# hello\n")
    def send(ks):
        for k in ks:
            for port, xs in zip(ports, data):
                port.send((",".join(repr(float(v)) for v in xs[k]) + "\n").encode())

    def wait_lines(path, n):
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if path.exists() and path.read_text().count("\n") >= n:
                return
            time.sleep(0.05)

    send(range(5))
    wait_lines(out, 10)
    rotated = out.rename(tmp_path / "out.jsonl.1")  # logrotate, then SIGHUP: a new file
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    send(range(5, 9))
    wait_lines(out, 8)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(TIMEOUT) == 0
    reader.join(5)
    assert "shutdown checkpoint written" in "".join(log)
    assert rotated.read_text().count("\n") == 10 and out.read_text().count("\n") == 8
    records = [json.loads(x) for x in (rotated.read_text() + out.read_text()).splitlines()]
    for port, xs in zip(ports, data):
        mine = [r for r in records if r["stream"] == str(port.path)]
        assert [r["i"] for r in mine] == list(range(9))
        eng = Engine.load(tiny_artifacts, reset="never")
        np.testing.assert_allclose([r["y"] for r in mine], [eng.step(x).y for x in xs],
                                   atol=1e-6, rtol=0)
