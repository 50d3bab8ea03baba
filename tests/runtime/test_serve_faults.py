"""``stepwise serve`` when what it writes to fails: a full disk, a vanished output folder,
a device that never reads its replies. The daemon is a real process on a real pty; the
faults are real (a small tmpfs or a file-size limit, a moved folder, an unread pty).
"""
from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_serve import TIMEOUT, Port, Serve, _wait_checkpoint, _wait_lines

from firmware_bridge import cobs

ROW = b"0.25,-0.5,0.125\n"


def counters(daemon: Serve, marker: str = "counters: ") -> dict[str, int]:
    """The last ``counters:`` log line (the STATUS the daemon reports) as a dict;
    ``marker="checkpoint written; "``: the counters at shutdown."""
    line = [x for x in daemon.log if marker in x][-1]
    return {k: int(v) for k, v in (kv.split("=") for kv in line.split(marker)[1].split())}


def wait_counter(daemon: Serve, key: str, at_least: int) -> dict[str, int]:
    end = time.monotonic() + TIMEOUT
    while time.monotonic() < end:
        if any("counters: " in x for x in daemon.log) and counters(daemon).get(key, 0) >= at_least:
            return counters(daemon)
        time.sleep(0.05)
    raise AssertionError(f"{key} never reached {at_least}:\n" + "".join(daemon.log[-20:]))


@contextlib.contextmanager
def nearly_full_folder(tmp_path: Path, room: int = 8192):
    """``(folder, popen kwargs, make_room)``: a folder where only ``room`` bytes fit.

    A small tmpfs filled up to ``room`` where mounting is allowed (a real ENOSPC), else a
    file-size limit on the daemon (RLIMIT_FSIZE: EFBIG). ``make_room(pid)`` lifts it.
    """
    folder = tmp_path / "out"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    try:
        if mounted:
            filler = folder / "filler"
            with open(filler, "wb") as f:
                with contextlib.suppress(OSError):
                    f.write(b"\0" * (256 * 1024))
            free = shutil.disk_usage(folder).free
            with open(filler, "r+b") as f:
                f.truncate(f.seek(0, os.SEEK_END) - (room - free))
            yield folder, {}, lambda pid: filler.unlink()
        else:
            def limit():
                resource.setrlimit(resource.RLIMIT_FSIZE, (room, resource.RLIM_INFINITY))

            def lift(pid):
                resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

            yield folder, {"preexec_fn": limit}, lift
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def json_lines(path: Path) -> list[dict]:
    text = path.read_text()
    assert text.endswith("\n"), "the output ends inside a line"
    return [json.loads(line) for line in text.splitlines()]


def test_full_disk_loses_lines_not_the_daemon(tiny_artifacts, tmp_path):
    with nearly_full_folder(tmp_path) as (folder, popen, make_room):
        out = folder / "predictions.jsonl"
        port = Port(tmp_path / "ttyDEVICE")
        d = Serve(tiny_artifacts, port.path, tmp_path / "state", "--output", str(out), **popen)
        port.send(b"\n" + ROW * 20)  # these fit; sent first so that a busy machine's one big batch cannot swallow them
        _wait_lines(out, 20)
        port.send(ROW * 280)
        _wait_checkpoint(tmp_path / "state", 300)  # intake and checkpoints went on
        status = wait_counter(d, "output_lost", 1)
        d.wait_log("cannot write to")
        assert status["predictions"] == 300 and status["output_errors"] >= 1
        kept = json_lines(out)  # whole lines only: a batch that did not fit was cut back
        index = [r["i"] for r in kept]
        assert 20 <= len(kept) < 300 and index == sorted(set(index)) and index[-1] < 300
        assert status["output_lost"] == 300 - len(kept)

        make_room(d.proc.pid)
        port.send(ROW * 5)
        d.wait_log("again")
        _wait_lines(out, len(kept) + 5)
        assert d.stop() == 0
        assert [r["i"] for r in json_lines(out)[len(kept):]] == [300, 301, 302, 303, 304]
        assert sum("cannot write to" in line for line in d.log) <= 3  # rate-limited, not one per batch


