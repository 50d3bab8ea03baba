"""``python -m bench.fuzz [--artifacts DIR] [--inputs N] [--seed S]``: the fuzz row.

Feeds each decoder of untrusted input a seeded mix of random, near-valid and adversarial
inputs and times every one: the text line parser (lines up to the line cap and past it),
the COBS frame decoder (random bytes and damaged frames), the checkpoint reader (random
bytes and damaged checkpoints, some with the CRC recomputed) and the manifest loader
(damaged manifests, as JSON text). Prints a markdown table: inputs per second per decoder
and the slowest single input in microseconds (the ten slowest re-timed, best of five, so
that a preempted run does not count). The bar: no text line up to the cap takes over 1 ms.
"""
from __future__ import annotations

import argparse
import json
import random
import struct
import time
import zlib
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from firmware_bridge import cobs
from firmware_bridge.text import MAX_LINE, TextParser
from runtime.contract import ModelContract, StateSpec
from runtime.errors import StepwiseError
from runtime.snapshot import StateSnapshot
from runtime.store_format import encode_checkpoint, parse_checkpoint

LINE_BAR_US = 1000.0
NAMES = ("ax", "ay", "az")
_LINE_UNITS = [b"11111,", b"1", b"1.", b"1e1", b"+-", b" ,\t", b" ", b":", b" : ", b":1 ", b"ax:1 ",
               b"ax,", b"nan,", b"1023,512,", b"-0.5e-3 ", b"\xff", b"#"]


