"""Which converter reads which file: suffix -> "module:function", imported only when used."""
from __future__ import annotations

import importlib
import inspect
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
    fn = converter_for(path)
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        # an option meant for another format (e.g. --arch on a .tflite) is a user error
        unknown = sorted(k for k, v in options.items() if k not in params and v is not None)
        if unknown:
            raise UnsupportedModelError(
                f"{path}: option(s) {unknown} do not apply to '{Path(path).suffix.lower()}' "
                f"models; this converter takes {sorted(list(params)[1:])}")
    return fn(path, **options)
