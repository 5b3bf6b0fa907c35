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


# NOTE: generated code allocates and copies through these helpers instead of np.empty(...)
# and `a[...] = b`: a slice assignment compiles NumPy's broadcast-error formatting (unicode
# machinery, ~30 s under load) into every generated function, and the helpers' compiled code
# is cached on disk once for all graphs.
@njit(**NJIT)
def empty1(d0):
    return np.empty(d0, dtype=np.float32)


@njit(**NJIT)
def empty2(d0, d1):
    return np.empty((d0, d1), dtype=np.float32)


@njit(**NJIT)
def empty3(d0, d1, d2):
    return np.empty((d0, d1, d2), dtype=np.float32)


@njit(**NJIT)
def empty4(d0, d1, d2, d3):
    return np.empty((d0, d1, d2, d3), dtype=np.float32)


@njit(**NJIT)
def full_lengths(n_batch, t_len):
    """Every sequence of the batch at full length (int64)."""
    return np.full(n_batch, t_len, dtype=np.int64)


@njit(**NJIT)
def state3(n_dir, n_batch, size, carried, given, given_batch_first, flag):
    """An initial recurrent state [D, N, size]: carried (flag 1, checked to be [D, N, ...];
    returns None-like empty when it is not), given (flag 0; [D, N, size] or batch-first
    [N, D, size]) or zeros (flag 2). Returns (state, ok)."""
    s = np.zeros((n_dir, n_batch, size), dtype=np.float32)
    if flag == 1:
        if carried.shape[0] != n_dir or carried.shape[1] != n_batch or carried.shape[2] != size:
            return s, False
        for d in range(n_dir):
            for b in range(n_batch):
                for j in range(size):
                    s[d, b, j] = carried[d, b, j]
    elif flag == 0:
        bf = 1 if given_batch_first else 0
        if given.shape[bf] != n_dir or given.shape[1 - bf] != n_batch or given.shape[2] != size:
            return s, False
        for d in range(n_dir):
            for b in range(n_batch):
                for j in range(size):
                    s[d, b, j] = given[b, d, j] if bf else given[d, b, j]
    return s, True


@njit(**NJIT)
def put_axis1(dst3, src3, offset):
    """dst3[:, offset:offset + src3.shape[1], :] = src3; False (nothing written) when the
    shapes do not fit."""
    if src3.shape[0] != dst3.shape[0] or src3.shape[2] != dst3.shape[2] \
            or offset < 0 or offset + src3.shape[1] > dst3.shape[1]:
        return False
    for o in range(src3.shape[0]):
        for k in range(src3.shape[1]):
            for i in range(src3.shape[2]):
                dst3[o, offset + k, i] = src3[o, k, i]
    return True


@njit(**NJIT)
def gather_axis1(x3, idx):
    """y[:, j, :] = x3[:, idx[j], :] with negative indices counted from the end; returns
    (y, ok) with ok False when an index is out of range."""
    n = x3.shape[1]
    y = np.empty((x3.shape[0], idx.shape[0], x3.shape[2]), dtype=np.float32)
    for j in range(idx.shape[0]):
        k = idx[j] + n if idx[j] < 0 else idx[j]
        if k < 0 or k >= n:
            return y, False
        for o in range(x3.shape[0]):
            for i in range(x3.shape[2]):
                y[o, j, i] = x3[o, k, i]
    return y, True
