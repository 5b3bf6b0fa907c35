"""The default GRU cell (sigmoid/tanh, no clip) over full-length sequences in one fused pass
per step, for the whole-graph compiler: x = W_x x_t precomputed [T, N, >= 3H]. Per step one
panel GEMV pass for all batch rows (both recurrent blocks), then one loop over the units
computing z, r, the candidate and h (and y) without the general cell's per-gate passes,
activation dispatch and per-row bookkeeping. kernels/gru.py takes this path too for any
call whose rows share one length. Same packed operands as kernels/gru.py
(aux rows 0-2 b_x z,r,h; rows 3-5 b_h z,r,h)."""
from __future__ import annotations

import numpy as np
from numba import njit

from edgeseq.runtime.kernels.activations import fast_sigmoid, fast_tanh
from edgeseq.runtime.kernels.flags import NJIT
from edgeseq.runtime.kernels.panels import panel_rows_acc


@njit(**NJIT)
def plain_gru_sequence(x, w_hzr, w_hn, aux, lbr, reverse, length, h, y):
    """Every batch row of one length (<= T): h [N, H] in place, y [T, N, H] (zero from
    `length` on); lbr: reset applied after the recurrent product (PyTorch, Keras
    reset_after) else before it (ONNX default)."""
    t_len, n_batch = x.shape[0], x.shape[1]
    n = h.shape[1]
    rz = np.empty((n_batch, w_hzr.shape[0] * 16), dtype=np.float32)
    hn = np.empty((n_batch, w_hn.shape[0] * 16), dtype=np.float32)
    rh = np.empty((n_batch, n), dtype=np.float32)
    for t in range(length, t_len):
        y[t] = 0.0
    for s in range(length):
        t = length - 1 - s if reverse else s
        rz[:] = 0.0
        hn[:] = 0.0
        panel_rows_acc(w_hzr, h, n_batch, rz)
        if lbr:
            panel_rows_acc(w_hn, h, n_batch, hn)
            for b in range(n_batch):
                xs = x[t, b]
                zb = rz[b]
                nb = hn[b]
                hb = h[b]
                yb = y[t, b]
                for j in range(n):
                    z = fast_sigmoid(xs[j] + aux[0, j] + zb[j] + aux[3, j])
                    rr = fast_sigmoid(xs[n + j] + aux[1, j] + zb[n + j] + aux[4, j])
                    c = fast_tanh(xs[2 * n + j] + aux[2, j] + rr * (nb[j] + aux[5, j]))
                    v = c + z * (hb[j] - c)
                    hb[j] = v
                    yb[j] = v
        else:
            for b in range(n_batch):
                xs = x[t, b]
                zb = rz[b]
                hb = h[b]
                for j in range(n):
                    rh[b, j] = fast_sigmoid(xs[n + j] + aux[1, j] + zb[n + j] + aux[4, j]) \
                        * hb[j]
            panel_rows_acc(w_hn, rh, n_batch, hn)
            for b in range(n_batch):
                xs = x[t, b]
                zb = rz[b]
                nb = hn[b]
                hb = h[b]
                yb = y[t, b]
                for j in range(n):
                    z = fast_sigmoid(xs[j] + aux[0, j] + zb[j] + aux[3, j])
                    c = fast_tanh(xs[2 * n + j] + aux[2, j] + nb[j] + aux[5, j])
                    v = c + z * (hb[j] - c)
                    hb[j] = v
                    yb[j] = v
