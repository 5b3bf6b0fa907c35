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
from edgeseq.runtime.kernels.activations import fast_sigmoid
from edgeseq.runtime.kernels.panels import PANEL, panel_rows_acc


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


@njit(**NJIT)
def all_finite(flat):
    """No NaN or +-inf in flat (float32, C-contiguous): x * 0 is 0 for finite x and NaN
    otherwise, and the sum vectorises (the runtime's input check: ~0.4 us a call against
    ~1.5-3.8 us for np.isfinite(a).all() on a 576-sample frame)."""
    acc = np.float32(0.0)
    for i in range(flat.shape[0]):
        acc += flat[i] * np.float32(0.0)
    return acc == np.float32(0.0)


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
    if flag == 2:
        return s, True
    # NOTE: one copy loop for both sources (two cost this kernel's compile twice the time)
    src = carried if flag == 1 else given
    bf = 1 if (given_batch_first and flag == 0) else 0
    if src.shape[bf] != n_dir or src.shape[1 - bf] != n_batch or src.shape[2] != size:
        return s, False
    for d in range(n_dir):
        for b in range(n_batch):
            for j in range(size):
                s[d, b, j] = src[b, d, j] if bf else src[d, b, j]
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


# ---- the workspace: buffers planned once ------------------------------------------------
# Generated code takes every intermediate array from one float32 arena `ws` owned by the
# caller (a Stream, or a Model per thread) with a bump pointer wsp[0] (reset to 0 at the
# start of each call): a stream step of fixed shapes allocates nothing once the arena has
# grown to the step's size. When the arena is too small (the first call, or a longer
# sequence) the helpers fall back to a fresh array and still advance wsp[0], so the caller
# learns the size to grow to. Results leave through `detach` (copied when in the arena).
WS_ALIGN = 16       # floats: every buffer starts on a 64-byte boundary (panel rows)


@njit(**NJIT)
def take1(ws, wsp, d0):
    """A [d0] float32 buffer (uninitialised) from the arena, or fresh if it does not fit."""
    start = (wsp[0] + WS_ALIGN - 1) // WS_ALIGN * WS_ALIGN
    wsp[0] = start + d0
    if start + d0 <= ws.shape[0]:
        return ws[start:start + d0]
    return np.empty(d0, dtype=np.float32)


@njit(**NJIT)
def take2(ws, wsp, d0, d1):
    return take1(ws, wsp, d0 * d1).reshape((d0, d1))


@njit(**NJIT)
def take3(ws, wsp, d0, d1, d2):
    return take1(ws, wsp, d0 * d1 * d2).reshape((d0, d1, d2))


@njit(**NJIT)
def take4(ws, wsp, d0, d1, d2, d3):
    return take1(ws, wsp, d0 * d1 * d2 * d3).reshape((d0, d1, d2, d3))


@njit(**NJIT)
def full_lengths_ws(n_batch, t_len, ws, wsp):
    """Every sequence of the batch at full length: int64 [n_batch] from the arena (two
    floats per value; 64-byte aligned like every buffer)."""
    lens = take1(ws, wsp, 2 * n_batch).view(np.int64)
    for b in range(n_batch):
        lens[b] = t_len
    return lens


@njit(**NJIT)
def lengths_ws(given, ws, wsp):
    """A copy of the int64 lengths `given` in the arena (the kernels read it after the
    checks)."""
    lens = take1(ws, wsp, 2 * given.shape[0]).view(np.int64)
    for b in range(given.shape[0]):
        lens[b] = given[b]
    return lens


@njit(**NJIT)
def _in_arena(addr, size, ws):
    if size == 0 or ws.size == 0:
        return False
    lo = ws.ctypes.data
    return lo <= addr < lo + ws.size * 4


@njit(**NJIT)
def detach(v, ws):
    """v itself, or a copy when it lives in the arena (the next call reuses the arena)."""
    return v.copy() if _in_arena(v.ctypes.data, v.size, ws) else v


@njit(**NJIT)
def zero2(a):
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            a[i, j] = 0.0


