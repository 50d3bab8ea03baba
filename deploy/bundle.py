"""``make bundle``: one archive that installs stepwise on a device with no network.

    python deploy/bundle.py --artifacts artifacts --out build/bundle \\
        --cache build/wheels --target cp311-x86_64 --target cp313-aarch64 ...

The archive ``stepwise-edge-VERSION-bundle.tar.gz`` holds one folder with:

- ``wheels/``: the project wheel and, for every target (CPython version and machine),
  the wheels of the device requirements (``pip download``, binary only);
- ``requirements.txt``: every one of them pinned, with its sha256 and an environment
  marker naming the targets it is for, so ``pip install --require-hashes`` takes exactly
  these files;
- ``artifacts/``: ``manifest.json`` and the model files it lists (checked against their
  sha256 first);
- ``deploy/``: the systemd unit, the udev rule, the logrotate file; ``install.sh``.

Downloads are cached per target in ``--cache`` and reused while the requirements stay
the same. Needs the build environment's Python (``packaging``, ``tomllib``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

log = logging.getLogger("bundle")
ROOT = Path(__file__).resolve().parent.parent
DEPLOY_FILES = ("stepwise.service", "99-stepwise.rules", "stepwise.logrotate")
SOURCES = ("pipeline", "runtime", "firmware_bridge", "stepwise_cli", "pyproject.toml", "README.md")
GLIBC_MINORS = range(17, 37)  # manylinux_2_17 .. manylinux_2_36 (Debian 12, Raspberry Pi OS 12)


@dataclass(frozen=True)
class Target:
    """A device Python: ``cp313-aarch64`` is CPython 3.13 on 64-bit ARM Linux."""

    python: str  # "3.13"
    machine: str  # "x86_64", "aarch64"

    @classmethod
    def parse(cls, text: str) -> "Target":
        tag, _, machine = text.partition("-")
        if not (tag.startswith("cp") and tag[2:].isdigit() and len(tag) >= 4 and machine):
            raise SystemExit(f"bundle: target {text!r} is not like cp311-x86_64 or cp313-aarch64")
        return cls(f"{tag[2]}.{tag[3:]}", machine)

    @property
    def name(self) -> str:
        return f"cp{self.python.replace('.', '')}-{self.machine}"

    def environment(self) -> dict[str, str]:
        """PEP 508 marker variables of this target."""
        return {"python_version": self.python, "python_full_version": f"{self.python}.0",
                "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
                "platform_machine": self.machine, "implementation_name": "cpython",
                "platform_python_implementation": "CPython"}

    def marker(self) -> str:
        return f'(python_version == "{self.python}" and platform_machine == "{self.machine}")'

    def pip_args(self) -> list[str]:
        platforms = [f"manylinux_2_{m}_{self.machine}" for m in GLIBC_MINORS]
        platforms += [f"manylinux2014_{self.machine}", f"linux_{self.machine}"]
        return ["--only-binary=:all:", "--implementation", "cp",
                "--python-version", self.python.replace(".", ""),
                *(arg for p in platforms for arg in ("--platform", p))]


def device_requirements(pyproject: dict, target: Target) -> list[str]:
    """The project's own and its ``device`` requirements that apply on ``target``."""
    project = pyproject["project"]
    found = []
    for text in [*project["dependencies"], *project["optional-dependencies"]["device"]]:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate(target.environment()):
            req.marker = None
            found.append(str(req))
    return found


def download(requirements: list[str], target: Target, cache: Path) -> list[Path]:
    """The wheels of ``requirements`` and their dependencies for ``target`` (cached)."""
    folder = cache / target.name
    stamp = folder / "requirements.json"
    if stamp.exists() and json.loads(stamp.read_text()) == requirements:
        log.info("wheels for %s: cached in %s", target.name, folder)
    else:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        log.info("wheels for %s: downloading %s", target.name, ", ".join(requirements))
        _pip("download", "--quiet", "--dest", str(folder), *target.pip_args(), *requirements)
        stamp.write_text(json.dumps(requirements))
    return sorted(folder.glob("*.whl"))


