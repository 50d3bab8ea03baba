"""deploy/: the systemd unit (systemd-analyze verify, exposure <= 2.5), the udev rule that
starts it on every plug-in, and the logrotate file with its SIGHUP reload."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "stepwise.service"
RULES = DEPLOY / "99-stepwise.rules"
LOGROTATE = DEPLOY / "stepwise.logrotate"
SKETCH = ROOT / "firmware_bridge" / "examples" / "arduino" / "stepwise_imu" / "stepwise_imu.ino"
EXPOSURE_BAR = 2.5

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed (make tools installs systemd)")


def unit_settings(text: str) -> dict[str, list[str]]:
    """``Key -> [values]`` of the unit file, continuation lines joined."""
    settings: dict[str, list[str]] = {}
    for line in text.replace("\\\n", " ").splitlines():
        if line.strip() and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(" ".join(value.split()))
    return settings


def exec_start() -> list[str]:
    return unit_settings(UNIT.read_text())["ExecStart"][0].split()


@needs_analyze
def test_unit_verifies_clean(tmp_path):
    program = tmp_path / "stepwise"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    unit = tmp_path / "stepwise.service"
    unit.write_text(UNIT.read_text().replace(exec_start()[0], str(program)))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stdout + proc.stderr


@needs_analyze
def test_unit_verify_would_catch_a_bad_line(tmp_path):
    unit = tmp_path / "stepwise.service"
    unit.write_text(UNIT.read_text().replace("Type=notify", "Type=notifyy"))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "notifyy" in proc.stderr


@needs_analyze
def test_exposure_is_at_most_2_5():
    proc = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
                          capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for stepwise\.service: (\d+\.\d+)", proc.stdout)
    assert m, proc.stdout[-2000:] + proc.stderr
    assert float(m.group(1)) <= EXPOSURE_BAR, proc.stdout


def test_unit_is_started_by_the_board_and_speaks_the_sketch_protocol():
    s = unit_settings(UNIT.read_text())
    assert "BindsTo" not in s and "WantedBy" not in s  # udev starts it, and again on each replug
    args = exec_start()
    assert args[args.index("--protocol") + 1] == "cobs"
    assert "stepwise_frame.h" in SKETCH.read_text()  # the sketch frames with the cobs library
    sketch_baud = int(re.search(r"BAUD = (\d+)", SKETCH.read_text()).group(1))
    unit_baud = int(args[args.index("--baud") + 1]) if "--baud" in args else 115200  # serve's default
    assert sketch_baud == unit_baud
    assert args[args.index("--port") + 1] == "/dev/stepwise0"
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["MemoryDenyWriteExecute"] == ["yes"] and s["SystemCallFilter"][0] == "@system-service"


# udev: key[{attr}] op "value", comma separated (udev(7)).
UDEV_PAIR = re.compile(r'\s*([A-Z_]+(?:\{[^}]+\})?)\s*(==|!=|\+=|-=|:=|=)\s*"([^"]*)"\s*(?:,|$)')
MATCH_KEYS = {"ACTION", "SUBSYSTEM", "KERNEL", "ATTRS", "ENV"}
ASSIGN_KEYS = {"SYMLINK", "TAG", "ENV"}


def udev_rules(text: str) -> list[list[tuple[str, str, str]]]:
    rules = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pairs, pos = [], 0
        while pos < len(line):
            m = UDEV_PAIR.match(line, pos)
            assert m, f"{RULES.name}:{n}: cannot parse from column {pos}: {line[pos:]!r}"
            pairs.append(m.groups())
            pos = m.end()
        for key, op, _ in pairs:
            base = key.split("{")[0]
            assert base in (MATCH_KEYS if op in ("==", "!=") else ASSIGN_KEYS), f"{RULES.name}:{n}: {key}{op}"
        rules.append(pairs)
    return rules


def test_udev_rule_names_the_board_and_wants_the_unit():
    rules = udev_rules(RULES.read_text())
    assert rules
    for pairs in rules:
        assert ("ENV{SYSTEMD_WANTS}", "+=", UNIT.name) in pairs and ("TAG", "+=", "systemd") in pairs
        assert ("SYMLINK", "+=", "stepwise0") in pairs and ("SUBSYSTEM", "==", "tty") in pairs
    if subprocess.run(["udevadm", "verify", "--help"], capture_output=True).returncode == 0:
        proc = subprocess.run(["udevadm", "verify", str(RULES)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_udev_parser_rejects_a_broken_rule():
    with pytest.raises(AssertionError, match="cannot parse"):
        udev_rules('SUBSYSTEM=="tty", SYMLINK+=stepwise0\n')


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate is not installed (make tools)")
def test_logrotate_rotates_and_reloads_the_daemon(tmp_path):
    logs = tmp_path / "log"
    logs.mkdir()
    (logs / "predictions.jsonl").write_text('{"i": 0}\n' * 100)
    conf = LOGROTATE.read_text().replace("/var/log/stepwise", str(logs)).replace("stepwise stepwise", "root root")
    (tmp_path / "stepwise.logrotate").write_text(conf)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/systemctl.calls\n')
    (bin_dir / "systemctl").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    debug = subprocess.run(["logrotate", "-d", "-s", str(tmp_path / "state"), str(tmp_path / "stepwise.logrotate")],
                           capture_output=True, text=True, env=env, timeout=60)
    assert debug.returncode == 0 and "error" not in debug.stderr.lower(), debug.stderr
    proc = subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "state"), str(tmp_path / "stepwise.logrotate")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (logs / "predictions.jsonl.1").read_text() == '{"i": 0}\n' * 100  # delaycompress: plain first
    assert (logs / "predictions.jsonl").read_text() == ""  # created anew for the reopened daemon
    assert (tmp_path / "systemctl.calls").read_text().split() == ["reload", UNIT.name]