@njit(**NJIT)
def linear_ws(x2, wp, n_out, bias, has_bias, alpha, ws, wsp):
    """x2 @ W (+ bias) * alpha, rows through the packed panels wp; accumulator and result
    taken from the arena."""
    m = x2.shape[0]
    width = wp.shape[0] * PANEL
    acc = take2(ws, wsp, m, width)
    zero2(acc)
    panel_rows_acc(wp, x2, m, acc)
    y = take2(ws, wsp, m, n_out)
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
def conv1d_ws(x, wp, bias, has_bias, n_out, k_len, stride, dil, p0, out_len, post, ws, wsp):
    """kernels/conv.conv1d_panels (same arguments and result) with its im2col rows,
    accumulator and result taken from the arena."""
    n_batch, n_chan, length = x.shape
    ck = n_chan * k_len
    y = take3(ws, wsp, n_batch, n_out, out_len)
    cols = take2(ws, wsp, out_len, ck)
    acc = take2(ws, wsp, out_len, wp.shape[0] * PANEL)
    for n in range(n_batch):
        for l in range(out_len):
            cl = cols[l]
            for c in range(n_chan):
                xc = x[n, c]
                for k in range(k_len):
                    at = l * stride + k * dil - p0
                    cl[c * k_len + k] = xc[at] if 0 <= at < length else np.float32(0.0)
        zero2(acc)
        panel_rows_acc(wp, cols, out_len, acc)
        for o in range(n_out):
            b = bias[o] if has_bias else np.float32(0.0)
            if post == 1:
                for l in range(out_len):
                    y[n, o, l] = max(acc[l, o] + b, np.float32(0.0))
            elif post == 2:
                for l in range(out_len):
                    y[n, o, l] = fast_sigmoid(acc[l, o] + b)
            else:
                for l in range(out_len):
                    y[n, o, l] = acc[l, o] + b
    return y


# NOTE: layout copies of rank-3 values (the common rank: [N, C, L], [T, N, F]) go through
# these two kernels rather than a loop nest emitted per node: each loop nest cost the
# generated function's compile ~0.1 s (silero-vad's 4 slices and 2 transposes: ~0.6 s of a
# cold start), these compile once for all graphs. Other ranks stay emitted inline.
@njit(**NJIT)
def slice3_ws(x3, axis, start, end, step, ws, wsp):
    """ONNX Slice of x3 along one axis (start/end/step as given: slice_bounds clamps them)
    into an arena buffer."""
    d0, d1, d2 = x3.shape
    s, n = slice_bounds(d0 if axis == 0 else (d1 if axis == 1 else d2), start, end, step)
    # NOTE: written out per axis (a [outer, dim, inner] reshape compiled ~1.5x slower)
    e0, e1, e2 = (n if axis == 0 else d0), (n if axis == 1 else d1), (n if axis == 2 else d2)
    s0, s1, s2 = (s if axis == 0 else 0), (s if axis == 1 else 0), (s if axis == 2 else 0)
    t0, t1, t2 = (step if axis == 0 else 1), (step if axis == 1 else 1), (step if axis == 2 else 1)
    y = take3(ws, wsp, e0, e1, e2)
    for i0 in range(e0):
        for i1 in range(e1):
            for i2 in range(e2):
                y[i0, i1, i2] = x3[s0 + i0 * t0, s1 + i1 * t1, s2 + i2 * t2]
    return y


@njit(**NJIT)
def permute3_ws(x3, p0, p1, p2, ws, wsp):
    """np.transpose(x3, (p0, p1, p2)) as a C-contiguous arena buffer."""
    d = x3.shape
    strides = (d[1] * d[2], d[2], 1)
    n0, n1, n2 = d[p0], d[p1], d[p2]
    s0, s1, s2 = strides[p0], strides[p1], strides[p2]
    flat = x3.reshape(x3.size)
    y = take3(ws, wsp, n0, n1, n2)
    for i0 in range(n0):
        for i1 in range(n1):
            base = i0 * s0 + i1 * s1
            yr = y[i0, i1]
            for i2 in range(n2):
                yr[i2] = flat[base + i2 * s2]
    return y


@njit(**NJIT)
def softmax_ws(x3, log, ws, wsp):
    """Softmax (log=False) or log-softmax over axis 1 of x3 [outer, D, inner], into an
    arena buffer."""
    outer, d, inner = x3.shape
    y = take3(ws, wsp, outer, d, inner)
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
def reduce_ws(x3, mean, ws, wsp):
    """Sum (mean=False) or mean over axis 1 of x3 [outer, D, inner] -> [outer, inner],
    accumulated in float64 (the reference's precision for long sums), into an arena buffer."""
    outer, d, inner = x3.shape
    y = take2(ws, wsp, outer, inner)
    for o in range(outer):
        for i in range(inner):
            s = 0.0
            for k in range(d):
                s += x3[o, k, i]
            y[o, i] = s / d if mean and d > 0 else s
    return y


@njit(**NJIT)
def gather_ws(x3, idx, ws, wsp):
    """x3[:, idx, :] (negative indices from the end) into an arena buffer: (y, ok), ok False
    for an index out of range."""
    n = x3.shape[1]
    y = take3(ws, wsp, x3.shape[0], idx.shape[0], x3.shape[2])
    for j in range(idx.shape[0]):
        k = idx[j] + n if idx[j] < 0 else idx[j]
        if k < 0 or k >= n:
            return y, False
        for o in range(x3.shape[0]):
            for i in range(x3.shape[2]):
                y[o, j, i] = x3[o, k, i]
    return y, True
