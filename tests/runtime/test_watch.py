"""``stepwise watch``: the terminal chart from a JSON-lines file and from a live view."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
from click.testing import CliRunner

from stepwise_cli.main import cli
from stepwise_cli.watch import watch_cmd
from runtime.live_feed import LiveFeed, LiveHub, LiveMeta, LiveOptions
from runtime.live_http import LiveServer
from runtime.watch import BLOCKS, WatchState, iter_jsonl, render, spark


def test_spark_scales_each_value_between_lo_and_hi():
    assert spark([0.0, 0.5, 1.0, None], 0.0, 1.0) == BLOCKS[0] + BLOCKS[4] + BLOCKS[7] + " "
    assert spark([2.0, 2.0], 2.0, 2.0) == BLOCKS[0] * 2  # a flat row does not divide by zero
    assert spark([5.0, -5.0], 0.0, 1.0, " #") == "# "  # clipped


def _records(n):
    return [{"i": i, "seq": 0, "step": i + 1, "y": [i / (n - 1)], "label": "1" if i / (n - 1) >= 0.5 else "0",
             "t": 1.0} for i in range(n)]


def test_once_on_a_file_shows_the_last_predictions_label_and_skips_bad_lines(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _records(11)) + "not json\n[1, 2]\n")
    result = CliRunner().invoke(watch_cmd, [str(path), "--once", "--width", "8"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].startswith("label: 1   sample 10   step 11")
    row = next(line for line in lines if line.strip().startswith("P(1)"))
    assert spark([r["y"][0] for r in _records(11)[-8:]], 0.0, 1.0) in row
    assert row.endswith("1.0000  >= threshold")
    assert "skipped 2 line(s)" in result.output


def test_a_missing_file_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(cli, ["watch", str(tmp_path / "nope.jsonl"), "--once"])
    assert result.exit_code == 2 and "nope.jsonl: cannot read: No such file" in result.output


def test_follow_yields_lines_appended_later_and_waits_for_a_line_to_end(tmp_path):
    path = tmp_path / "grow.jsonl"
    path.write_bytes(b"")
    got = []
    with open(path, "rb") as f:
        events = iter_jsonl(f, follow=True, poll=0.01)
        with open(path, "ab", buffering=0) as w:
            w.write(b'{"i": 0, "y": [0.1]}\n{"i": 1, "y"')
            while len(got) < 1:
                event, data = next(events)
                if event == "record":
                    got.append(data)
            w.write(b': [0.2]}\n')
            while len(got) < 2:
                event, data = next(events)
                if event == "record":
                    got.append(data)
    assert got == [{"i": 0, "y": [0.1]}, {"i": 1, "y": [0.2]}]


def test_render_shows_features_classes_threshold_and_counters():
    state = WatchState(width=3)
    state.apply("state", {"meta": {"features": ["ax", "ay"], "classes": ["a", "b", "c"], "threshold": None,
                                   "variant": "int8", "reset": "never"},
                          "streams": ["s1", "s2"], "history": {"s1": [[0, 0, 1, [1.0, 5.0], [0.2, 0.3, 0.5], "c"]],
                                                               "s2": [[9, 0, 1, [0.0, 0.0], [1, 0, 0], "a"]]},
                          "counters": {"samples": 7, "rejected_garbage": 2, "last_checkpoint": None}}, stream="s1")
    state.apply("points", {"stream": "s1", "points": [[1, 0, 2, [3.0, 5.0], [0.1, 0.8, 0.1], "b"]]}, stream="s1")
    screen = "\n".join(render(state, "http://x/"))
    assert "[int8, never]" in screen and "label: b   sample 1   step 2" in screen and "streams: s1, s2" in screen
    assert "ax " in screen and "P(b)" in screen and "threshold" not in screen.split("prediction")[1].split("\n")[0]
    assert "rejected_garbage=2" in screen and "last checkpoint: none yet" in screen


def _batch(start, n):
    return [(i, 0, np.array([i, 2 * i], np.float32),
             SimpleNamespace(step=i + 1, y=np.array([0.9], np.float32), label="gesture")) for i in range(start, start + n)]


def test_watch_reads_a_live_view_over_http(tmp_path):
    feed = LiveFeed(LiveOptions(max_rate=1000))
    hub = LiveHub(feed, LiveMeta(("ax", "ay"), ("rest", "gesture"), "sigmoid", 0.5, "float32", "window:7"))
    server = LiveServer(hub).start()
    try:
        feed.observe("default", _batch(0, 12), status=lambda: {"samples": 12, "link_reconnects": 1})
        hub.drain()
        proc = subprocess.run([sys.executable, "-m", "stepwise_cli", "watch", server.url, "--once", "--width", "10",
                               "--ascii"], capture_output=True, text=True, timeout=60)
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "label: gesture   sample 11   step 12" in out
    assert "ax" in out and "[2 .. 11]" in out and "[4 .. 22]" in out  # the last 10 points
    assert "P(gesture)" in out and "0.9000  >= threshold" in out
    assert "link_reconnects=1" in out and "samples=12" in out


def test_watch_of_an_unreachable_daemon_is_a_one_line_error():
    result = CliRunner().invoke(cli, ["watch", "http://127.0.0.1:9/", "--once"])
    assert result.exit_code == 2 and "cannot reach the live view" in result.output


def test_stdin_is_a_source():
    stdin = io.BytesIO(b"".join(json.dumps(r).encode() + b"\n" for r in _records(3)))
    from runtime.watch import WatchOptions, watch

    out = io.StringIO()
    assert watch(WatchOptions("-", once=True, width=5), out, stdin=stdin) == 0
    assert "label: 1   sample 2   step 3" in out.getvalue()


def test_on_a_terminal_each_frame_is_drawn_in_place_with_plain_ansi():
    from runtime.watch import WatchOptions, watch

    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    stdin = io.BytesIO(b"".join(json.dumps(r).encode() + b"\n" for r in _records(3)))
    assert watch(WatchOptions("-", follow=False, width=5, interval=0.0), out, stdin=stdin) == 0
    frames = out.getvalue().split("\x1b[H")[1:]
    assert len(frames) == 4  # one per record, then the last one again at the end
    assert all(f.endswith("\x1b[J") and "\x1b[K\n" in f for f in frames)
    assert "label: 1   sample 2   step 3" in frames[-1]
