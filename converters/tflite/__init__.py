"""TFLite -> edgeseq converter: `convert(path) -> Graph`.

Reads the flatbuffer with the schema's generated object API (from `ai-edge-litert`), maps
UNIDIRECTIONAL_SEQUENCE_LSTM / BIDIRECTIONAL_SEQUENCE_LSTM / LSTM (all optional operands:
CIFG, peephole, projection, layer norm, clips) and the glue ops around them in converted
Keras models. Handlers are registered per builtin operator in `lstm.py` and `glue.py`.
"""
from __future__ import annotations

from edgeseq.converters.tflite.convert import convert
from edgeseq.converters.tflite import loops as _loops  # noqa: F401  (registers WHILE)
from edgeseq.converters.tflite import norms as _norms  # noqa: F401  (LayerNorm, Conv1D, ARG_MAX)
from edgeseq.converters.tflite.slots import LstmSlot

__all__ = ["convert", "LstmSlot"]
