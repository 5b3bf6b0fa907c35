"""Fused float32 simple-RNN kernel: h_t = act(clip(W x_t + R h_{t-1} + b)).

Packed operands (built by `runtime.recurrent.RnnKernel`):
  aux [1, H] float32: bias.   ip [RNN_N_IP] int64, fp [RNN_N_FP] float64: the named slots of
  kernels/operands.py.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from edgeseq.runtime.kernels.flags import NJIT
from edgeseq.runtime.kernels.activations import activate
from edgeseq.runtime.kernels.gru import _input_contribution
from edgeseq.runtime.kernels.linalg import begin_step, clip_inplace
from edgeseq.runtime.kernels.operands import (RNN_ACT, RNN_ALPHA, RNN_BETA, RNN_GATE_CLIP,
                                              RNN_N_IP, RNN_REVERSE, STREAM_AUX_WIDTH,
                                              STREAM_CHECK_FINITE, STREAM_N_CELL, STREAM_N_INPUT,
                                              STREAM_OFF_AUX, STREAM_OFF_W_H, STREAM_OFF_W_X)
from edgeseq.runtime.kernels.panels import panel_gemv_rows_acc, project_panels


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
        clip_inplace(xb, 0, n_hidden, fp[RNN_GATE_CLIP])
        activate(xb, 0, n_hidden, ip[RNN_ACT], fp[RNN_ALPHA], fp[RNN_BETA])
        h[b, :] = xb[:n_hidden]
        y[times[a], b, :] = xb[:n_hidden]


@njit(**NJIT)
def _rnn_sequence(x, w_x, pre, w_h, aux, ip, fp, lens, h, y):
    """One direction over x [T, N, *]; h [N, H] in place; y [T, N, H]."""
    t_len, n_batch = x.shape[0], x.shape[1]
    n_hidden = h.shape[1]
    reverse = ip[RNN_REVERSE] != 0
    rows = np.empty(n_batch, dtype=np.int64)
    times = np.empty(n_batch, dtype=np.int64)
    xz = np.zeros((n_batch, w_h.shape[0] * 16), dtype=np.float32)
    for s in range(t_len):
        n_act = begin_step(s, lens, reverse, rows, times, y)
        if n_act > 0:
            _rnn_step(x, w_x, pre, w_h, aux, ip, fp, rows, times, n_act, h, y, xz)


@njit(**NJIT)
def _rnn_stream(x, wbuf, wxp, ip, fp, state, y):
    """Short-chunk streaming entry (see lstm._lstm_stream): ip holds the cell's slots, then the
    STREAM_* slots."""
    s = RNN_N_IP
    if ip[s + STREAM_CHECK_FINITE]:
        for v in x.ravel():
            if not np.isfinite(v):
                return 1
    t_len, n_batch = x.shape[0], x.shape[1]
    n_input, n_hidden = ip[s + STREAM_N_INPUT], ip[s + STREAM_N_CELL]
    o_x, o_h, o_a = ip[s + STREAM_OFF_W_X], ip[s + STREAM_OFF_W_H], ip[s + STREAM_OFF_AUX]
    width = ip[s + STREAM_AUX_WIDTH]
    w_x = wbuf[o_x:o_x + n_hidden * n_input].reshape(n_hidden, n_input)
    hp = (n_hidden + 63) // 64 * 64
    w_h = wbuf[o_h:o_h + hp * n_hidden].reshape(hp // 16, n_hidden, 16)
    aux = wbuf[o_a:o_a + width].reshape(1, width)
    h = state[:n_batch * n_hidden].reshape(n_batch, n_hidden)
    lens = np.full(n_batch, t_len, dtype=np.int64)
    _rnn_sequence(project_panels(x, wxp), w_x, 1, w_h, aux, ip, fp, lens, h,
                  y.reshape(t_len, n_batch, n_hidden))
    return 0
