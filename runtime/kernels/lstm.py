"""Fused float32 LSTM kernels (docs/design.md, the IR: peephole, CIFG both couplings, projection with
bias and clip, layer norm, cell/gate clip, configurable activations), split the way the TFLite
LSTM is: `_gate_preactivations`, `_update_cell`, `_update_hidden`, `_project`, composed by
`_lstm_step` and `_lstm_sequence`.

Packed operands (built once per node by `runtime.recurrent.LstmKernel`), so that a call passes few
arguments (Numba's dispatch cost grows with the argument count):
  aux [12, M] float32, M = max(H, P): rows 0-3 bias i,f,c,o; 4-6 peephole i,f,o;
      7-10 layer-norm gains i,f,c,o; 11 projection bias.
  ip [LSTM_N_IP] int64, fp [LSTM_N_FP] float64: the named slots of kernels/operands.py.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from edgeseq.runtime.kernels.flags import NJIT
from edgeseq.runtime.kernels.activations import activate, fast_sigmoid, fast_tanh
from edgeseq.runtime.kernels.linalg import (begin_step, clip_inplace, layer_norm_inplace,
                                            matvec_rows, shared_length)
from edgeseq.runtime.kernels.operands import (LSTM_ACT_F, LSTM_ACT_G, LSTM_ACT_H, LSTM_ALPHA_F,
                                              LSTM_ALPHA_G, LSTM_ALPHA_H, LSTM_BETA_F,
                                              LSTM_BETA_G, LSTM_BETA_H, LSTM_CELL_CLIP,
                                              LSTM_COUPLING, LSTM_GATE_CLIP, LSTM_LAYER_NORM,
                                              LSTM_LN_EPS, LSTM_N_IP, LSTM_PEEPHOLE,
                                              LSTM_PROJ_CLIP, LSTM_PROJECTION, LSTM_REVERSE,
                                              STREAM_AUX_WIDTH, STREAM_CHECK_FINITE,
                                              STREAM_N_CELL, STREAM_N_INPUT, STREAM_N_OUT,
                                              STREAM_OFF_AUX, STREAM_OFF_W_3, STREAM_OFF_W_H,
                                              STREAM_OFF_W_X)
from edgeseq.runtime.kernels.panels import panel_gemv_rows_acc, panel_rows_acc, project_panels


@njit(**NJIT)
def _gate_preactivations(x, w_x, pre, w_h, h, rows, times, n_act, z):
    """z[b] = W_x x_t + W_h h_{t-1} for the active batch rows (no bias: it is added after a
    layer norm, which must see the bare sum). w_x [4H, I] row-major; w_h in panels."""
    g = w_x.shape[0]
    if pre:
        for a in range(n_act):
            # x may be wider than 4H (padded panel output): the first 4H columns count
            z[rows[a], :g] = x[times[a], rows[a], :g]
    else:
        xt = np.empty((x.shape[1], x.shape[2]), dtype=np.float32)
        for a in range(n_act):
            xt[rows[a], :] = x[times[a], rows[a], :]
        matvec_rows(w_x, 0, g, xt, rows, n_act, z, False)
    panel_gemv_rows_acc(w_h, h, rows, n_act, z)


@njit(**NJIT)
def _gate_input(zb, k, n_cell, aux, ip, fp):
    """Layer norm (optional), bias, gate clip: the activation's input for gate k in place."""
    s = k * n_cell
    if ip[LSTM_LAYER_NORM]:
        layer_norm_inplace(zb, s, n_cell, aux[7 + k], fp[LSTM_LN_EPS])
    for j in range(n_cell):
        zb[s + j] += aux[k, j]
    clip_inplace(zb, s, n_cell, fp[LSTM_GATE_CLIP])


