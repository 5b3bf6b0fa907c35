"""Fused float32 simple-RNN kernel: h_t = act(clip(W x_t + R h_{t-1} + b)).

Packed operands (built by `runtime.families.rnn`):
  aux [1, H] float32: bias.   ip [2] int64: act, reverse.   fp [3] float64: gate_clip, alpha, beta.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from edgeseq.runtime.kernels.flags import NJIT
from edgeseq.runtime.kernels.activations import activate
from edgeseq.runtime.kernels.gru import _input_contribution
from edgeseq.runtime.kernels.linalg import begin_step, clip_inplace
from edgeseq.runtime.kernels.panels import panel_gemv_rows_acc, project_panels

N_IP = 2
N_FP = 3


@njit(**NJIT)
def _rnn_step(x, w_x, pre, w_h, aux, ip, fp, rows, times, n_act, h, y, xz):
    n_hidden = h.shape[1]
    _input_contribution(x, w_x, pre, rows, times, n_act, xz)
    panel_gemv_rows_acc(w_h, h, rows, n_act, xz)
    for a in range(n_act):
        b = rows[a]
        xb = xz[b]
        for j in range(n_hidden):
            xb[j] += aux[0, j]
        clip_inplace(xb, 0, n_hidden, fp[0])
        activate(xb, 0, n_hidden, ip[0], fp[1], fp[2])
        h[b, :] = xb[:n_hidden]
        y[times[a], b, :] = xb[:n_hidden]


@njit(**NJIT)
def _rnn_sequence(x, w_x, pre, w_h, aux, ip, fp, lens, h, y):
    """One direction over x [T, N, *]; h [N, H] in place; y [T, N, H]."""
    t_len, n_batch = x.shape[0], x.shape[1]
    n_hidden = h.shape[1]
    reverse = ip[1] != 0
    rows = np.empty(n_batch, dtype=np.int64)
    times = np.empty(n_batch, dtype=np.int64)
    xz = np.zeros((n_batch, w_h.shape[0] * 16), dtype=np.float32)
    for s in range(t_len):
        n_act = begin_step(s, lens, reverse, rows, times, y)
        if n_act > 0:
            _rnn_step(x, w_x, pre, w_h, aux, ip, fp, rows, times, n_act, h, y, xz)


@njit(**NJIT)
def _rnn_stream(x, wbuf, wxp, ip, fp, state, y):
    """Short-chunk streaming entry (see lstm._lstm_stream). ip[2:10]: n_input, n_hidden,
    n_hidden, offsets of w_x, w_h, (unused), aux, aux width; ip[10]: check finite."""
    if ip[10]:
        for v in x.ravel():
            if not np.isfinite(v):
                return 1
    t_len, n_batch = x.shape[0], x.shape[1]
    n_input, n_hidden = ip[2], ip[3]
    w_x = wbuf[ip[5]:ip[5] + n_hidden * n_input].reshape(n_hidden, n_input)
    hp = (n_hidden + 63) // 64 * 64
    w_h = wbuf[ip[6]:ip[6] + hp * n_hidden].reshape(hp // 16, n_hidden, 16)
    aux = wbuf[ip[8]:ip[8] + ip[9]].reshape(1, ip[9])
    h = state[:n_batch * n_hidden].reshape(n_batch, n_hidden)
    lens = np.full(n_batch, t_len, dtype=np.int64)
    _rnn_sequence(project_panels(x, wxp), w_x, 1, w_h, aux, ip, fp, lens, h,
                  y.reshape(t_len, n_batch, n_hidden))
    return 0
