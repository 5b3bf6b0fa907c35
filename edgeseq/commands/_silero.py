"""Where the silero-vad package keeps its ONNX models, found without importing it.

`import silero_vad` imports torch (its __init__ loads the PyTorch models too); the ONNX files
are plain package data, so the demo and the benchmark locate them through the import system's
spec, which does not execute the package."""
from __future__ import annotations

import importlib.util
from pathlib import Path

INSTALL = "pip install --no-deps silero-vad==6.2.3"


def silero_onnx(name: str = "silero_vad_16k_sequence.onnx") -> Path:
    """Path of one of silero-vad's ONNX files; FileNotFoundError naming the install if absent."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the silero-vad package is not installed ({INSTALL})")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not in the installed silero-vad package ({INSTALL})")
    return path
