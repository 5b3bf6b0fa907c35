"""fp16 weights: IEEE half, round-to-nearest-even (numpy's float32 -> float16 cast).

Biases, peepholes and layer-norm gains stay float32. A weight beyond the half range
(|w| > 65504) is refused rather than turned into inf.
"""
from __future__ import annotations

import numpy as np

from edgeseq.errors import ShapeError
from edgeseq.graph import Graph
from edgeseq.quant.cast import recast

HALF_MAX = float(np.finfo(np.float16).max)


def _encode(name: str, w: np.ndarray):
    w = np.asarray(w, dtype=np.float32)
    big = float(np.max(np.abs(w))) if w.size else 0.0
    if not np.isfinite(big) or big > HALF_MAX:
        raise ShapeError(f"weight '{name}': max |w| = {big:g} does not fit float16 "
                         f"(max {HALF_MAX:g}); use --weights int8 instead")
    return w.astype(np.float16), None


def apply(graph: Graph, *, linear: bool = True) -> tuple[Graph, list[dict]]:
    """fp16 copy of `graph` (float32 layer matrices only; int8 weights are left as they are)."""
    return recast(graph, _encode, from_dtypes=("float32",), pass_name="fp16", linear=linear)
