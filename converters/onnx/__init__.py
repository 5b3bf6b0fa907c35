"""ONNX converter: `convert(path_or_model, *, fix=None, shapes=None) -> Graph`."""
from __future__ import annotations

from edgeseq.converters.onnx.converter import convert, parse_fix, parse_shape

__all__ = ["convert", "parse_fix", "parse_shape"]
