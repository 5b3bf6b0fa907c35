"""The ConvLSTM recurrence (1-D and 2-D), compiled. The input convolution of every step is one
GEMM done before (runtime/conv_lstm.py); here, per step and row, the recurrent convolution over
the carried h and the LSTM gate update at every position. The spatial grid is flattened: the
state h lives channels-last in a zero-bordered grid flattened to rows (h_pad [N, P_pad, H]),
output position p reads its window at rows base[p] + offs[k] (k over the K_h taps) and writes
its new h at base[p] + centre. Layouts: xc [T, N, P, 4H] (input conv + bias, gates i, f, c, o);
w_h [K, H, 4H]; c [N, P, H]; peephole [3, P, H]; y [T, D, N, H, P]."""
from __future__ import annotations

import numpy as np
from numba import njit

from edgeseq.runtime.kernels.activations import activate
from edgeseq.runtime.kernels.flags import NJIT


@njit(**NJIT)
def _position(xc_row, w_h, h_pad, n, base, offs, c_row, peep, pos, has_peep, codes, alphas,
              betas, acc, tmp, h_out):
    """Gates at one position: c_row (c at this position) updated, h_out <- new h."""
    hidden = c_row.shape[0]
    four = 4 * hidden
    for o in range(four):
        acc[o] = xc_row[o]
    for k in range(w_h.shape[0]):
        h_row = h_pad[n, base + offs[k]]
        for ci in range(hidden):
            hv = h_row[ci]
            w_row = w_h[k, ci]          # 1-D rows: the loop over the 4H outputs vectorises
            for o in range(four):
                acc[o] += w_row[o] * hv
    if has_peep:
        for j in range(hidden):
            acc[j] += peep[0, pos, j] * c_row[j]
            acc[hidden + j] += peep[1, pos, j] * c_row[j]
    activate(acc, 0, 2 * hidden, codes[0], alphas[0], betas[0])          # i, f
    activate(acc, 2 * hidden, hidden, codes[1], alphas[1], betas[1])     # candidate
    for j in range(hidden):
        c_row[j] = acc[hidden + j] * c_row[j] + acc[j] * acc[2 * hidden + j]
        tmp[j] = c_row[j]
    if has_peep:
        for j in range(hidden):
            acc[3 * hidden + j] += peep[2, pos, j] * c_row[j]
    activate(acc, 3 * hidden, hidden, codes[0], alphas[0], betas[0])     # o
    activate(tmp, 0, hidden, codes[2], alphas[2], betas[2])
    for j in range(hidden):
        h_out[j] = acc[3 * hidden + j] * tmp[j]


@njit(**NJIT)
def conv_lstm_sequence(xc, w_h, h_pad, base, offs, centre, c, peep, has_peep, lens, reverse,
                       codes, alphas, betas, y, d):
    """One direction over all steps and rows; y [T, D, N, H, P] written at direction d
    (zeros past each row's length); h_pad / c hold the initial state and end as the final."""
    t_len, n_batch, n_pos = xc.shape[0], xc.shape[1], xc.shape[2]
    hidden = c.shape[2]
    acc = np.empty(4 * hidden, np.float32)
    tmp = np.empty(hidden, np.float32)
    h_new = np.empty((n_pos, hidden), np.float32)
    for n in range(n_batch):
        steps = lens[n]
        for s in range(steps):
            t = steps - 1 - s if reverse else s
            for pos in range(n_pos):
                _position(xc[t, n, pos], w_h, h_pad, n, base[pos], offs, c[n, pos], peep, pos,
                          has_peep, codes, alphas, betas, acc, tmp, h_new[pos])
            for pos in range(n_pos):
                row = base[pos] + centre
                for j in range(hidden):
                    h_pad[n, row, j] = h_new[pos, j]
                    y[t, d, n, j, pos] = h_new[pos, j]
        for t in range(steps, t_len):
            for j in range(hidden):
                for pos in range(n_pos):
                    y[t, d, n, j, pos] = np.float32(0.0)
