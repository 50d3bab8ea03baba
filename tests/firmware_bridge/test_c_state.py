"""The C state persistence library on an emulated NOR flash, compiled with gcc: unit
tests, a power cut at every write/erase call (and part-way through it), and the
documented slot layout checked byte by byte with zlib.crc32."""
from __future__ import annotations

import hashlib
import re
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

MAGIC = b"SWST"
META = struct.Struct("<I32sII")  # seq, model hash, payload length, crc32


@pytest.fixture(scope="module")
def binaries(tmp_path_factory, compile_c) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("c-state")
    common = ("tests/flash_emu.c", "stepwise_state.c")
    return {
        "unit": compile_c(out / "test_state", "tests/test_state.c", *common, flags=("-O2",)),
        "harness": compile_c(out / "state_harness", "tests/state_harness.c", *common, flags=("-O2",)),
    }


def state(k: int, length: int) -> bytes:
    """The harness's state k: byte j = (31 k + 7 j) mod 256."""
    return bytes((31 * k + 7 * j) & 0xFF for j in range(length))


def test_c_state_unit_tests_pass(binaries):
    result = subprocess.run([str(binaries["unit"])], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout


@pytest.mark.parametrize("erase, write, length, saves", [
    (256, 8, 300, 4),    # state spans two erase blocks, 8-byte program unit (ECC flash)
    (64, 1, 200, 3),     # small blocks, byte-programmable
    (4096, 64, 40, 3),   # large sector, program unit wider than the commit record
    (128, 16, 1000, 2),  # many blocks per slot
])
def test_power_cut_at_every_flash_call_restores_old_or_new(binaries, erase, write, length, saves):
    result = subprocess.run([str(binaries["harness"]), "cuts", str(erase), str(write), str(length), str(saves)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    per_save = re.findall(r"save (\d+): (\d+) flash calls, restored old (\d+), new (\d+)", result.stdout)
    assert [int(k) for k, *_ in per_save] == list(range(1, saves + 1))
    for _, calls, old, new in per_save:
        # erase(s) + metadata/payload chunks + commit record, each cut at many points
        assert int(calls) >= 3 and int(old) > 0 and int(new) > 0
    scenarios = int(re.search(r"cuts: (\d+) scenarios", result.stdout).group(1))
    assert scenarios >= saves * 3 * 2 * 60


def parse_slot(image: bytes, offset: int, write: int) -> tuple[int, bytes, bytes]:
    data_at = offset + max(8, write)
    assert image[offset:offset + 4] == MAGIC
    assert struct.unpack_from("<HH", image, offset + 4) == (1, 0)
    assert image[offset + 8:data_at] == b"\xff" * (data_at - offset - 8)
    seq, model_hash, length, crc = META.unpack_from(image, data_at)
    payload = image[data_at + META.size:data_at + META.size + length]
    covered = image[offset:offset + 8] + image[data_at:data_at + 40] + payload
    assert crc == zlib.crc32(covered)
    return seq, model_hash, payload


@pytest.mark.parametrize("erase, write, length", [(256, 8, 300), (4096, 64, 40), (64, 1, 10)])
def test_slot_layout_matches_the_documented_format(binaries, tmp_path, erase, write, length):
    model_hash = hashlib.sha256(b"tiny model").digest()
    out = tmp_path / "flash.bin"
    result = subprocess.run([str(binaries["harness"]), "dump", str(erase), str(write), str(length),
                             model_hash.hex(), str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    base, slot, size = map(int, re.search(r"base (\d+) slot (\d+) size (\d+)", result.stdout).groups())
    image = out.read_bytes()
    assert len(image) == size
    # saves 1, 2, 3 went to slots A, B, A: A holds the newest, B the one before
    assert parse_slot(image, base, write) == (3, model_hash, state(3, length))
    assert parse_slot(image, base + slot, write) == (2, model_hash, state(2, length))
    assert image[:base] == b"\xff" * base  # nothing written outside the two slots
    assert image[base + 2 * slot:] == b"\xff" * (size - base - 2 * slot)
