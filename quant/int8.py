"""int8 weights: symmetric, one float32 scale per output row (docs/design.md, compression passes).

w ≈ scale[..., None] * q with q = round_half_even(w / scale) in [-127, 127] and
scale = max|row| / 127, stored as "<weight>.scale" of shape w.shape[:-1] ([D, rows] for
recurrent slots). Biases, peepholes and layer-norm gains stay float32.
"""
from __future__ import annotations

import numpy as np

from edgeseq.graph import Graph
from edgeseq.ops import Op
from edgeseq.quant.cast import recast
from edgeseq.quant.common import put_constant

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


def quantize_channels(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Conv1d weight [O, C/g, K] -> (int8 q [O, C/g, K], float32 scale [O, 1]): one scale per
    output channel (its C·K taps as one row). The [O, 1] shape keeps the int8 convention
    w ≈ scale[..., None] * q (one scale per (o, c) row would cost more bytes than the int8
    weights save at K = 3)."""
    w = np.asarray(w, dtype=np.float32)
    q, scale = quantize_rows(w.reshape(w.shape[0], -1))
    return q.reshape(w.shape), scale[:, None]


# A Conv1d whose per-channel int8 weights move by more than this (relative RMS) is stored as
# float16 instead. Gaussian-like weights land at 0.5-0.9e-2 (max/rms ≈ 3.5 per channel);
# silero-vad's encoder convolutions, at 1.3-2.4e-2, each changed speech decisions in int8 on
# one of the two test sets (espeak-ng speech, synthesised vowels), its STFT basis (0.5e-2)
# on neither (docs/quant.md).
CONV_MAX_REL_ERROR = 0.01
FP16_MAX = 65504.0      # beyond: the fallback keeps the weight as it is


def relative_error(w: np.ndarray, q: np.ndarray, scale: np.ndarray) -> float:
    """||scale·q - w|| / ||w|| (0 for an all-zero w)."""
    w = np.asarray(w, np.float64)
    norm = np.linalg.norm(w)
    return float(np.linalg.norm(q * np.asarray(scale, np.float64)[..., None] - w) / norm) \
        if norm > 0 else 0.0


# One scale for the whole Conv1d weight ((1, 1), 4 bytes) instead of one per output channel
# when it moves the weights by at most this factor more: a basis whose channels share their
# range (silero-vad's STFT basis: 5.11e-3 vs 5.03e-3, 1028 bytes fewer).
PER_TENSOR_SLACK = 1.05


def quantize_tensor(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Conv1d weight -> (int8 q, float32 scale (1, 1)): one scale for every tap."""
    w = np.asarray(w, dtype=np.float32)
    q, scale = quantize_rows(w.reshape(1, -1))
    return q.reshape(w.shape), scale.reshape(1, 1)


def _encode_conv(name: str, w: np.ndarray):
    q, scale = quantize_channels(w)
    err = relative_error(w, q, scale)
    if err <= CONV_MAX_REL_ERROR:
        qt, st = quantize_tensor(w)
        if relative_error(w, qt, st) <= PER_TENSOR_SLACK * err:
            return qt, st
        return q, scale
    w = np.asarray(w)
    return (w.astype(np.float16) if np.max(np.abs(w), initial=0) <= FP16_MAX else w), None


def _conv_biases_fp16(graph: Graph) -> None:
    """Store the float32 biases of the Conv1d layers whose weights the pass rewrote as float16:
    their rounding (2^-11 relative) is under a twentieth of the weights' (up to 1e-2)."""
    for node in graph.nodes:
        if node.op is not Op.CONV1D or len(node.inputs) < 3 or \
                node.inputs[2] not in graph.constants or \
                graph.constants.get(node.inputs[1], np.empty(0, np.float32)).dtype == np.float32:
            continue
        b = graph.constants[node.inputs[2]]
        if b.dtype == np.float32 and np.max(np.abs(b), initial=0) <= FP16_MAX:
            put_constant(graph, node.inputs[2], b.astype(np.float16))


def apply(graph: Graph, *, linear: bool = True, conv: bool = True) -> tuple[Graph, list[dict]]:
    """int8 copy of `graph`: recurrent matrices (w_x, w_h or its factors, w_proj) and, with
    `linear`, the constant weights of MatMul/Gemm, and with `conv` too, of Conv1d (per
    output channel, `quantize_channels`, or one scale when that is as good,
    `quantize_tensor`; float16 where int8 would move the weights by more than
    CONV_MAX_REL_ERROR; their biases float16)."""
    return recast(graph, _encode, from_dtypes=("float32", "float16"), pass_name="int8",
                  linear=linear, conv_encode=_encode_conv if conv else None,
                  finish=_conv_biases_fp16 if conv else None)
