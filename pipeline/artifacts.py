"""The build host's files of an artifacts folder, beside the manifest: their names and
the Keras model loader (``stepwise build`` writes them, ``stepwise verify`` reads them)."""
from __future__ import annotations

import os
from pathlib import Path

import keras

from runtime.errors import DataError

TEST_DATA = "test_data.npz"  # X [m, T, F] raw (un-normalised), y [m], feature_names
MODEL_FILE = "model.keras"


def load_keras_model(path: str | os.PathLike) -> keras.Model:
    """A ``.keras`` / ``.h5`` model (safe mode, not compiled); ``DataError`` if unreadable."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"model file {path} does not exist")
    if path.suffix not in (".keras", ".h5"):
        raise DataError(f"{path}: expected a Keras model file (.keras or .h5)")
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # keras raises many types for unreadable files
        raise DataError(f"{path}: cannot load the Keras model: {type(e).__name__}: {e}") from None
