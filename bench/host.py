"""The machine the bench ran on, and what each environment installs on disk."""
from __future__ import annotations

import os
import platform
from pathlib import Path

MB = 1024 * 1024
# What `stepwise serve` imports on the device (the rest of the env is pip, pytest...).
RUNTIME_PACKAGES = ("tflite_runtime", "numpy", "serial", "pyserial", "click")


def machine_info() -> dict:
    """CPU model (``/proc/cpuinfo``), core counts, kernel, Python, load average."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "kernel": platform.release(), "machine": platform.machine(),
            "python": platform.python_version(), "load_average": list(os.getloadavg())}


def tree_bytes(path: Path) -> int:
    """Apparent size of every file under ``path`` (symlinks not followed)."""
    if path.is_file():
        return path.lstat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python*/site-packages"))
    if not found:
        raise FileNotFoundError(f"no lib/python*/site-packages under {venv}")
    return found[0]


def grouped_bytes(site: Path, prefixes: tuple[str, ...]) -> int:
    """Bytes of the top-level entries of ``site`` whose lower-cased name starts with a prefix."""
    return sum(tree_bytes(p) for p in site.iterdir() if p.name.lower().startswith(prefixes))


def installed_sizes(device_venv: Path, build_venv: Path) -> dict:
    """The device env's whole site-packages next to TensorFlow's share of the build env."""
    dev, build = site_packages(device_venv), site_packages(build_venv)
    return {
        "device_site_packages_mb": tree_bytes(dev) / MB,
        "device_interpreter_mb": grouped_bytes(dev, ("tflite_runtime",)) / MB,
        "device_numpy_mb": grouped_bytes(dev, ("numpy",)) / MB,
        "device_runtime_deps_mb": grouped_bytes(dev, RUNTIME_PACKAGES) / MB,
        "tensorflow_keras_mb": grouped_bytes(build, ("tensorflow", "keras")) / MB,
        "build_site_packages_mb": tree_bytes(build) / MB,
        "device_site_packages": str(dev), "build_site_packages": str(build),
    }
