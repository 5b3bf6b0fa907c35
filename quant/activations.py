"""Activation precision of the int8 products: which integer form the runtime's int8 kernels
multiply the activations in, recorded in the graph metadata (and so in the artifact).

- "int16": each vector (x_t, h_{t-1}) quantised to int16 per vector (step max|v|/32767) and
  multiplied by the int8 weights (int16 pairs); its error is the int8 weights' own (docs/quant.md).
- "int8": quantised to int8 per vector (step max|v|/127, symmetric), products u8/s8 × s8 with
  the CPU's dot-product instructions (VNNI, vpmaddubsw, sdot); about onnxruntime's
  DynamicQuantizeLSTM error and speed. The float64 reference defines its bits
  (`edgeseq.reference.int8_product`); it covers the slots of
  `edgeseq.reference.INT8_ACTIVATION_SLOTS` (which matrices of which recurrent ops).
- "int8_asymmetric": int8 with a zero point per vector (step (max - min)/255 over the range
  widened to hold 0, q in [-128, 127]): TFLite's hybrid kernels with
  asymmetric_quantize_inputs (`edgeseq.reference.quantize_activations8_asymmetric`); the same
  kernels, each row's integer sum less zp·Σ_k w[j, k].
- "int7": symmetric with |q| <= 63 (step max|v|/63): ~2x int8's error, but on AVX2-only
  CPUs u = q + 64 lets vpmaddubsw run onnxruntime's own 3 instructions per 32 bytes without
  saturating (exact); VNNI CPUs run their int8 kernels on it, so the bits are the same
  everywhere (`edgeseq.reference.int7_product`). An explicit choice, never a default.
"""
from __future__ import annotations

import numpy as np

from edgeseq.errors import GraphError
from edgeseq.graph import Graph
from edgeseq.quant.common import note_pass
from edgeseq.reference import INT7, INT8_ACTIVATIONS, INT8_ACTIVATION_SLOTS, INT8_ASYMMETRIC

CHOICES = ("int16", "int8", INT8_ASYMMETRIC, INT7)
DEFAULT = "int16"


def apply(graph: Graph, activations: str) -> Graph:
    """`graph` (a copy) with its int8 products' activation precision set."""
    if activations not in CHOICES:
        raise GraphError(f"activations must be one of {list(CHOICES)}, got {activations!r}")
    out = graph.copy()
    out.metadata = dict(out.metadata)
    out.metadata[INT8_ACTIVATIONS] = activations
    note_pass(out, {"pass": "activations", "activations": activations})
    return out


def has_int8_products(graph: Graph) -> bool:
    """Whether some recurrent node holds an int8 weight in a slot the option applies to."""
    return any(graph.constants[n.weights[s]].dtype == np.int8 for n in graph.nodes
               for s in INT8_ACTIVATION_SLOTS.get(n.op, ()) if s in n.weights)
