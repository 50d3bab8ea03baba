"""Port listing, and the device ends the simulator writes to (pseudo-terminal, pyserial URL)."""
from __future__ import annotations

import json
import os
import threading

import pytest
import serial
from click.testing import CliRunner
from serial.tools import list_ports_common

from firmware_bridge import ports
from firmware_bridge.ports import PtyPort, UrlPort, list_serial_ports
from stepwise_cli.ports import ports_cmd
from runtime.errors import PortError


def fake_port(device, vid=None, pid=None, serial_number=None, manufacturer=None, description="n/a"):
    info = list_ports_common.ListPortInfo(device, skip_link_detection=True)
    info.vid, info.pid, info.serial_number, info.manufacturer = vid, pid, serial_number, manufacturer
    info.description = description
    return info


@pytest.fixture
def two_ports(monkeypatch):
    found = [
        fake_port("/dev/ttyUSB0", 0x0403, 0x6001, "A10K2B", "FTDI", "FT232R USB UART"),
        fake_port("/dev/ttyACM0", 0x2341, 0x0043, None, "Arduino (www.arduino.cc)", "Arduino Uno"),
        fake_port("/dev/ttyS0"),
    ]
    monkeypatch.setattr(ports.list_ports, "comports", lambda: found)


def test_listing_fields(two_ports):
    assert list_serial_ports() == [
        {"device": "/dev/ttyACM0", "description": "Arduino Uno", "vid_pid": "2341:0043",
         "serial_number": "", "manufacturer": "Arduino (www.arduino.cc)"},
        {"device": "/dev/ttyS0", "description": "", "vid_pid": "", "serial_number": "", "manufacturer": ""},
        {"device": "/dev/ttyUSB0", "description": "FT232R USB UART", "vid_pid": "0403:6001",
         "serial_number": "A10K2B", "manufacturer": "FTDI"},
    ]


def test_command_table_and_json(two_ports):
    table = CliRunner().invoke(ports_cmd, [])
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["DEVICE", "DESCRIPTION", "VID:PID", "SERIAL", "MANUFACTURER"]
    assert lines[3].split() == ["/dev/ttyUSB0", "FT232R", "USB", "UART", "0403:6001", "A10K2B", "FTDI"]
    assert lines[1].index("2341:0043") == lines[0].index("VID:PID")
    as_json = CliRunner().invoke(ports_cmd, ["--json"])
    assert json.loads(as_json.stdout) == list_serial_ports()


def test_command_with_no_ports(monkeypatch):
    monkeypatch.setattr(ports.list_ports, "comports", lambda: [])
    assert CliRunner().invoke(ports_cmd, ["--json"]).stdout.strip() == "[]"
    result = CliRunner().invoke(ports_cmd, [])
    assert result.exit_code == 0 and "no serial ports found" in result.output


def test_real_listing_is_json():
    rows = json.loads(CliRunner().invoke(ports_cmd, ["--json"]).stdout)
    assert all(set(r) == {"device", "description", "vid_pid", "serial_number", "manufacturer"} for r in rows)


def test_pty_port_behaves_like_a_pluggable_device(tmp_path):
    link = tmp_path / "ttyPTY"
    port = PtyPort(link, settle=0)
    never = threading.Event()
    try:
        assert os.readlink(link) == port.device and port.device.startswith("/dev/pts/")
        assert not port.reader_present() and not port.wait_reader(0.05, never)
        reader = serial.serial_for_url(str(link), timeout=2)
        assert port.reader_present() and port.wait_reader(0.05, never)
        payload = b"\x00\r\n\x11\x13\x03\x04\xff binary-clean"  # NUL, CR, XON/XOFF, ^C, ^D survive
        port.write(payload)
        assert reader.read(len(payload)) == payload
        reader.write(b"p=1 c=0\n")
        got = b""
        while len(got) < 8 and (chunk := port.read(2)):
            got += chunk
        assert got == b"p=1 c=0\n"

        port.write(b"x" * 3000)
        assert not port.drain(timeout=0.2)  # nobody reads: still pending
        assert reader.read(3000) == b"x" * 3000
        assert port.drain(timeout=5)

        port.disconnect()
        assert not os.path.lexists(link)
        with pytest.raises(serial.SerialException):
            reader.read(1)
        reader.close()
        assert port.read(0.01) == b""
        port.reconnect()
        assert os.readlink(link) == port.device and os.path.exists(port.device)
        assert not port.drain(timeout=1)  # no reader after replugging
    finally:
        port.close()
    assert not os.path.lexists(link)


def test_pty_port_never_replaces_a_regular_file(tmp_path):
    precious = tmp_path / "ttyUSB0"
    precious.write_text("keep")
    with pytest.raises(PortError, match="not a symlink"):
        PtyPort(precious)
    assert precious.read_text() == "keep"


def test_url_port_over_loop():
    port = UrlPort("loop://")
    try:
        assert port.reader_present() and port.wait_reader(None, threading.Event())
        port.write(b"1,2,3\n")
        assert port.read(1) == b"1,2,3\n"
        port.disconnect()
        assert port.read(0.01) == b""
        with pytest.raises(PortError, match="loop://"):
            port.write(b"x")
        port.reconnect()
        port.write(b"ok")
        assert port.read(1) == b"ok"
    finally:
        port.close()


def test_url_port_names_a_port_that_never_appears(tmp_path):
    with pytest.raises(PortError, match="ttyGONE"):
        UrlPort(str(tmp_path / "ttyGONE"), reopen_timeout=0.05)
