"""The live view: decimation and bounded queues (drops counted), then the real HTTP server."""
from __future__ import annotations

import json
import socket
import time
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest

from runtime.errors import ConfigError
from runtime.live_feed import LiveFeed, LiveHub, LiveMeta, LiveOptions
from runtime.live_http import LiveServer, parse_address, static_file

META = LiveMeta(("ax", "ay"), ("rest", "gesture"), "sigmoid", 0.5, "int8", "window:7")


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _batch(start: int, n: int) -> list:
    return [(i, 0, np.array([i, -i], np.float32),
             SimpleNamespace(step=i % 7 + 1, y=np.array([i / 1000], np.float32), label="gesture"))
            for i in range(start, start + n)]


def test_feed_keeps_at_most_max_rate_points_per_second_evenly_and_counts_what_it_saw():
    clock = Clock()
    feed = LiveFeed(LiveOptions(max_rate=10), clock=clock)
    feed.observe("s", _batch(0, 100))  # a full bucket: 10 of the first 100
    clock.now += 0.5
    feed.observe("s", _batch(100, 100))  # half a second later: 5 more
    (_, first), (_, second) = feed.handoff
    assert [p[0] for p in first] == [9, 19, 29, 39, 49, 59, 69, 79, 89, 99]
    assert [p[0] for p in second] == [119, 139, 159, 179, 199]
    assert first[0] == [9, 0, 3, [9.0, -9.0], [pytest.approx(0.009)], "gesture"]
    assert feed.counters() == {"live_offered": 200, "live_kept": 15, "live_dropped": 0}


def test_full_handoff_queue_drops_and_counts_instead_of_growing():
    clock = Clock()
    feed = LiveFeed(LiveOptions(max_rate=1000, queue=3), clock=clock)
    for k in range(5):
        clock.now += 1
        feed.observe("s", _batch(k * 10, 10))
    assert len(feed.handoff) == 3
    assert feed.counters() == {"live_offered": 50, "live_kept": 30, "live_dropped": 20}


def test_hub_keeps_history_per_stream_and_a_client_that_never_reads_only_loses_its_own():
    clock = Clock()
    feed = LiveFeed(LiveOptions(max_rate=1000, history=25, client_queue=2), clock=clock)
    hub = LiveHub(feed, META)
    stuck, reader = hub.subscribe(None), hub.subscribe("b")
    for k in range(4):
        clock.now += 1
        feed.observe("a", _batch(k * 10, 10), status=lambda: {"samples": 123})
        feed.observe("b", _batch(k * 10, 10))
        hub.drain()
        reader.queue.clear()
    snap = hub.snapshot()
    assert snap["streams"] == ["a", "b"] and len(snap["history"]["a"]) == 25
    assert snap["history"]["a"][-1][0] == 39 and snap["window"] == 25
    assert snap["counters"]["samples"] == 123 and snap["counters"]["live_offered"] >= 30
    assert len(stuck.queue) == 2 and stuck.dropped == 4 * 3 - 2  # points a, counters, points b per turn
    assert reader.dropped == 0
    assert list(hub.snapshot("b")["history"]) == ["b"]


def test_subscribers_are_capped():
    hub = LiveHub(LiveFeed(LiveOptions(max_clients=1)), META)
    assert hub.subscribe(None) is not None and hub.subscribe(None) is None


@pytest.mark.parametrize("text, want", [("8321", ("127.0.0.1", 8321)), (":0", ("127.0.0.1", 0)),
                                        ("0.0.0.0:80", ("0.0.0.0", 80)), ("[::1]:9", ("::1", 9))])
def test_address_defaults_to_loopback(text, want):
    assert parse_address(text) == want


@pytest.mark.parametrize("text", ["host:", "host:http", "1:99999", ""])
def test_bad_address_is_a_one_line_error(text):
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        parse_address(text)


def test_static_assets_ship_inside_the_package():
    page = static_file("index.html").decode()
    assert '<script src="/static/app.js">' in page and "/static/style.css" in page
    assert b"EventSource" in static_file("app.js") and b"canvas" in static_file("style.css")


