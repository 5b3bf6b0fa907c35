"""ONNX converter: `convert(path_or_model, *, fix=None, shapes=None) -> Graph`."""
from __future__ import annotations

from edgeseq.converters.onnx.converter import convert, parse_fix, parse_shape
from edgeseq.converters.onnx import loops as _loops  # noqa: F401  (registers Loop, ReverseSequence)

__all__ = ["convert", "parse_fix", "parse_shape"]