@njit(**NJIT)
def _update_cell(zb, c, aux, ip, fp):
    """Gates i, f, c and the new cell state (in place in c)."""
    n_cell = c.shape[0]
    if ip[LSTM_PEEPHOLE]:
        for j in range(n_cell):
            zb[j] += aux[4, j] * c[j]
            zb[n_cell + j] += aux[5, j] * c[j]
    coupling = ip[LSTM_COUPLING]
    for k in range(3):
        _gate_input(zb, k, n_cell, aux, ip, fp)
    if coupling != 1:
        activate(zb, 0, n_cell, ip[LSTM_ACT_F], fp[LSTM_ALPHA_F], fp[LSTM_BETA_F])
    if coupling != 2:
        activate(zb, n_cell, n_cell, ip[LSTM_ACT_F], fp[LSTM_ALPHA_F], fp[LSTM_BETA_F])
    activate(zb, 2 * n_cell, n_cell, ip[LSTM_ACT_G], fp[LSTM_ALPHA_G], fp[LSTM_BETA_G])
    one = np.float32(1.0)
    if coupling == 1:
        for j in range(n_cell):
            zb[j] = one - zb[n_cell + j]
    elif coupling == 2:
        for j in range(n_cell):
            zb[n_cell + j] = one - zb[j]
    for j in range(n_cell):
        c[j] = zb[n_cell + j] * c[j] + zb[j] * zb[2 * n_cell + j]
    clip_inplace(c, 0, n_cell, fp[LSTM_CELL_CLIP])


@njit(**NJIT)
def _update_hidden(zb, c, m, aux, ip, fp):
    """Output gate (its peephole reads the NEW cell) and m = o * act_h(c)."""
    n_cell = c.shape[0]
    so = 3 * n_cell
    if ip[LSTM_PEEPHOLE]:
        # NOTE: the output peephole reads c_t, not c_{t-1} (Android NN / TFLite)
        for j in range(n_cell):
            zb[so + j] += aux[6, j] * c[j]
    _gate_input(zb, 3, n_cell, aux, ip, fp)
    activate(zb, so, n_cell, ip[LSTM_ACT_F], fp[LSTM_ALPHA_F], fp[LSTM_BETA_F])
    for j in range(n_cell):
        m[j] = c[j]
    activate(m, 0, n_cell, ip[LSTM_ACT_H], fp[LSTM_ALPHA_H], fp[LSTM_BETA_H])
    for j in range(n_cell):
        m[j] = zb[so + j] * m[j]


@njit(**NJIT)
def _project(m, w_proj, aux, fp, h_out):
    """h = clip(W_proj m + b_proj, +-proj_clip)."""
    n_out, n_cell = w_proj.shape
    for p in range(n_out):
        acc = np.float32(0.0)
        for j in range(n_cell):
            acc += w_proj[p, j] * m[j]
        h_out[p] = acc + aux[11, p]
    clip_inplace(h_out, 0, n_out, fp[LSTM_PROJ_CLIP])


@njit(**NJIT)
def _plain_cell(zb, c, m, aux):
    """The default cell (sigmoid/tanh/tanh, no peephole, layer norm, coupling or clips) in
    one vectorisable pass over the units instead of a dozen."""
    n_cell = c.shape[0]
    for j in range(n_cell):
        i = fast_sigmoid(zb[j] + aux[0, j])
        f = fast_sigmoid(zb[n_cell + j] + aux[1, j])
        g = fast_tanh(zb[2 * n_cell + j] + aux[2, j])
        o = fast_sigmoid(zb[3 * n_cell + j] + aux[3, j])
        cn = f * c[j] + i * g
        c[j] = cn
        m[j] = o * fast_tanh(cn)