@pytest.fixture
def server():
    clock = Clock()
    feed = LiveFeed(LiveOptions(max_rate=1000, history=50), clock=clock)
    live = LiveServer(LiveHub(feed, META)).start()
    yield live, feed, clock
    live.stop()


def _get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.headers["Content-Type"], r.read()


def test_server_serves_the_page_its_assets_and_the_state(server):
    live, feed, clock = server
    assert live.address[0] == "127.0.0.1"
    status, ctype, body = _get(live.url)
    assert status == 200 and ctype.startswith("text/html") and b"stepwise live" in body
    assert _get(live.url + "static/app.js")[1].startswith("text/javascript")
    feed.observe("default", _batch(0, 20), status=lambda: {"samples": 20})
    live.hub.drain()
    state = json.loads(_get(live.url + "api/state")[2])
    assert state["meta"]["features"] == ["ax", "ay"] and state["meta"]["threshold"] == 0.5
    assert [p[0] for p in state["history"]["default"]] == list(range(20))
    assert state["counters"]["samples"] == 20
    with pytest.raises(urllib.error.HTTPError, match="404"):
        _get(live.url + "static/../../etc/passwd")


def _read_events(sock: socket.socket, want: int, timeout: float = 5.0) -> list[tuple[str, dict]]:
    sock.settimeout(timeout)
    buf, events, deadline = b"", [], time.monotonic() + timeout
    while len(events) < want and time.monotonic() < deadline:
        buf += sock.recv(65536)
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            lines = dict(line.split(": ", 1) for line in block.decode().splitlines() if ": " in line)
            if "event" in lines:
                events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_event_stream_sends_the_state_then_points_and_counters_as_they_come(server):
    live, feed, clock = server
    host, port = live.address
    with socket.create_connection((host, port)) as sock:
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        (kind, state), = _read_events(sock, 1)
        assert kind == "state" and state["history"] == {}
        clock.now += 1
        feed.observe("default", _batch(0, 5), status=lambda: {"samples": 5, "rejected_garbage": 2})
        events = _read_events(sock, 2)
    assert events[0] == ("points", {"stream": "default", "points": [
        [i, 0, i % 7 + 1, [float(i), float(-i)], [pytest.approx(i / 1000)], "gesture"] for i in range(5)]})
    assert events[1][0] == "counters" and events[1][1]["rejected_garbage"] == 2


def _wait(condition, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_a_viewer_that_never_reads_loses_points_in_its_own_queue_and_nothing_else(server):
    live, feed, clock = server
    host, port = live.address
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _wait(lambda: live.hub.clients)
    (client,) = live.hub.clients
    for k in range(2000):  # ~6 MB of events offered to a socket nobody reads
        clock.now += 1
        feed.observe("default", _batch(k * 50, 50))
        if k % 100 == 0:
            time.sleep(0.01)  # let the hub thread drain as the daemon's loop would
    assert _wait(lambda: not feed.handoff)
    assert feed.counters() == {"live_offered": 100000, "live_kept": 100000, "live_dropped": 0}
    assert client.dropped > 0 and len(client.queue) <= client.limit
    assert len(live.hub.snapshot()["history"]["default"]) == 50
    sock.close()


def test_every_static_asset_is_declared_package_data_so_the_wheel_carries_it():
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["runtime"]
    assets = sorted(p.relative_to(root / "runtime").as_posix() for p in (root / "runtime" / "live_static").iterdir())
    assert assets == ["live_static/app.js", "live_static/index.html", "live_static/style.css"]
    for asset in assets:
        assert any(fnmatch.fnmatch(asset, pat) for pat in patterns), asset


def test_a_sandbox_without_network_sockets_is_a_one_line_error(monkeypatch):
    import errno
    import os

    def refuse(*args, **kwargs):  # what RestrictAddressFamilies=AF_UNIX makes socket() do
        raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))

    monkeypatch.setattr(socket, "socket", refuse)
    with pytest.raises(ConfigError, match=r"--http 127.0.0.1:0: cannot listen: Address family not supported"):
        LiveServer(LiveHub(LiveFeed(), META))
