"""The daemon inside the unit's sandbox, on both interpreter packages.

systemd cannot run here, so the two filters of deploy/stepwise.service that could break
an interpreter are checked on real processes instead:

- ``SystemCallFilter=@system-service ~@privileged @resources``: ``stepwise serve`` runs
  under strace (model load, a pty, samples, sd_notify, checkpoints, SIGHUP, SIGTERM) and
  every system call it makes must be one that the filter allows, as
  ``systemd-analyze syscall-filter`` lists the groups;
- ``MemoryDenyWriteExecute=yes``: the same trace has no writable+executable mapping and
  no mprotect to executable (what systemd's filter refuses), and replay runs with the
  kernel's own equivalent, ``prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN)``, printing
  the same predictions as without it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.needs import missing

ROOT = Path(__file__).resolve().parents[2]
DEVICE_PYTHON = ROOT / ".venv-device" / "bin" / "python"
UNIT = ROOT / "deploy" / "stepwise.service"
SYSCALL = re.compile(r"^\d+\s+(?:<\.\.\. )?([a-z_0-9]+)(?:\(| resumed>)")
W_AND_X = re.compile(r"^\d+\s+(?:mmap|mmap2)\(.*PROT_WRITE\|PROT_EXEC|^\d+\s+(?:mmap|mmap2)\(.*PROT_EXEC\|PROT_WRITE")
TO_EXEC = re.compile(r"^\d+\s+(?:mprotect|pkey_mprotect)\([^,]+, [^,]+, [A-Z_|]*PROT_EXEC")

pytestmark = pytest.mark.skipif(shutil.which("strace") is None or shutil.which("systemd-analyze") is None,
                                reason="needs strace and systemd-analyze (make tools)")


@pytest.fixture(params=["tflite_runtime", "ai_edge_litert"])
def device_python(request) -> tuple[str, Path]:
    """(backend, python): the 3.11 device env, and the 3.13 venv installed from the bundle."""
    if request.param == "tflite_runtime":
        if not DEVICE_PYTHON.exists():
            missing("no .venv-device (make device-env)")
        return request.param, DEVICE_PYTHON
    return request.param, request.getfixturevalue("bundle_install").python


def syscall_groups() -> dict[str, set[str]]:
    """``systemd-analyze syscall-filter``: group -> its system calls and @groups."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"], capture_output=True,
                         text=True, timeout=60).stdout
    groups: dict[str, set[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.split()[0], set())
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.add(line.strip())
    return groups


def expand(name: str, groups: dict[str, set[str]]) -> set[str]:
    found: set[str] = set()
    for item in groups[name]:
        found |= expand(item, groups) if item.startswith("@") else {item}
    return found


def allowed_by_unit() -> set[str]:
    """What the unit's SystemCallFilter lines leave (systemd always allows @default)."""
    groups = syscall_groups()
    allowed = expand("@default", groups)
    for value in re.findall(r"^SystemCallFilter=(.*)$", UNIT.read_text(), re.M):
        deny = value.startswith("~")
        names = set()
        for item in value.lstrip("~").split():
            names |= expand(item, groups) if item.startswith("@") else {item}
        allowed = allowed - names if deny else allowed | names
    return allowed


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _wait(predicate, what: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def traced_serve(python: Path, artifacts: Path, tmp: Path) -> tuple[list[str], list[dict]]:
    """Run ``stepwise serve`` under strace through a pty: trace lines and the JSON lines."""
    master, slave = os.openpty()
    link = tmp / "ttySENSOR"
    link.symlink_to(os.ttyname(slave))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp / "notify"))
    notify.settimeout(60)
    out, trace = tmp / "predictions.jsonl", tmp / "trace"
    cmd = ["strace", "-f", "-qq", "-o", str(trace), str(python), "-m", "stepwise_cli", "serve",
           "--artifacts", str(artifacts), "--port", str(link), "--protocol", "text",
           "--state-dir", str(tmp / "state"), "--checkpoint-interval", "0.2", "--output", str(out)]
    env = {"PATH": os.environ["PATH"], "NOTIFY_SOCKET": str(tmp / "notify"), "WATCHDOG_USEC": "2000000"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        while b"READY=1" not in notify.recv(4096):
            pass
        (daemon,) = _children(proc.pid)
        features = json.loads((artifacts / "manifest.json").read_text())["input"]["features"]
        line = ",".join(["0.5"] * features).encode() + b"\n"
        os.write(master, b"\n" + line * 20)
        _wait(lambda: out.exists() and out.read_text().count("\n") >= 20, "20 predictions")
        os.kill(daemon, signal.SIGHUP)
        out.rename(tmp / "predictions.jsonl.1")
        time.sleep(0.5)
        os.write(master, line * 5)
        _wait(lambda: out.exists() and out.read_text().count("\n") >= 5, "5 predictions after SIGHUP")
        time.sleep(0.5)  # a timed checkpoint
        os.kill(daemon, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()[-2000:]
    finally:
        proc.kill()
        notify.close()
        os.close(master)
        os.close(slave)
    records = [json.loads(r) for f in ("predictions.jsonl.1", "predictions.jsonl")
               for r in (tmp / f).read_text().splitlines()]
    return trace.read_text().splitlines(), records


def test_serve_stays_within_the_units_syscall_filter_and_mdwe(device_python, tiny_artifacts, tmp_path):
    backend, python = device_python
    lines, records = traced_serve(python, tiny_artifacts, tmp_path)
    assert len(records) == 25 and (tmp_path / "state").exists()
    used = {m.group(1) for line in lines if (m := SYSCALL.match(line))}
    assert {"openat", "ioctl", "sendmsg", "fsync", "rename"} & used  # the trace saw the daemon work
    outside = sorted(used - allowed_by_unit())
    assert outside == [], f"{backend}: system calls the unit's filter refuses: {outside}"
    assert [x for x in lines if W_AND_X.match(x) or TO_EXEC.match(x)] == []


MDWE_PROBE = r"""
import ctypes, mmap, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, REFUSE_EXEC_GAIN
    sys.exit("PR_SET_MDWE failed: errno %d" % ctypes.get_errno())
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("a writable and executable mapping was allowed: MDWE is not in force")
except PermissionError:
    pass
from stepwise_cli.main import main
main()
"""


def _mdwe_supported() -> bool:
    probe = "import ctypes,sys; sys.exit(ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0)"
    return subprocess.run([sys.executable, "-c", probe]).returncode == 0


@pytest.mark.skipif(not _mdwe_supported(), reason="the kernel has no PR_SET_MDWE (Linux < 6.3)")
@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_replay_under_memory_deny_write_execute(device_python, tiny_artifacts, variant):
    backend, python = device_python
    args = ["replay", "--artifacts", str(tiny_artifacts), "--variant", variant, str(tiny_artifacts / "test_data.npz")]
    free = subprocess.run([str(python), "-m", "stepwise_cli", *args], capture_output=True, text=True, timeout=120)
    held = subprocess.run([str(python), "-c", MDWE_PROBE, *args], capture_output=True, text=True, timeout=120)
    assert held.returncode == 0, f"{backend}: {held.stderr[-2000:]}"
    assert free.returncode == 0 and held.stdout == free.stdout and held.stdout.count("\n") > 100