def build_project_wheel(dest: Path) -> Path:
    """The project's wheel, built from a copy of the sources (the checkout stays clean)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in SOURCES:
            path = ROOT / name
            if path.is_dir():
                shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            elif path.exists():
                shutil.copy2(path, src / name)
        _pip("wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", str(dest), str(src))
    wheels = sorted(dest.glob("stepwise_edge-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"bundle: expected one project wheel in {dest}, found {len(wheels)}")
    return wheels[0]


def requirements_txt(project_wheel: Path, per_target: dict[Target, list[Path]]) -> str:
    """Pinned, hashed lines; each with the marker of the targets that need it."""
    groups: dict[tuple[str, str], tuple[set[str], list[Target]]] = {}
    for target, wheels in per_target.items():
        for wheel in wheels:
            name, version, _, _ = parse_wheel_filename(wheel.name)
            hashes, targets = groups.setdefault((str(name), str(version)), (set(), []))
            hashes.add(_sha256(wheel))
            if target not in targets:
                targets.append(target)
    name, version, _, _ = parse_wheel_filename(project_wheel.name)
    lines = ["# Device requirements, pinned with hashes: pip install --no-index --find-links wheels "
             "--require-hashes -r requirements.txt",
             f"{name}=={version} --hash=sha256:{_sha256(project_wheel)}"]
    for (name, version), (hashes, targets) in sorted(groups.items()):
        marker = "" if len(targets) == len(per_target) else " or ".join(t.marker() for t in targets)
        if marker:
            Marker(marker)  # a malformed marker fails here, not on the device
            marker = " ; " + marker
        lines.append(f"{canonicalize_name(name)}=={version}{marker} \\\n    "
                     + " \\\n    ".join(f"--hash=sha256:{h}" for h in sorted(hashes)))
    return "\n".join(lines) + "\n"


def copy_artifacts(artifacts: Path, dest: Path) -> list[str]:
    """``manifest.json`` and its model files, each checked against the manifest's sha256."""
    manifest_path = artifacts / "manifest.json"
    if not manifest_path.is_file():
        raise SystemExit(f"bundle: {manifest_path} does not exist: run make build first")
    manifest = json.loads(manifest_path.read_text())
    dest.mkdir(parents=True)
    files = []
    for name, variant in sorted(manifest["variants"].items()):
        path = artifacts / variant["file"]
        if not path.is_file() or _sha256(path) != variant["sha256"]:
            raise SystemExit(f"bundle: {path} (variant {name}) is missing or differs from the manifest")
        shutil.copy2(path, dest / variant["file"])
        files.append(variant["file"])
    shutil.copy2(manifest_path, dest / "manifest.json")
    return files


def make_bundle(artifacts: Path, out: Path, cache: Path, targets: list[Target]) -> Path:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    name, version = pyproject["project"]["name"], pyproject["project"]["version"]
    top = f"{name}-{version}"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        stage = Path(tmp) / top
        (stage / "deploy").mkdir(parents=True)
        (stage / "wheels").mkdir()
        project_wheel = build_project_wheel(stage / "wheels")
        per_target = {t: download(device_requirements(pyproject, t), t, cache) for t in targets}
        for wheels in per_target.values():
            for wheel in wheels:
                shutil.copy2(wheel, stage / "wheels" / wheel.name)
        (stage / "requirements.txt").write_text(requirements_txt(project_wheel, per_target))
        models = copy_artifacts(artifacts, stage / "artifacts")
        for f in DEPLOY_FILES:
            shutil.copy2(ROOT / "deploy" / f, stage / "deploy" / f)
        shutil.copy2(ROOT / "deploy" / "install.sh", stage / "install.sh")
        (stage / "install.sh").chmod(0o755)
        archive = out / f"{top}-bundle.tar.gz"
        partial = archive.with_suffix(".partial")
        with tarfile.open(partial, "w:gz", compresslevel=1) as tar:
            tar.add(stage, arcname=top)
        partial.replace(archive)
    log.info("bundle: %s (%.1f MB; targets %s; models %s)", archive, archive.stat().st_size / 1e6,
             ", ".join(t.name for t in targets), ", ".join(models))
    return archive


def _pip(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bundle: pip {args[0]} failed:\n{proc.stderr.strip()[-3000:]}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--out", type=Path, default=Path("build/bundle"))
    parser.add_argument("--cache", type=Path, default=Path("build/wheels"))
    parser.add_argument("--target", action="append", default=[],
                        help="cpXY-MACHINE, e.g. cp311-x86_64, cp313-aarch64 (repeatable; "
                             "default: this Python on this machine)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    own = f"cp{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}"
    targets = [Target.parse(t) for t in args.target] or [Target.parse(own)]
    print(make_bundle(args.artifacts, args.out, args.cache, targets))


if __name__ == "__main__":
    main()
