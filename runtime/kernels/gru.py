"""Fused float32 GRU kernel (ONNX semantics, gates z, r, h; both linear_before_reset forms).

Packed operands (built by `runtime.recurrent.GruKernel`):
  aux [6, H] float32: rows 0-2 input bias b_x (z, r, h), rows 3-5 recurrent bias b_h.
  ip [GRU_N_IP] int64, fp [GRU_N_FP] float64: the named slots of kernels/operands.py.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from edgeseq.runtime.kernels.flags import NJIT
from edgeseq.runtime.kernels.activations import activate
from edgeseq.runtime.kernels.gru_plain import plain_gru_sequence
from edgeseq.runtime.kernels.linalg import begin_step, clip_inplace, matvec_rows, shared_length
from edgeseq.runtime.kernels.operands import (GRU_ACT_F, GRU_ACT_G, GRU_ALPHA_F, GRU_ALPHA_G,
                                              GRU_BETA_F, GRU_BETA_G, GRU_GATE_CLIP,
                                              GRU_LINEAR_BEFORE_RESET, GRU_N_IP, GRU_REVERSE,
                                              STREAM_AUX_WIDTH, STREAM_CHECK_FINITE,
                                              STREAM_N_CELL, STREAM_N_INPUT, STREAM_OFF_AUX,
                                              STREAM_OFF_W_3, STREAM_OFF_W_H, STREAM_OFF_W_X)
from edgeseq.runtime.kernels.panels import panel_gemv_rows_acc, project_panels


@njit(**NJIT)
def _gru_gates(xb, rb, hb, tb, n_hidden, aux, ip, fp, lbr):
    """z, r = f(clip(x + W_x b + R h + R b)) in xb[0:2H] from the input part xb and recurrent
    part rb; then the candidate's pre-activation (lbr: x_h + r (R_h h + b)) or, for lbr=0,
    tb = r * h for the reset-gated product. Shared by the compressed and delta GRU kernels."""
    for g in range(2):
        o = g * n_hidden
        for j in range(n_hidden):
            xb[o + j] += aux[g, j] + rb[o + j] + aux[3 + g, j]
    clip_inplace(xb, 0, 2 * n_hidden, fp[GRU_GATE_CLIP])
    activate(xb, 0, 2 * n_hidden, ip[GRU_ACT_F], fp[GRU_ALPHA_F], fp[GRU_BETA_F])
    if lbr:
        for j in range(n_hidden):
            xb[2 * n_hidden + j] += aux[2, j] + xb[n_hidden + j] * (
                rb[2 * n_hidden + j] + aux[5, j])
    else:
        for j in range(n_hidden):
            tb[j] = xb[n_hidden + j] * hb[j]


@njit(**NJIT)
def _update_hidden_gru(xb, hb, n_hidden, ip, fp):
    """Candidate n = g(clip(xb[2H:3H])) and h = (1 - z) n + z h in place; xb holds the
    activated z in [0, H). Shared by the dense, compressed and delta GRU kernels."""
    clip_inplace(xb, 2 * n_hidden, n_hidden, fp[GRU_GATE_CLIP])
    activate(xb, 2 * n_hidden, n_hidden, ip[GRU_ACT_G], fp[GRU_ALPHA_G], fp[GRU_BETA_G])
    for j in range(n_hidden):
        nj = xb[2 * n_hidden + j]
        hb[j] = nj + xb[j] * (hb[j] - nj)        # (1 - z) n + z h


@njit(**NJIT)
def _input_contribution(x, w_x, pre, rows, times, n_act, xz):
    """xz[b] = W_x x_t for the active rows (copied when precomputed by one GEMM)."""
    if pre:
        g = w_x.shape[0]
        for a in range(n_act):
            # x may be wider than G (padded panel output): the first G columns count
            xz[rows[a], :g] = x[times[a], rows[a], :g]
    else:
        xt = np.empty((x.shape[1], x.shape[2]), dtype=np.float32)
        for a in range(n_act):
            xt[rows[a], :] = x[times[a], rows[a], :]
        matvec_rows(w_x, 0, w_x.shape[0], xt, rows, n_act, xz, False)


@njit(**NJIT)
def _gru_step(x, w_x, pre, w_hzr, w_hn, aux, ip, fp, rows, times, n_act, h, y, xz, rz, hn,
              tmp):
    n_hidden = h.shape[1]
    lbr = ip[GRU_LINEAR_BEFORE_RESET] != 0
    _input_contribution(x, w_x, pre, rows, times, n_act, xz)
    for a in range(n_act):
        rz[rows[a], :] = 0.0
        hn[rows[a], :] = 0.0
    panel_gemv_rows_acc(w_hzr, h, rows, n_act, rz)
    if lbr:
        # reset applied after the matmul (PyTorch, Keras reset_after)
        panel_gemv_rows_acc(w_hn, h, rows, n_act, hn)
    for a in range(n_act):
        b = rows[a]
        xb = xz[b]
        rb = rz[b]
        for gate in range(2):
            o = gate * n_hidden
            for j in range(n_hidden):
                xb[o + j] += aux[gate, j] + rb[o + j] + aux[3 + gate, j]
        clip_inplace(xb, 0, 2 * n_hidden, fp[GRU_GATE_CLIP])
        activate(xb, 0, 2 * n_hidden, ip[GRU_ACT_F], fp[GRU_ALPHA_F], fp[GRU_BETA_F])
        hb = h[b]
        if not lbr:
            tb = tmp[b]
            for j in range(n_hidden):
                tb[j] = xb[n_hidden + j] * hb[j]
    if not lbr:
        # reset applied to h before the matmul: W_hh (r * h) needs r first
        panel_gemv_rows_acc(w_hn, tmp, rows, n_act, hn)
    for a in range(n_act):
        b = rows[a]
        xb = xz[b]
        nb = hn[b]
        hb = h[b]
        if lbr:
            for j in range(n_hidden):
                xb[2 * n_hidden + j] += aux[2, j] + xb[n_hidden + j] * (nb[j] + aux[5, j])
        else:
            for j in range(n_hidden):
                xb[2 * n_hidden + j] += aux[2, j] + nb[j] + aux[5, j]
        _update_hidden_gru(xb, hb, n_hidden, ip, fp)
        y[times[a], b, :] = hb


@njit(**NJIT)
def _gru_sequence(x, w_x, pre, w_hzr, w_hn, aux, ip, fp, lens, h, y):
    """One direction over x [T, N, *] (pre=1: x holds W_x x_t [T, N, 3H]); h [N, H] in place;
    y [T, N, H] (zero past each sequence's length). w_hzr, w_hn: recurrent weights of the
    z, r gates and of the h gate, in panels."""
    t_len, n_batch = x.shape[0], x.shape[1]
    n_hidden = h.shape[1]
    reverse = ip[GRU_REVERSE] != 0
    if pre and ip[GRU_ACT_F] == 0 and ip[GRU_ACT_G] == 1 and fp[GRU_GATE_CLIP] <= 0:
        # the default cell with every row of one length (batch 1 always): one-pass path
        length = shared_length(lens)
        if length >= 0:
            plain_gru_sequence(x, w_hzr, w_hn, aux, ip[GRU_LINEAR_BEFORE_RESET], reverse,
                               length, h, y)
            return
    rows = np.empty(n_batch, dtype=np.int64)
    times = np.empty(n_batch, dtype=np.int64)
    xz = np.zeros((n_batch, 3 * n_hidden), dtype=np.float32)
    rz = np.zeros((n_batch, w_hzr.shape[0] * 16), dtype=np.float32)
    hn = np.zeros((n_batch, w_hn.shape[0] * 16), dtype=np.float32)
    tmp = np.zeros((n_batch, n_hidden), dtype=np.float32)
    for s in range(t_len):
        n_act = begin_step(s, lens, reverse, rows, times, y)
        if n_act > 0:
            _gru_step(x, w_x, pre, w_hzr, w_hn, aux, ip, fp, rows, times, n_act, h, y, xz, rz,
                      hn, tmp)


@njit(**NJIT)
def _gru_stream(x, wbuf, wxp, ip, fp, state, y):
    """Short-chunk streaming entry (see lstm._lstm_stream): ip holds the cell's slots, then the
    STREAM_* slots (W_h as the z, r rows and the h rows)."""
    s = GRU_N_IP
    if ip[s + STREAM_CHECK_FINITE]:
        for v in x.ravel():
            if not np.isfinite(v):
                return 1
    t_len, n_batch = x.shape[0], x.shape[1]
    n_input, n_hidden = ip[s + STREAM_N_INPUT], ip[s + STREAM_N_CELL]
    g = 3 * n_hidden
    zr = (2 * n_hidden + 63) // 64 * 64
    hp = (n_hidden + 63) // 64 * 64
    o_x, o_zr, o_hn, o_a = (ip[s + STREAM_OFF_W_X], ip[s + STREAM_OFF_W_H],
                            ip[s + STREAM_OFF_W_3], ip[s + STREAM_OFF_AUX])
    width = ip[s + STREAM_AUX_WIDTH]
    w_x = wbuf[o_x:o_x + g * n_input].reshape(g, n_input)
    w_hzr = wbuf[o_zr:o_zr + zr * n_hidden].reshape(zr // 16, n_hidden, 16)
    w_hn = wbuf[o_hn:o_hn + hp * n_hidden].reshape(hp // 16, n_hidden, 16)
    aux = wbuf[o_a:o_a + 6 * width].reshape(6, width)
    h = state[:n_batch * n_hidden].reshape(n_batch, n_hidden)
    lens = np.full(n_batch, t_len, dtype=np.int64)
    _gru_sequence(project_panels(x, wxp), w_x, 1, w_hzr, w_hn, aux, ip, fp, lens, h,
                  y.reshape(t_len, n_batch, n_hidden))
    return 0
