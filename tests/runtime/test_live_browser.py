"""The live page in a real browser: headless Chromium (the OS package) on a daemon fed
through a pseudo-terminal. The chart's data and the counters are read from the page and
compared with what was fed and what the daemon answered; a screenshot goes to build/."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from tests.needs import missing

from cdp import Browser, chromium_path
from test_serve import Port, Serve, _records
from test_serve_live import live_url, send_all

from runtime.live_feed import LiveFeed, LiveHub, LiveMeta, LiveOptions
from runtime.live_http import LiveServer

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "build" / "live-view.png"

try:
    import websocket  # noqa: F401  (websocket-client, a test dependency)
except ImportError:
    missing("websocket-client (a test dependency) is not installed")
if chromium_path() is None:
    missing("chromium is not installed (make tools installs the Debian package)")


@pytest.fixture(scope="module")
def browser():
    b = Browser(chromium_path())
    yield b
    b.close()


def test_page_shows_what_the_daemon_was_fed_and_answered(tiny_artifacts, tmp_path, browser):
    with np.load(tiny_artifacts / "test_data.npz", allow_pickle=False) as z:
        seqs = [x.astype(np.float32) for x in z["X"][:5]]
    port = Port(tmp_path / "ttyBROWSER")
    d = Serve(tiny_artifacts, port.path, tmp_path / "state", "--http", "127.0.0.1:0")
    try:
        url = live_url(d)
        browser.navigate(url)
        assert browser.wait_for("window.stepwiseView && window.stepwiseView.connected")
        port.send(b"partial\n1,2,nope\nnan,1,2\n")
        sent = send_all(port, seqs)
        d.wait_records(len(sent))
        n = len(sent)
        assert browser.wait_for(f"(window.stepwiseView.points.default || []).length === {n} && "
                                f"window.stepwiseView.counters.predictions === {n} && "
                                "window.stepwiseView.counters.last_checkpoint !== null")
        view = browser.evaluate("JSON.stringify(window.stepwiseView)")
        page = browser.evaluate("""({
            label: document.getElementById('label').textContent,
            sample: document.getElementById('sample').textContent,
            streams: [...document.querySelectorAll('#stream option')].map(o => o.value),
            counters: [...document.querySelectorAll('#counters tr')].map(r => [...r.cells].map(c => c.textContent)),
            legend: document.getElementById('predictions-legend').textContent,
            drawn: (() => { const c = document.getElementById('predictions');
                            const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                            let n = 0; for (let i = 3; i < px.length; i += 4) n += px[i] > 0; return n; })()})""")
        shot = browser.screenshot(SCREENSHOT)
    finally:
        assert d.stop() == 0
    view = json.loads(view)
    records = _records(d.records)
    points = view["points"]["default"]
    assert [p[0] for p in points] == [r["i"] for r in records]
    for (i, seq, step, x, y, label), r, values in zip(points, records, sent):
        assert (seq, step, label) == (r["seq"], r["step"], r["label"])
        np.testing.assert_allclose(y, r["y"], rtol=1e-6)
        np.testing.assert_allclose(x, values, rtol=1e-6)
    assert view["meta"]["threshold"] == 0.5 and view["selected"] == "default"
    assert page["label"] == records[-1]["label"] and page["sample"] == str(records[-1]["i"])
    assert page["streams"] == ["default"]
    counters = dict(page["counters"])
    assert counters["samples"] == counters["predictions"] == str(n)
    assert counters["rejected: not numeric"] == "1" and counters["rejected: non finite"] == "1"
    assert counters["resets from the device"] == str(len(seqs) - 1)
    assert counters["reconnects"] == "0"
    # the daemon's first checkpoint may land after the page was read
    assert counters["last checkpoint"] == "none yet" or counters["last checkpoint"].endswith(" s ago")
    assert counters["view: points sent of samples seen"] == f"{n} of {n}"
    assert counters["view: points dropped (queues full)"] == "0"
    assert "threshold 0.5" in page["legend"] and page["drawn"] > 500
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _points(stream: str, n: int, y: float, label: str) -> list:
    return [(i, 0, np.array([i, -i, 2 * i], np.float32), SimpleNamespace(step=i + 1, y=np.array([y], np.float32),
                                                                        label=label)) for i in range(n)]


def test_stream_picker_lists_every_stream_and_shows_the_one_picked(browser):
    feed = LiveFeed(LiveOptions(max_rate=1000))
    meta = LiveMeta(("ax", "ay", "az"), ("rest", "gesture"), "sigmoid", 0.5, "int8", "never")
    server = LiveServer(LiveHub(feed, meta)).start()
    try:
        feed.observe("kitchen", _points("kitchen", 12, 0.2, "rest"), status=lambda: {"samples": 20})
        browser.navigate(server.url)
        assert browser.wait_for("window.stepwiseView && window.stepwiseView.connected && "
                                "window.stepwiseView.streams.length === 1")
        feed.observe("hall", _points("hall", 8, 0.9, "gesture"))  # a stream that appears later
        assert browser.wait_for("window.stepwiseView.streams.length === 2")
        options = browser.evaluate("[...document.querySelectorAll('#stream option')].map(o => o.value)")
        first = browser.evaluate("document.getElementById('label').textContent")
        browser.evaluate("const s = document.getElementById('stream'); s.value = 'hall';"
                         "s.dispatchEvent(new Event('change')); true")
        picked = browser.wait_for("document.getElementById('label').textContent === 'gesture' && "
                                  "document.getElementById('sample').textContent")
    finally:
        server.stop()
    assert options == ["hall", "kitchen"]
    assert first == "rest" and picked == "7"