def text_lines(rng: random.Random, n: int) -> list[bytes]:
    """Random bytes, near-valid rows and long repetitive lines up to (and past) the cap."""
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            out.append(rng.randbytes(rng.randint(0, 80)))
        elif kind == 1:
            values = [rng.choice(["1", "-2.5", ".5", "1e39", "nan", "x", "ax:", "ay:0", ""]) for _ in range(3)]
            out.append(rng.choice([",", " ", "\t", ", "]).join(values).encode())
        else:
            unit = rng.choice(_LINE_UNITS)
            size = rng.choice([MAX_LINE, MAX_LINE - 1, rng.randint(1, MAX_LINE), MAX_LINE + 50])
            out.append((unit * (size // len(unit) + 1))[:size - 1] + rng.choice([b"x", b"1", b"mV", b" "]))
    return out


def cobs_streams(rng: random.Random, n: int) -> list[bytes]:
    good = cobs.encode_frame(cobs.SAMPLE, 1, cobs.sample_payload([0.25, -0.5, 0.125]))
    out = []
    for i in range(n):
        if i % 2:
            out.append(rng.randbytes(rng.randint(0, 600)))
        else:
            frame = bytearray(good * rng.randint(1, 4))
            for _ in range(rng.randint(1, 4)):
                frame[rng.randrange(len(frame))] = rng.randrange(256)
            out.append(bytes(frame))
    return out


def _recrc(data: bytearray) -> bytes:
    if len(data) >= 88:
        struct.pack_into("<I", data, 84, zlib.crc32(bytes(data[88:]), zlib.crc32(bytes(data[:84]))))
    return bytes(data)


def checkpoints(rng: random.Random, n: int) -> list[bytes]:
    specs = (StateSpec("h", "h", "h_out", (32,), "lstm", "h"), StateSpec("c", "c", "c_out", (32,), "lstm", "c"))
    good = encode_checkpoint(StateSnapshot(
        states={"h": np.ones((1, 32), np.float32), "c": np.zeros((1, 32), np.float32)}, steps=np.array([3]),
        samples_seen=8, last_frame_seq=7, timestamp=1.7e9, extra={"seq": 2}), "0" * 64, specs)
    out = []
    for i in range(n):
        data = bytearray(good if i % 4 else rng.randbytes(rng.randint(0, 400)))
        for _ in range(rng.randint(1, 4)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[:rng.randint(0, len(data))]
        out.append(_recrc(data) if i % 2 else bytes(data))
    return out


def _mutate(value, rng: random.Random):
    if isinstance(value, dict) and value and rng.random() < 0.7:
        key = rng.choice(sorted(value))
        return {**value, key: _mutate(value[key], rng)}
    if isinstance(value, list) and value and rng.random() < 0.7:
        i = rng.randrange(len(value))
        return value[:i] + [_mutate(value[i], rng)] + value[i + 1:]
    return rng.choice([None, True, 0, -1, 2**40, 1.5, float("inf"), "", "x", [], {}, ["x"], "../x"])


def manifests(rng: random.Random, n: int, original: dict) -> list[bytes]:
    return [json.dumps(_mutate(_mutate(original, rng), rng)).encode() for _ in range(n)]


def _load_manifest(raw: bytes) -> None:
    ModelContract.from_dict(json.loads(raw))


def time_each(decode: Callable[[bytes], object], inputs: Iterable[bytes]) -> dict:
    """Run ``decode`` on every input: rate, slowest single input (re-timed), escapes."""
    inputs = list(inputs)
    times, escapes = [], []
    started = time.perf_counter()
    for data in inputs:
        t0 = time.perf_counter_ns()
        try:
            decode(data)
        except StepwiseError:
            pass
        except Exception as e:  # noqa: BLE001  (what the fuzz row exists to find)
            escapes.append(f"{type(e).__name__}: {e}")
        times.append(time.perf_counter_ns() - t0)
    total = time.perf_counter() - started
    slowest = sorted(range(len(inputs)), key=times.__getitem__)[-10:]
    retimed = [(_best_of(decode, inputs[i], 5), len(inputs[i])) for i in slowest]
    worst_ns, worst_len = max(retimed)
    return {"inputs": len(inputs), "per_second": len(inputs) / total, "slowest_us": worst_ns / 1e3,
            "slowest_bytes": worst_len, "escapes": escapes[:5], "escaped": len(escapes)}


def _best_of(decode, data: bytes, repeats: int) -> int:
    best = None
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        try:
            decode(data)
        except Exception:  # noqa: BLE001
            pass
        took = time.perf_counter_ns() - t0
        best = took if best is None else min(best, took)
    return best


def run_fuzz(n: int, seed: int, manifest: dict | None) -> dict[str, dict]:
    rng = random.Random(seed)
    parser = TextParser(NAMES)
    decoders = {
        "text line parser": (parser.parse_line, text_lines(rng, n)),
        "COBS frame decoder": (lambda data: cobs.FrameDecoder(feature_count=3).feed(data + b"\0"),
                               cobs_streams(rng, n)),
        "checkpoint reader": (parse_checkpoint, checkpoints(rng, n)),
    }
    if manifest is not None:
        decoders["manifest loader"] = (_load_manifest, manifests(rng, max(n // 10, 10), manifest))
    return {name: time_each(decode, inputs) for name, (decode, inputs) in decoders.items()}


def table(results: dict[str, dict]) -> str:
    lines = ["| decoder | inputs | inputs/s | slowest single input | other errors |", "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['inputs']:,} | {r['per_second']:,.0f} | {r['slowest_us']:,.1f} us "
                     f"({r['slowest_bytes']:,} bytes) | {r['escaped']} |")
    line = results["text line parser"]
    verdict = "pass" if line["slowest_us"] <= LINE_BAR_US and not line["escaped"] else "MISSED"
    lines.append("")
    lines.append(f"bar: no text line up to the cap over {LINE_BAR_US:,.0f} us: {verdict} "
                 f"(slowest {line['slowest_us']:,.1f} us)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.splitlines()[0])
    p.add_argument("--artifacts", type=Path, default=None, help="Artifacts folder (its manifest is fuzzed).")
    p.add_argument("--inputs", type=int, default=20_000, help="Inputs per decoder (default 20000).")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    manifest_path = args.artifacts / "manifest.json" if args.artifacts else None
    manifest = json.loads(manifest_path.read_text()) if manifest_path and manifest_path.is_file() else None
    results = run_fuzz(args.inputs, args.seed, manifest)
    print(table(results))
    bad = sum(r["escaped"] for r in results.values())
    for name, r in results.items():
        for e in r["escapes"]:
            print(f"{name}: escaped {e}")
    return 1 if bad or results["text line parser"]["slowest_us"] > LINE_BAR_US else 0


if __name__ == "__main__":
    raise SystemExit(main())
