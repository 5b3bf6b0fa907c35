"""Compiled helpers the generated whole-graph functions call (runtime/codegen): the parts of
glue ops that are the same for every graph (panel GEMMs with bias, softmax over one axis,
reductions, ONNX slice bounds). Elementwise chains, layout copies and padding are emitted
inline by the generator instead, because their loop nests depend on ranks and operands.

All arrays are C-contiguous float32 unless said; none of these raise on user data.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from edgeseq.runtime.kernels.flags import NJIT
from edgeseq.runtime.kernels.panels import PANEL, panel_gemv_rows_acc


@njit(**NJIT)
def linear_rows(x2, wp, n_out, bias, has_bias, alpha):
    """[M, n_out] = alpha * (x2 [M, K] W^T) + bias, W in panels (rows = output features):
    four rows of x2 share each pass over the weights."""
    m = x2.shape[0]
    width = wp.shape[0] * PANEL
    acc = np.zeros((m, width), dtype=np.float32)
    if m > 0:
        panel_gemv_rows_acc(wp, x2, np.arange(m), m, acc)
    y = np.empty((m, n_out), dtype=np.float32)
    a = np.float32(alpha)
    for r in range(m):
        ar = acc[r]
        yr = y[r]
        if has_bias:
            for j in range(n_out):
                yr[j] = a * ar[j] + bias[j]
        else:
            for j in range(n_out):
                yr[j] = a * ar[j]
    return y


@njit(**NJIT)
def softmax_axis(x3, log):
    """Softmax (log=False) or log-softmax over axis 1 of x3 [outer, D, inner]."""
    outer, d, inner = x3.shape
    y = np.empty_like(x3)
    for o in range(outer):
        for i in range(inner):
            mx = x3[o, 0, i] if d > 0 else np.float32(0.0)
            for k in range(1, d):
                mx = max(mx, x3[o, k, i])
            s = np.float32(0.0)
            for k in range(d):
                s += np.exp(x3[o, k, i] - mx)
            if log:
                ls = np.log(s)
                for k in range(d):
                    y[o, k, i] = x3[o, k, i] - mx - ls
            else:
                inv = np.float32(1.0) / s
                for k in range(d):
                    y[o, k, i] = np.exp(x3[o, k, i] - mx) * inv
    return y


@njit(**NJIT)
def reduce_axis(x3, mean):
    """Sum (mean=False) or mean over axis 1 of x3 [outer, D, inner] -> [outer, inner],
    accumulated in float64 (the reference's precision for long sums)."""
    outer, d, inner = x3.shape
    y = np.empty((outer, inner), dtype=np.float32)
    for o in range(outer):
        for i in range(inner):
            s = 0.0
            for k in range(d):
                s += x3[o, k, i]
            y[o, i] = s / d if mean and d > 0 else s
    return y


@njit(**NJIT)
def slice_bounds(dim, start, end, step):
    """(first index, count) of an ONNX Slice along an axis of size dim (Python's
    slice.indices clamping)."""
    if step > 0:
        s = start + dim if start < 0 else start
        s = min(max(s, 0), dim)
        e = end + dim if end < 0 else end
        e = min(max(e, 0), dim)
        n = (e - s + step - 1) // step if e > s else 0
    else:
        s = start + dim if start < 0 else start
        s = min(max(s, -1), dim - 1)
        e = end + dim if end < 0 else end
        e = min(max(e, -1), dim - 1)
        n = (s - e + (-step) - 1) // (-step) if s > e else 0
    return s, n


@njit(**NJIT)
def reflect_index(i, n):
    """Source index of padded position i (may be outside [0, n)) under reflect padding."""
    if n == 1:
        return 0
    while i < 0 or i >= n:
        if i < 0:
            i = -i
        if i >= n:
            i = 2 * (n - 1) - i
    return i