@njit(**NJIT)
def _lstm_step(x, w_x, pre, w_h, w_proj, aux, ip, fp, rows, times, n_act, h, c, y, z, m):
    """One time step for the active batch rows; writes h, c in place and y[t, b]."""
    _gate_preactivations(x, w_x, pre, w_h, h, rows, times, n_act, z)
    # the default cell takes the one-pass path
    plain = _is_plain(ip, fp)
    for a in range(n_act):
        b = rows[a]
        zb = z[b]
        cb = c[b]
        if plain:
            _plain_cell(zb, cb, m, aux)
        else:
            _update_cell(zb, cb, aux, ip, fp)
            _update_hidden(zb, cb, m, aux, ip, fp)
        hb = h[b]
        if ip[LSTM_PROJECTION]:
            _project(m, w_proj, aux, fp, hb)
        else:
            for j in range(m.shape[0]):
                hb[j] = m[j]
        y[times[a], b, :] = hb


@njit(**NJIT)
def _is_plain(ip, fp):
    """The default cell: sigmoid/tanh/tanh, no peephole, layer norm, coupling, clips."""
    return ip[LSTM_PEEPHOLE] == 0 and _is_plain_or_peephole(ip, fp)


@njit(**NJIT)
def _is_plain_or_peephole(ip, fp):
    """The default cell, peepholes allowed (the whole-sequence fast path has them)."""
    return (ip[LSTM_COUPLING] == 0 and ip[LSTM_LAYER_NORM] == 0
            and ip[LSTM_ACT_F] == 0 and ip[LSTM_ACT_G] == 1 and ip[LSTM_ACT_H] == 1
            and fp[LSTM_CELL_CLIP] <= 0 and fp[LSTM_GATE_CLIP] <= 0)


@njit(**NJIT)
def _plain_sequence(x, w_h, aux, peep, reverse, length, h, c, y):
    """Sequences of one length (<= T) for every batch row, default cell without projection
    (peepholes when peep: aux rows 4-6), x = W_x x_t [T, N, >=4H] precomputed: per step one
    panel GEMV pass for all rows, then one fused pass over the units writing c, h and y
    (zero from `length` on). Measured (128 units, T=29, batch 1): 52.8 us vs 72.5 us for the
    general step (per-step row bookkeeping, slicing and calls cost ~0.7 us a step); 25 units
    with peepholes, T=1200: see docs/runtime.md."""
    t_len, n_batch = x.shape[0], x.shape[1]
    n = c.shape[1]
    gp = w_h.shape[0] * 16
    z = np.empty((n_batch, gp), dtype=np.float32)
    for t in range(length, t_len):
        y[t] = 0.0
    for s in range(length):
        t = length - 1 - s if reverse else s
        for b in range(n_batch):
            xs = x[t, b]
            zb = z[b]
            for j in range(4 * n):
                zb[j] = xs[j]
            for j in range(4 * n, gp):
                zb[j] = 0.0     # padding rows of the panel GEMV
        panel_rows_acc(w_h, h, n_batch, z)
        for b in range(n_batch):
            zb = z[b]
            hb = h[b]
            cb = c[b]
            yb = y[t, b]
            if peep:
                # NOTE: the output peephole reads the new cell state
                for j in range(n):
                    cj = cb[j]
                    i = fast_sigmoid(zb[j] + aux[0, j] + aux[4, j] * cj)
                    f = fast_sigmoid(zb[n + j] + aux[1, j] + aux[5, j] * cj)
                    g = fast_tanh(zb[2 * n + j] + aux[2, j])
                    cn = f * cj + i * g
                    o = fast_sigmoid(zb[3 * n + j] + aux[3, j] + aux[6, j] * cn)
                    cb[j] = cn
                    v = o * fast_tanh(cn)
                    hb[j] = v
                    yb[j] = v
            else:
                for j in range(n):
                    i = fast_sigmoid(zb[j] + aux[0, j])
                    f = fast_sigmoid(zb[n + j] + aux[1, j])
                    g = fast_tanh(zb[2 * n + j] + aux[2, j])
                    o = fast_sigmoid(zb[3 * n + j] + aux[3, j])
                    cn = f * cb[j] + i * g
                    cb[j] = cn
                    v = o * fast_tanh(cn)
                    hb[j] = v
                    yb[j] = v


