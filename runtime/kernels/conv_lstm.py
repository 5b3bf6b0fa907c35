"""The ConvLSTM gate update (1-D and 2-D), compiled. Both convolutions are GEMMs done before
(runtime/conv_lstm.py: the input one over every step at once, the recurrent one per step over
an im2col gather of the carried h); here, per row and position, the peepholes, activations,
cell update and new h, written into the state grid and the output. Layouts: pre [R, P, 4H]
(the recurrent convolution, gates i, f, c, o; overwritten); xc [T, N, P, 4H] (the input one); c [N, P, H] (rows[r] of it updated); peephole [3, P, H];
grid [N, P_pad, H] (h of position p at row centres[p]); y [T, D, N, H, P] (at steps t[r])."""
from __future__ import annotations

import numpy as np
from numba import njit

from edgeseq.runtime.kernels.activations import activate
from edgeseq.runtime.kernels.flags import NJIT


@njit(**NJIT)
def conv_lstm_gates(pre, xc, t, c, rows, peep, has_peep, codes, alphas, betas, grid, centres,
                    y, d):
    """c, the state grid and y from the gate pre-activations of the rows listed in `rows`
    (pre: the recurrent convolution; xc [T, N, P, 4H]: the input one, read at steps t[r])."""
    n_pos, hidden = c.shape[1], c.shape[2]
    tmp = np.empty(hidden, np.float32)
    for r in range(rows.shape[0]):
        n = rows[r]
        for pos in range(n_pos):
            acc = pre[r, pos]
            x_row = xc[t[r], n, pos]
            for o in range(4 * hidden):
                acc[o] += x_row[o]
            c_row = c[n, pos]
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
            g_row = grid[n, centres[pos]]
            for j in range(hidden):
                h = acc[3 * hidden + j] * tmp[j]
                g_row[j] = h
                y[t[r], d, n, j, pos] = h
