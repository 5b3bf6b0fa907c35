"""Direct 1-D convolution for small calls (a streamed frame of silero-vad's front end): one
compiled call per node, windows gathered into rows and multiplied by the weights in panels
with the 4-row panel kernel. NumPy's pad + im2col + GEMM spent more in Python and in
OpenBLAS's small-N path than in arithmetic (e.g. [258, 256] x [256, 5]: 9.1 us in sgemm).
Large calls keep im2col + BLAS (runtime/glue.py)."""
from __future__ import annotations

import numpy as np
from numba import njit

from edgeseq.runtime.kernels.flags import NJIT
from edgeseq.runtime.kernels.activations import fast_sigmoid
from edgeseq.runtime.kernels.panels import PANEL, panel_gemv_rows_acc


@njit(**NJIT)
def conv1d_panels(x, wp, bias, has_bias, n_out, k_len, stride, dil, p0, out_len, post):
    """y [N, O, out_len] for x [N, C, L] (C-contiguous float32), one group, weights wp =
    panels of W [O, C*K] (im2col column order (c, k)); zero padding p0 on the left, the
    right padding implied by out_len. post: activation fused at plan time (0 none, 1 relu,
    2 sigmoid)."""
    n_batch, n_chan, length = x.shape
    ck = n_chan * k_len
    y = np.empty((n_batch, n_out, out_len), dtype=np.float32)
    cols = np.empty((out_len, ck), dtype=np.float32)
    acc = np.empty((out_len, wp.shape[0] * PANEL), dtype=np.float32)
    rows = np.arange(out_len)
    for n in range(n_batch):
        for l in range(out_len):
            cl = cols[l]
            for c in range(n_chan):
                xc = x[n, c]
                for k in range(k_len):
                    at = l * stride + k * dil - p0
                    cl[c * k_len + k] = xc[at] if 0 <= at < length else np.float32(0.0)
        acc[:] = 0.0
        panel_gemv_rows_acc(wp, cols, rows, out_len, acc)
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