@njit(**NJIT)
def _lstm_sequence(x, w_x, pre, w_h, w_proj, aux, ip, fp, lens, h, c, y):
    """Run one direction over x [T, N, *]: pre=1 means x already holds W_x x_t [T, N, 4H]
    (one GEMM done by the caller), pre=0 means raw inputs [T, N, I] (short chunks).
    h [N, P], c [N, H] carry the state in place; y [T, N, P] receives outputs (zero past
    each sequence's length)."""
    t_len, n_batch = x.shape[0], x.shape[1]
    n_cell = c.shape[1]
    reverse = ip[LSTM_REVERSE] != 0
    if pre and ip[LSTM_PROJECTION] == 0 and _is_plain_or_peephole(ip, fp):
        # every row of one length (batch 1 always): the one-pass path
        length = shared_length(lens)
        if length >= 0:
            _plain_sequence(x, w_h, aux, ip[LSTM_PEEPHOLE], reverse, length, h, c, y)
            return
    rows = np.empty(n_batch, dtype=np.int64)
    times = np.empty(n_batch, dtype=np.int64)
    # panel GEMVs write whole 64-row groups: room for the padding rows
    z = np.zeros((n_batch, w_h.shape[0] * 16), dtype=np.float32)
    m = np.empty(n_cell, dtype=np.float32)
    for s in range(t_len):
        n_act = begin_step(s, lens, reverse, rows, times, y)
        if n_act > 0:
            _lstm_step(x, w_x, pre, w_h, w_proj, aux, ip, fp, rows, times, n_act, h, c, y, z, m)


@njit(**NJIT)
def _lstm_stream(x, wbuf, wxp, ip, fp, state, y):
    """Short-chunk streaming entry with few arguments (Numba's dispatch cost grows with
    each one): weights packed in one float32 buffer, h and c in one state buffer.
    ip: the cell's slots, then the STREAM_* slots (kernels/operands.py); wxp: W_x in panels for
    the input term.
    Returns 1 without touching the state if x holds a non-finite value (the caller raises),
    else runs the chunk (state updated in place, y [T, 1, N, P] written) and returns 0."""
    s = LSTM_N_IP
    if ip[s + STREAM_CHECK_FINITE]:
        for v in x.ravel():
            if not np.isfinite(v):
                return 1
    t_len, n_batch = x.shape[0], x.shape[1]
    n_input, n_cell, n_out = ip[s + STREAM_N_INPUT], ip[s + STREAM_N_CELL], ip[s + STREAM_N_OUT]
    g = 4 * n_cell
    gp = (g + 63) // 64 * 64
    o_x, o_h, o_p, o_a = (ip[s + STREAM_OFF_W_X], ip[s + STREAM_OFF_W_H], ip[s + STREAM_OFF_W_3],
                          ip[s + STREAM_OFF_AUX])
    width = ip[s + STREAM_AUX_WIDTH]
    w_x = wbuf[o_x:o_x + g * n_input].reshape(g, n_input)
    w_h = wbuf[o_h:o_h + gp * n_out].reshape(gp // 16, n_out, 16)
    w_proj = wbuf[o_p:o_p + n_out * n_cell].reshape(n_out, n_cell) if ip[LSTM_PROJECTION] else \
        wbuf[0:0].reshape(0, 0)
    aux = wbuf[o_a:o_a + 12 * width].reshape(12, width)
    h = state[:n_batch * n_out].reshape(n_batch, n_out)
    c = state[n_batch * n_out:n_batch * (n_out + n_cell)].reshape(n_batch, n_cell)
    lens = np.full(n_batch, t_len, dtype=np.int64)
    _lstm_sequence(project_panels(x, wxp), w_x, 1, w_h, w_proj, aux, ip, fp, lens, h, c,
                   y.reshape(t_len, n_batch, n_out))
    return 0
