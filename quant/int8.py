"""int8 weights: symmetric, one float32 scale per output row (docs/design.md, compression passes).

w ≈ scale[..., None] * q with q = round_half_even(w / scale) in [-127, 127] and
scale = max|row| / 127, stored as "<weight>.scale" of shape w.shape[:-1] ([D, rows] for
recurrent slots). Biases, peepholes and layer-norm gains stay float32.
"""
from __future__ import annotations

import numpy as np

from edgeseq.graph import Graph
from edgeseq.quant.cast import recast

QMAX = 127   # symmetric: -128 is never used, so q and -q are both representable


def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 q, float32 scale) with w ≈ scale[..., None] * q, one scale per last-axis row."""
    w = np.asarray(w, dtype=np.float32)
    amax = np.max(np.abs(w), axis=-1)
    # NOTE: an all-zero row (e.g. the ignored CIFG gate) gets scale 1 so that q = 0 exactly
    scale = np.where(amax > 0, amax / QMAX, 1.0).astype(np.float32)
    q = np.rint(w / scale[..., None])
    return np.clip(q, -QMAX, QMAX).astype(np.int8), scale


def _encode(name: str, w: np.ndarray):
    return quantize_rows(w)


def apply(graph: Graph, *, linear: bool = True) -> tuple[Graph, list[dict]]:
    """int8 copy of `graph`: recurrent matrices (w_x, w_h or its factors, w_proj) and, with
    `linear`, the constant weights of MatMul/Gemm/Conv1d."""
    return recast(graph, _encode, from_dtypes=("float32", "float16"), pass_name="int8",
                  linear=linear)