def test_sighup_with_the_output_folder_gone(tiny_artifacts, tmp_path):
    folder, moved = tmp_path / "out", tmp_path / "moved"
    folder.mkdir()
    port = Port(tmp_path / "ttyDEVICE")
    d = Serve(tiny_artifacts, port.path, tmp_path / "state", "--output", str(folder / "p.jsonl"))
    port.send(b"\n" + ROW * 5)
    _wait_lines(folder / "p.jsonl", 5)
    folder.rename(moved)
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log("cannot open output")
    port.send(ROW * 2)
    _wait_lines(moved / "p.jsonl", 7)  # the file already open keeps the lines
    assert wait_counter(d, "output_errors", 1)["output_lost"] == 0

    folder.mkdir()  # the folder is back: the retry opens a fresh file
    d.wait_log("reopened")
    port.send(ROW * 3)
    _wait_lines(folder / "p.jsonl", 3)
    assert d.stop() == 0
    assert [r["i"] for r in json_lines(moved / "p.jsonl") + json_lines(folder / "p.jsonl")] == list(range(10))


def _send_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:4096]):]


def test_cobs_device_that_never_reads_costs_replies_not_samples(tiny_artifacts, tmp_path):
    n = 6000
    port = Port(tmp_path / "ttyDEVICE")  # the test never reads the master: replies pile up
    d = Serve(tiny_artifacts, port.path, tmp_path / "state", "--protocol", "cobs")
    frames = [cobs.encode_frame(cobs.HELLO, 0, cobs.hello_payload(features=3))]
    frames += [cobs.encode_frame(cobs.SAMPLE, i % 65536 + 1, cobs.sample_payload([0.25, -0.5, 0.125]))
               for i in range(n)]
    started = time.monotonic()
    _send_all(port.master, b"\x00" + b"".join(frames))
    d.wait_records(n)
    took = time.monotonic() - started
    wait_counter(d, "link_replies_dropped", 1)  # STATUS shows the dropped replies
    assert d.stop() == 0
    status = counters(d, "checkpoint written; ")
    assert len(d.records) == n and status["predictions"] == n
    assert status.get("link_overflow", 0) == 0 and status.get("link_dropped", 0) == 0
    assert status["link_writes"] + status["link_replies_dropped"] + status.get("link_write_errors", 0) >= n - 256
    assert took < TIMEOUT, took  # 50 ms per blocked reply would take minutes


def test_a_huge_sliding_window_is_a_one_line_error(tiny_artifacts, tmp_path):
    result = subprocess.run([sys.executable, "-m", "stepwise_cli", "serve", "--artifacts", str(tiny_artifacts),
                             "--port", "loop://", "--state-dir", str(tmp_path / "state"),
                             "--reset", "sliding:100000000"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "reset policy 'sliding:100000000' is not valid; use window:N" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_fifo_where_the_checkpoint_should_be_does_not_block_start_up(tiny_artifacts, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    os.mkfifo(state / "state.ckpt")  # reading it would wait for a writer forever
    port = Port(tmp_path / "ttyDEVICE")
    d = Serve(tiny_artifacts, port.path, state)  # returns once the daemon logged "serving"
    assert any("is a FIFO, not a checkpoint file: moved to" in line for line in d.log)
    port.send(b"\n" + ROW * 3)
    d.wait_records(3)
    assert d.stop() == 0
    assert (state / "state.ckpt").is_file()
    assert [p.name.split(".not-a-file.")[0] for p in (state / "rejected").iterdir()] == ["state.ckpt"]


def test_name_value_fields_and_reordered_headers_map_to_features_by_name(tiny_artifacts, tmp_path):
    rows = [(0.25, -0.5, 0.125), (1.5, 0.0, -2.0), (0.75, 0.5, 0.25), (-1.0, 1.0, 0.0), (0.1, 0.2, 0.3)]
    plain = b"".join(b"%r,%r,%r\n" % r for r in rows)
    pairs = b"".join(b"az:%r ax:%r ay:%r\n" % (r[2], r[0], r[1]) for r in rows)
    header = b"az,ax,ay\n" + b"".join(b"%r %r %r\n" % (r[2], r[0], r[1]) for r in rows)
    millis = b"millis,az,ax,ay\n" + b"".join(b"%d,%r,%r,%r\n" % (20 * i, r[2], r[0], r[1]) for i, r in enumerate(rows))
    port = Port(tmp_path / "ttyDEVICE")
    d = Serve(tiny_artifacts, port.path, tmp_path / "state")
    port.send(b"\n" + plain + b"#reset\n" + pairs + b"ax:1 ay:2\n#reset\n" + header + b"#reset\n" + millis)
    d.wait_records(20)
    assert d.stop() == 0
    ys = [r["y"] for r in d.records]
    assert ys[:5] == ys[5:10] == ys[10:15] == ys[15:20]  # a column the header names and no feature is skipped
    assert counters(d, "checkpoint written; ")["rejected_field_count"] == 1  # "az" missing
