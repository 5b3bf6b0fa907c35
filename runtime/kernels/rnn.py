"""Fused float32 simple-RNN kernel: h_t = act(clip(W x_t + R h_{t-1} + b)).

Packed operands (built by `runtime.families.rnn`):
  aux [1, H] float32: bias.   ip [2] int64: act, reverse.   fp [3] float64: gate_clip, alpha, beta.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from edgeseq.runtime.config import NJIT
from edgeseq.runtime.kernels.activations import activate
from edgeseq.runtime.kernels.gru import _input_contribution
from edgeseq.runtime.kernels.linalg import clip_inplace, matvec_rows, step_rows

N_IP = 2
N_FP = 3


@njit(**NJIT)
def _rnn_step(x, w_x, pre, w_h, aux, ip, fp, rows, times, n_act, h, y, xz):
    n_hidden = h.shape[1]
    _input_contribution(x, w_x, pre, rows, times, n_act, xz)
    matvec_rows(w_h, 0, n_hidden, h, rows, n_act, xz, True)
    for a in range(n_act):
        b = rows[a]
        xb = xz[b]
        for j in range(n_hidden):
            xb[j] += aux[0, j]
        clip_inplace(xb, 0, n_hidden, fp[0])
        activate(xb, 0, n_hidden, ip[0], fp[1], fp[2])
        h[b, :] = xb
        y[times[a], b, :] = xb


@njit(**NJIT)
def _rnn_sequence(x, w_x, pre, w_h, aux, ip, fp, lens, h, y):
    """One direction over x [T, N, *]; h [N, H] in place; y [T, N, H]."""
    t_len, n_batch = x.shape[0], x.shape[1]
    n_hidden = h.shape[1]
    reverse = ip[1] != 0
    rows = np.empty(n_batch, dtype=np.int64)
    times = np.empty(n_batch, dtype=np.int64)
    xz = np.empty((n_batch, n_hidden), dtype=np.float32)
    for s in range(t_len):
        n_act = step_rows(s, t_len, lens, reverse, rows, times)
        if n_act < n_batch:
            for b in range(n_batch):
                if s >= lens[b]:
                    y[s, b, :] = 0.0
        if n_act > 0:
            _rnn_step(x, w_x, pre, w_h, aux, ip, fp, rows, times, n_act, h, y, xz)
