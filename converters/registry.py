"""Which converter reads which file: suffix -> "module:function", imported only when used."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from edgeseq.errors import UnsupportedModelError
from edgeseq.graph import Graph

# Each converter function takes (path, **options) and returns a validated Graph.
CONVERTERS: dict[str, str] = {
    ".onnx": "edgeseq.converters.onnx:convert",
    ".tflite": "edgeseq.converters.tflite:convert",
    ".pt2": "edgeseq.converters.torch:convert_exported",
    ".pt": "edgeseq.converters.torch:convert_state_dict",
    ".pth": "edgeseq.converters.torch:convert_state_dict",
    ".safetensors": "edgeseq.converters.torch:convert_state_dict",
}


def converter_for(path: str | Path):
    """The convert function for a model file, chosen by its suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in CONVERTERS:
        raise UnsupportedModelError(
            f"{path}: no converter for '{suffix}' files; supported: {sorted(CONVERTERS)}")
    module, fn = CONVERTERS[suffix].split(":")
    return getattr(importlib.import_module(module), fn)


def convert(path: str | Path, **options: Any) -> Graph:
    """Convert a model file into a validated edgeseq Graph."""
    return converter_for(path)(path, **options)
