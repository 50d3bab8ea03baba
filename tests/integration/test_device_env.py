"""The runtime on a device install: no TensorFlow, tflite-runtime with numpy<2, same outputs."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from runtime.engine import Engine
from runtime.replay import replay

ROOT = Path(__file__).resolve().parents[2]
DEVICE_PYTHON = ROOT / ".venv-device" / "bin" / "python"

PROBE = r"""
import json, sys
try:
    import tensorflow
    print(json.dumps({"tensorflow": "importable"})); sys.exit(0)
except ModuleNotFoundError:
    pass
import numpy as np
from runtime.engine import Engine
from runtime.replay import replay
with np.load(sys.argv[2] + "/test_data.npz", allow_pickle=False) as z:
    X = z["X"][:40]
engine = Engine.load(sys.argv[2], variant=sys.argv[1])
ys = replay(engine, X).as_array()
print(json.dumps({"tensorflow": "missing", "backend": engine.backend, "numpy": np.__version__,
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")),
                  "y": ys.tolist()}))
"""


def _device_run(variant: str, artifacts: Path) -> dict:
    out = subprocess.run([str(DEVICE_PYTHON), "-c", PROBE, variant, str(artifacts)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_engine_runs_without_tensorflow_and_matches_ai_edge_litert(tiny_artifacts):
    with np.load(tiny_artifacts / "test_data.npz", allow_pickle=False) as z:
        X = z["X"][:40]
    for variant in ("float32", "int8"):
        device = _device_run(variant, tiny_artifacts)
        assert device["tensorflow"] == "missing" and device["loaded"] == []
        assert device["backend"] == "tflite_runtime" and device["numpy"].startswith("1.")
        here = Engine.load(tiny_artifacts, variant=variant, backend="ai_edge_litert")
        ours = replay(here, X).as_array()
        theirs = np.asarray(device["y"], np.float32)
        assert theirs.shape == ours.shape
        tolerance = 1e-6 if variant == "float32" else 1e-2  # int8 kernels may differ by a quantum
        assert np.abs(theirs - ours).max() <= tolerance
