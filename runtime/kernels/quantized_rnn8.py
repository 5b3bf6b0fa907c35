"""GRU and RNN sequence kernels whose recurrent products use int8 activations
(`kernels.s8dot` through `quantized.recurrent8`): h_{t-1} (and, for a GRU with
linear_before_reset=0, r ⊙ h_{t-1}) is quantised to int8 per vector and multiplied by the
panel-packed int8 W_h in exact integer arithmetic, one float scaling per row
(`edgeseq.reference.int8_product` defines the bits). The cell maths is the compressed
kernels' own (`kernels.gru._gru_gates` / `_update_hidden_gru`, the RNN step of
`quantized.rnn_sequence`); only the products differ.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from edgeseq.runtime.kernels.activations import activate
from edgeseq.runtime.kernels.flags import NJIT
from edgeseq.runtime.kernels.gru import _gru_gates, _update_hidden_gru
from edgeseq.runtime.kernels.linalg import begin_step, clip_inplace
from edgeseq.runtime.kernels.operands import (GRU_LINEAR_BEFORE_RESET, GRU_REVERSE, RNN_ACT,
                                              RNN_ALPHA, RNN_BETA, RNN_GATE_CLIP, RNN_REVERSE)
from edgeseq.runtime.kernels.quantized import in_groups8, out_rows8, recurrent8


@njit(**NJIT)
def gru_sequence8(xin, p_h, p_n, aux, ip, fp, lens, h, y):
    """One GRU direction over xin [T, N, 3H] = W_x x_t; h [N, H] in place; y [T, N, H].
    p_h: W_h packed (`s8dot.Packed8`, or a (U, V) pair when factored: `quantized.recurrent8`):
    all 3H rows when linear_before_reset, else the z and r rows [0, 2H) with p_n the
    candidate rows [2H, 3H) (multiplied by r ⊙ h: a second quantisation). aux/ip/fp packed as for `kernels.gru._gru_sequence`."""
    t_len, n_batch = xin.shape[0], xin.shape[1]
    n_hidden = h.shape[1]
    lbr = ip[GRU_LINEAR_BEFORE_RESET] != 0
    reverse = ip[GRU_REVERSE] != 0
    rows = np.empty(n_batch, dtype=np.int64)
    times = np.empty(n_batch, dtype=np.int64)
    xz = np.empty((n_batch, 3 * n_hidden), dtype=np.float32)
    rz = np.empty((n_batch, out_rows8(p_h)), dtype=np.float32)
    rn = np.empty((n_batch, out_rows8(p_n)), dtype=np.float32)
    tmp = np.empty((n_batch, n_hidden), dtype=np.float32)
    hq = np.zeros((n_batch, 4 * in_groups8(p_h)), dtype=np.int8)
    tq = np.zeros((n_batch, 4 * in_groups8(p_n)), dtype=np.int8)
    xs = np.empty(n_batch, dtype=np.float32)
    for s in range(t_len):
        n_act = begin_step(s, lens, reverse, rows, times, y)
        if n_act == 0:
            continue
        for a in range(n_act):
            xz[rows[a], :] = xin[times[a], rows[a], :]
        # odd steps read W_h last panel first (what the previous step read last is in L2)
        recurrent8(p_h, h, rows, n_act, rz, False, hq, xs, s % 2 == 1)
        for a in range(n_act):
            b = rows[a]
            _gru_gates(xz[b], rz[b], h[b], tmp[b], n_hidden, aux, ip, fp, lbr)
        if not lbr:
            recurrent8(p_n, tmp, rows, n_act, rn, False, tq, xs, s % 2 == 1)
            for a in range(n_act):
                b = rows[a]
                for j in range(n_hidden):
                    xz[b, 2 * n_hidden + j] += aux[2, j] + rn[b, j] + aux[5, j]
        for a in range(n_act):
            b = rows[a]
            hb = h[b]
            _update_hidden_gru(xz[b], hb, n_hidden, ip, fp)
            y[times[a], b, :] = hb


@njit(**NJIT)
def rnn_sequence8(xin, p_h, aux, ip, fp, lens, h, y):
    """One simple-RNN direction over xin [T, N, H] = W_x x_t with W_h h_{t-1} in int8
    activations; h [N, H] in place."""
    t_len, n_batch = xin.shape[0], xin.shape[1]
    n_hidden = h.shape[1]
    reverse = ip[RNN_REVERSE] != 0
    rows = np.empty(n_batch, dtype=np.int64)
    times = np.empty(n_batch, dtype=np.int64)
    xz = np.empty((n_batch, out_rows8(p_h)), dtype=np.float32)
    hq = np.zeros((n_batch, 4 * in_groups8(p_h)), dtype=np.int8)
    xs = np.empty(n_batch, dtype=np.float32)
    for s in range(t_len):
        n_act = begin_step(s, lens, reverse, rows, times, y)
        if n_act == 0:
            continue
        for a in range(n_act):
            xz[rows[a], :n_hidden] = xin[times[a], rows[a], :]
        recurrent8(p_h, h, rows, n_act, xz, True, hq, xs, s % 2 == 1)
        for a in range(n_act):
            b = rows[a]
            xb = xz[b]
            for j in range(n_hidden):
                xb[j] += aux[0, j]
            clip_inplace(xb, 0, n_hidden, fp[RNN_GATE_CLIP])
            activate(xb, 0, n_hidden, ip[RNN_ACT], fp[RNN_ALPHA], fp[RNN_BETA])
            for j in range(n_hidden):
                h[b, j] = xb[j]
            y[times[a], b, :] = h[b]
