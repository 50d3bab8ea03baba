"""The daemon's output: failures are counted and retried, never raised."""
from __future__ import annotations

import io
import os
import sys

from runtime.output import Output


def test_a_reopen_that_fails_keeps_the_open_file_and_retries_when_due(tmp_path):
    now = [0.0]
    folder = tmp_path / "out"
    folder.mkdir()
    out = Output(folder / "p.jsonl", retry_interval=1.0, clock=lambda: now[0])
    assert out.write_lines(["1\n"]) and out.healthy
    folder.rename(tmp_path / "moved")
    out.reopen()
    assert out.errors == 1 and not out.healthy
    assert out.write_lines(["2\n"])  # still the file open before
    folder.mkdir()
    now[0] = 0.5
    assert out.write_lines(["3\n"]) and out.errors == 1  # not due yet
    now[0] = 1.0
    assert out.write_lines(["4\n"]) and out.healthy
    out.close()
    assert (tmp_path / "moved" / "p.jsonl").read_text() == "1\n2\n3\n"
    assert (folder / "p.jsonl").read_text() == "4\n"


def test_a_folder_missing_at_start_is_retried(tmp_path):
    now = [0.0]
    out = Output(tmp_path / "later" / "p.jsonl", clock=lambda: now[0])
    assert not out.write_lines(["1\n", "2\n"]) and out.lost == 2
    (tmp_path / "later").mkdir()
    now[0] = 5.0
    assert out.write_lines(["3\n"]) and out.lost == 2
    out.close()
    assert (tmp_path / "later" / "p.jsonl").read_text() == "3\n"


def test_stdout_whose_reader_is_gone_counts_the_lost_lines(monkeypatch):
    read, write = os.pipe()
    os.close(read)
    stream = io.TextIOWrapper(io.FileIO(write, "w"))
    monkeypatch.setattr(sys, "stdout", stream)
    out = Output(None)
    assert not out.write_lines(["1\n", "2\n"]) and not out.write_lines(["3\n"])
    assert (out.errors, out.lost) == (2, 3)
    monkeypatch.undo()
    stream.close()
