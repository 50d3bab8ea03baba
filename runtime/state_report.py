"""What ``stepwise state show|clear`` reports: the state directory read without the daemon.

``show_state`` never changes a file (a corrupt checkpoint is reported, not moved);
``clear_state`` moves the checkpoints to ``<state-dir>/cleared/`` (never deletes them), so
the next ``serve`` starts fresh. ``format_report`` turns ``show_state``'s dict into lines.
"""
from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from runtime.contract import MANIFEST_NAME, load_contract
from runtime.errors import ConfigError, StateCorruptError
from runtime.store import clear_state_dir, describe_state_dir


def show_state(state_dir: Path, artifacts: Path) -> dict[str, Any]:
    """``describe_state_dir`` of ``state_dir``, matched against the manifest in
    ``artifacts`` if there is one (``manifest``: its path or None)."""
    check_state_dir(state_dir)
    models, states, manifest = _current_model(artifacts)
    info = describe_state_dir(state_dir, models=models, states=states)
    info["manifest"] = manifest
    return info


def check_show(info: dict[str, Any]) -> None:
    """Raise ``StateCorruptError`` when checkpoint files exist but none is valid."""
    if info["files"] and info["checkpoint"] is None:
        problems = "; ".join(f"{Path(f['file']).name}: {f['error']}" for f in info["files"])
        raise StateCorruptError(f"no valid checkpoint in {info['state_dir']}: {problems}")


def clear_state(state_dir: Path) -> list[tuple[Path, Path]]:
    """Move the checkpoints aside; the (from, to) pairs (empty: nothing to clear)."""
    check_state_dir(state_dir)
    try:
        return clear_state_dir(state_dir)
    except OSError as e:
        raise StateCorruptError(f"cannot clear {state_dir}: {e}") from None


def check_state_dir(state_dir: Path) -> None:
    if state_dir.exists() and not state_dir.is_dir():
        raise ConfigError(f"--state-dir {state_dir} is not a directory")


def _current_model(artifacts: Path):
    """(variant label -> sha256, states, manifest path) or (None, None, None) without one."""
    if not (artifacts / MANIFEST_NAME).exists():
        return None, None, None
    contract = load_contract(artifacts)
    models = {f"variant {name}": v.sha256 for name, v in contract.variants.items()}
    return models, contract.states, str(artifacts / MANIFEST_NAME)


def format_report(info: dict[str, Any]) -> list[str]:
    """The human-readable ``state show`` lines."""
    lines = [f"state dir:       {info['state_dir']}"]
    if not info["exists"]:
        return lines + ["checkpoint:      none (the directory does not exist)"]
    ckpt = info["checkpoint"]
    if ckpt is None:
        lines.append("checkpoint:      none")
    else:
        lines += _checkpoint_lines(ckpt, info["manifest"])
    for entry in info["files"]:
        if entry is not ckpt:
            lines.append(_file_line(entry))
    if info["temp_files"]:
        lines.append(f"temp files:      {', '.join(info['temp_files'])} (removed on restore)")
    for key in ("rejected", "cleared"):
        names = info[key]
        if names:
            shown = ", ".join(names[-5:]) + (", ..." if len(names) > 5 else "")
            lines.append(f"{key + ':':<17}{len(names)} in {Path(info['state_dir']) / key}: {shown}")
    return lines


def _checkpoint_lines(c: dict[str, Any], manifest: str | None) -> list[str]:
    when = datetime.datetime.fromtimestamp(c["timestamp"], datetime.timezone.utc)
    if "streams" in c:  # a many-stream checkpoint: every stream's state by id
        shown = ", ".join(c["stream_ids"]) + (", ..." if c["streams"] > len(c["stream_ids"]) else "")
        return [f"checkpoint:      {c['file']} ({c['bytes']} bytes, format {c['format_version']})",
                f"written:         {when:%Y-%m-%d %H:%M:%S} UTC ({format_age(c['age_seconds'])})",
                f"model sha256:    {c['model_sha256']}",
                f"current model:   {_match_text(c.get('match'), manifest)}",
                f"samples seen:    {c['samples_seen']}",
                f"streams:         {c['streams']}: {shown}"]
    seq = "none" if c["last_frame_seq"] < 0 else str(c["last_frame_seq"])
    lines = [
        f"checkpoint:      {c['file']} ({c['bytes']} bytes, format {c['format_version']})",
        f"written:         {when:%Y-%m-%d %H:%M:%S} UTC ({format_age(c['age_seconds'])})",
        f"model sha256:    {c['model_sha256']}",
        f"current model:   {_match_text(c.get('match'), manifest)}",
        f"samples seen:    {c['samples_seen']}",
        f"last frame seq:  {seq}",
        f"lanes:           {c['lanes']}",
        "steps:           " + ", ".join(f"lane {i}: {s}" for i, s in enumerate(c["steps"])),
    ]
    lines += [f"counter:         {k} = {v}" for k, v in c["extra"].items()]
    lines.append("tensors:         L2 norm" + (" (per lane)" if c["lanes"] > 1 else ""))
    labels = [f"{t['name']} {t['shape']}" for t in c["tensors"]]
    width = max(map(len, labels), default=0) + 2
    for label, t in zip(labels, c["tensors"]):
        per_lane = ", ".join(f"{v:.6g}" for v in t["l2_per_lane"])
        lines.append(f"  {label:<{width}}{t['l2']:.6g}"
                     + (f" ({per_lane})" if c["lanes"] > 1 else ""))
    return lines


def _match_text(match: dict[str, Any] | None, manifest: str | None) -> str:
    if manifest is None:
        return "unknown (no manifest; pass --artifacts)"
    if match["matches"]:
        return f"yes, {match['model']} of {manifest}"
    return f"NO ({match['detail']}); serve would move it aside and start fresh"


def _file_line(entry: dict[str, Any]) -> str:
    if entry["valid"]:
        return f"older:           {entry['file']} ({entry['samples_seen']} samples seen)"
    return f"unusable:        {entry['file']} ({entry['error']})"


def format_age(seconds: float) -> str:
    if seconds < 0:
        return "in the future: check the clock"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f} s ago"
    if s < 3600:
        return f"{s // 60} min {s % 60} s ago"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min ago"
    return f"{s // 86400} d {s % 86400 // 3600} h ago"
