"""Delta-network kernels (docs/design.md, delta-based zero skipping) for LSTM, GRU and RNN.

Per direction and batch row the kernel carries the last propagated input x̂ [I], output ĥ [P]
and two pre-activation memories: m_x = Σ W_x[:, kept]·Δx (the input part) and m_h = Σ W_h[:,
kept]·Δh (the recurrent part). At each step only the columns whose component changed by more
than θ are read, so the weights are stored TRANSPOSED (wT[k] is column k of W, contiguous):
a skipped column is a skipped contiguous block of memory. The gates are then computed from the
memories by the dense kernels' own cell code (`kernels.lstm._update_cell`, ...), so peephole,
layer norm, clips, CIFG and projection behave exactly as in the dense cell; biases are added
there too (after a layer norm, which must see the bare sum), not stored in the memories.

Weights may be float32, float16 (as uint16 bits) or int8: they are widened in registers
(`kernels.quantized.widen`). An int8 weight's per-row scale multiplies the memory when it is
read (m = Σ q·Δ accumulates unscaled; W·x̂ = scale ⊙ m), so the memories stay exact sums.
Factored W_h = U·V (LSTM): m_h lives in V-space (r values); z += U (s_V ⊙ m_h) densely.
With int8 activations (graph metadata) an int8 W_x / W_h (V) takes `absorb8`: the kept
deltas quantised to int8 per step and the column sums in int32.

counts [3] int64 accumulates: kept input columns, kept recurrent columns, row-steps run.
"""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from edgeseq.runtime.kernels.flags import NJIT
from edgeseq.runtime.kernels.activations import activate, fast_sigmoid, fast_tanh
from edgeseq.runtime.kernels.gru import _gru_gates, _update_hidden_gru
from edgeseq.runtime.kernels.linalg import begin_step, clip_inplace
from edgeseq.runtime.kernels.lstm import _is_plain, _update_cell, _update_hidden
from edgeseq.runtime.kernels.operands import (GRU_ACT_F, GRU_ACT_G, GRU_GATE_CLIP,
                                              GRU_LINEAR_BEFORE_RESET, GRU_REVERSE,
                                              LSTM_PROJECTION, LSTM_REVERSE, RNN_ACT, RNN_ALPHA,
                                              RNN_BETA, RNN_GATE_CLIP, RNN_REVERSE)
from edgeseq.runtime.kernels.quantized import _OVERLOAD_OPTIONS, _project, matvec16, widen
from edgeseq.runtime.kernels.strict import abs_bits, div32, from_bits, mul32


@njit(**NJIT)
def _axpy8(wT, idx, dv, p, acc):
    """acc += Σ dv[p+i]·W[:, idx[p+i]] over eight columns (eight row streams at once)."""
    k0, k1, k2, k3 = idx[p], idx[p + 1], idx[p + 2], idx[p + 3]
    k4, k5, k6, k7 = idx[p + 4], idx[p + 5], idx[p + 6], idx[p + 7]
    d0, d1, d2, d3 = dv[p], dv[p + 1], dv[p + 2], dv[p + 3]
    d4, d5, d6, d7 = dv[p + 4], dv[p + 5], dv[p + 6], dv[p + 7]
    for j in range(acc.shape[0]):
        acc[j] += ((widen(wT[k0, j]) * d0 + widen(wT[k1, j]) * d1) +
                   (widen(wT[k2, j]) * d2 + widen(wT[k3, j]) * d3)) + \
            ((widen(wT[k4, j]) * d4 + widen(wT[k5, j]) * d5) +
             (widen(wT[k6, j]) * d6 + widen(wT[k7, j]) * d7))


@njit(**NJIT)
def _axpy4(wT, k0, d0, k1, d1, k2, d2, k3, d3, acc):
    """acc += Σ d_i·W[:, k_i] over four columns: one read-modify-write of the memory."""
    for j in range(acc.shape[0]):
        acc[j] += (widen(wT[k0, j]) * d0 + widen(wT[k1, j]) * d1) + \
            (widen(wT[k2, j]) * d2 + widen(wT[k3, j]) * d3)


@njit(**NJIT)
def _axpy2(wT, k0, d0, k1, d1, acc):
    """acc += d0·W[:, k0] + d1·W[:, k1]."""
    for j in range(acc.shape[0]):
        acc[j] += widen(wT[k0, j]) * d0 + widen(wT[k1, j]) * d1


@njit(**NJIT)
def _axpy1(wT, k0, d0, acc):
    for j in range(acc.shape[0]):
        acc[j] += widen(wT[k0, j]) * d0


@njit(**NJIT)
def absorb(v, vhat, theta, wT, acc, idx, dv):
    """Delta step of one vector: the components with |v - v̂| > θ are kept, v̂ takes their new
    value and acc += W[:, kept]·Δ[kept] (only those columns of W are read). Returns how many
    columns were kept. idx/dv are scratch of len(v)."""
    n = 0
    for k in range(v.shape[0]):
        d = v[k] - vhat[k]
        if abs(d) > theta:
            vhat[k] = v[k]
            idx[n] = k
            dv[n] = d
            n += 1
    p = 0
    while p + 8 <= n:
        _axpy8(wT, idx, dv, p, acc)
        p += 8
    while p + 4 <= n:
        _axpy4(wT, idx[p], dv[p], idx[p + 1], dv[p + 1], idx[p + 2], dv[p + 2], idx[p + 3],
               dv[p + 3], acc)
        p += 4
    if p + 2 <= n:
        _axpy2(wT, idx[p], dv[p], idx[p + 1], dv[p + 1], acc)
        p += 2
    if p < n:
        _axpy1(wT, idx[p], dv[p], acc)
    return n


# ---- int8 activations: the column-sparse update in integer arithmetic --------------------
# (edgeseq.reference.delta_absorb8 defines the bits; docs/quant.md "Delta kernels with int8
# activations"): the kept deltas are quantised as one int8 vector per step (s = max|d|/127),
# Σ_k w_jk·q_k is summed exactly in int32 and the memory takes float32(float32(Σ)·s) once;
# x̂ moves by the quantised delta q_k·s (what the memory holds), not to x.

@njit(**NJIT)
def _isum(wT, ks, qs, j):
    """Σ_i W[j, ks[i]]·qs[i] over a tuple of 1, 2, 4 or 8 columns, exact in int32: products
    and pair sums in int16 (|w|, |q| ≤ 127: a pair ≤ 32258), pairs widened and added."""
    if len(ks) == 1:
        return np.int32(np.int16(np.int16(wT[ks[0], j]) * qs[0]))
    t = np.int32(0)
    for i in range(0, len(ks), 2):
        t += np.int32(np.int16(np.int16(wT[ks[i], j]) * qs[i] +
                               np.int16(wT[ks[i + 1], j]) * qs[i + 1]))
    return t


@njit(**NJIT)
def _icols(wT, ks, qs, acc32, mem, s, first, last):
    """One group of kept columns (a tuple: one compiled loop per width): the first group
    writes the int32 row sums, later ones add to them, the last one ends in the memory,
    mem += float32(float32(Σ)·s): a kept column costs one pass over the rows, as in `absorb`."""
    n = mem.shape[0]
    if last and first:
        for j in range(n):
            mem[j] = mem[j] + mul32(np.float32(_isum(wT, ks, qs, j)), s)
    elif last:
        for j in range(n):
            mem[j] = mem[j] + mul32(np.float32(np.int32(acc32[j] + _isum(wT, ks, qs, j))), s)
    elif first:
        for j in range(n):
            acc32[j] = _isum(wT, ks, qs, j)
    else:
        for j in range(n):
            acc32[j] = np.int32(acc32[j] + _isum(wT, ks, qs, j))


@njit(**NJIT)
def absorb8(v, vhat, theta, wT, acc, idx, dv, qv, acc32):
    """`absorb` with int8 activations for an int8 W (`edgeseq.reference.delta_absorb8` bit
    for bit): kept = |v - v̂| > θ; q = the kept deltas quantised as one int8 vector
    (s = max|d|/127); columns with q = 0 are dropped (v̂ unchanged, not read, not counted);
    v̂_k += float32(q_k·s); acc += float32(float32(Σ_k W[:, k]·q_k) · s), the sum exact in
    int32. qv int32 [len(v)] and acc32 int32 [len(acc)] are scratch. Returns the number
    of columns read."""
    n = 0
    bits = np.int32(0)
    for k in range(v.shape[0]):
        d = v[k] - vhat[k]
        if abs(d) > theta:
            idx[n] = k
            dv[n] = d
            bits = max(bits, abs_bits(d))
            n += 1
    if n == 0:
        return 0
    s = div32(from_bits(bits), np.float32(127.0))
    inv = div32(np.float32(1.0), s)
    zeros = 0
    for i in range(n):      # vectorises (no branch): q of every kept delta
        r = np.rint(mul32(dv[i], inv))
        q = np.int16(min(max(r, np.float32(-127.0)), np.float32(127.0)))
        qv[i] = q
        zeros += q == 0
    for i in range(n):
        vhat[idx[i]] += mul32(np.float32(qv[i]), s)
    m = n
    if zeros:               # |d_k| < s/2: the column is not read (v̂_k unchanged: q = 0)
        m = 0
        for i in range(n):
            if qv[i] != 0:
                idx[m] = idx[i]
                qv[m] = qv[i]
                m += 1
    p = 0
    while p < m:       # groups of 8, then 4, 2, 1 columns
        if m - p >= 8:
            _icols(wT, (idx[p], idx[p + 1], idx[p + 2], idx[p + 3], idx[p + 4], idx[p + 5],
                        idx[p + 6], idx[p + 7]),
                   (qv[p], qv[p + 1], qv[p + 2], qv[p + 3], qv[p + 4], qv[p + 5], qv[p + 6],
                    qv[p + 7]), acc32, acc, s, p == 0, p + 8 == m)
            p += 8
        elif m - p >= 4:
            _icols(wT, (idx[p], idx[p + 1], idx[p + 2], idx[p + 3]),
                   (qv[p], qv[p + 1], qv[p + 2], qv[p + 3]), acc32, acc, s, p == 0, p + 4 == m)
            p += 4
        elif m - p >= 2:
            _icols(wT, (idx[p], idx[p + 1]), (qv[p], qv[p + 1]), acc32, acc, s, p == 0,
                   p + 2 == m)
            p += 2
        else:
            _icols(wT, (idx[p],), (qv[p],), acc32, acc, s, p == 0, True)
            p += 1
    return m


def _absorb8_for(v, vhat, theta, wT, acc, idx, dv, qv, acc32):
    """`absorb8` where W is int8; compiled to nothing for float weights (never called there:
    their q8 flag is 0), so float/fp16 delta kernels do not compile the integer update."""
    raise NotImplementedError


@overload(_absorb8_for, jit_options=_OVERLOAD_OPTIONS)
def _absorb8_forms(v, vhat, theta, wT, acc, idx, dv, qv, acc32):
    if wT.dtype == types.int8:
        def int8_weights(v, vhat, theta, wT, acc, idx, dv, qv, acc32):
            return absorb8(v, vhat, theta, wT, acc, idx, dv, qv, acc32)
        return int8_weights

    def other(v, vhat, theta, wT, acc, idx, dv, qv, acc32):
        return 0
    return other


@njit(**NJIT)
def absorb_any(int8act, v, vhat, theta, wT, acc, idx, dv, qv, acc32):
    """`absorb8` when int8act (an int8 W with int8 activations), else `absorb`."""
    if int8act:
        return _absorb8_for(v, vhat, theta, wT, acc, idx, dv, qv, acc32)
    return absorb(v, vhat, theta, wT, acc, idx, dv)


@njit(**NJIT)
def read_memory(mem, scale, out, accumulate):
    """out (+)= scale ⊙ mem (no scale when `scale` is empty)."""
    n = mem.shape[0]
    if scale.shape[0]:
        if accumulate:
            for j in range(n):
                out[j] += scale[j] * mem[j]
        else:
            for j in range(n):
                out[j] = scale[j] * mem[j]
    else:
        if accumulate:
            for j in range(n):
                out[j] += mem[j]
        else:
            for j in range(n):
                out[j] = mem[j]


@njit(**NJIT)
def _scratch(n_batch, width):
    """Per-call scratch: active rows and their time indices, kept column indices and deltas."""
    return (np.empty(n_batch, dtype=np.int64), np.empty(n_batch, dtype=np.int64),
            np.empty(width, dtype=np.int64), np.empty(width, dtype=np.float32))


@njit(**NJIT)
def _scratch8(q8, width, rows):
    """Scratch of `absorb8` (quantised deltas, int32 row sums); empty without int8 columns."""
    if q8[0] == 0 and q8[1] == 0:
        width = rows = 0
    return np.empty(width, dtype=np.int16), np.empty(rows, dtype=np.int32)


@njit(**NJIT)
def _plain_delta_cell(mx, mh, aux, c, h, yt):
    """The default LSTM cell (sigmoid/tanh/tanh, no peephole, coupling, layer norm, clips or
    projection) straight from the two memories in one vectorisable pass: no gate buffer, no
    separate memory read (the dense kernel's `_plain_cell`, same rational activations)."""
    n_cell = c.shape[0]
    for j in range(n_cell):
        i = fast_sigmoid(mx[j] + mh[j] + aux[0, j])
        f = fast_sigmoid(mx[n_cell + j] + mh[n_cell + j] + aux[1, j])
        g = fast_tanh(mx[2 * n_cell + j] + mh[2 * n_cell + j] + aux[2, j])
        o = fast_sigmoid(mx[3 * n_cell + j] + mh[3 * n_cell + j] + aux[3, j])
        cn = f * c[j] + i * g
        c[j] = cn
        hn = o * fast_tanh(cn)
        h[j] = hn
        yt[j] = hn


@njit(**NJIT)
def _plain_delta_cell_scaled(mx, sx, mh, sh, aux, c, h, yt):
    """`_plain_delta_cell` for int8 weights: W x̂ = s_x ⊙ m_x, W_h ĥ = s_h ⊙ m_h."""
    n = c.shape[0]
    for j in range(n):
        i = fast_sigmoid(sx[j] * mx[j] + sh[j] * mh[j] + aux[0, j])
        f = fast_sigmoid(sx[n + j] * mx[n + j] + sh[n + j] * mh[n + j] + aux[1, j])
        g = fast_tanh(sx[2 * n + j] * mx[2 * n + j] + sh[2 * n + j] * mh[2 * n + j] + aux[2, j])
        o = fast_sigmoid(sx[3 * n + j] * mx[3 * n + j] + sh[3 * n + j] * mh[3 * n + j]
                         + aux[3, j])
        cn = f * c[j] + i * g
        c[j] = cn
        hn = o * fast_tanh(cn)
        h[j] = hn
        yt[j] = hn


@njit(**NJIT)
def lstm_delta_sequence(x, wxT, sx, whT, sh, q8, u, factored, w_proj, aux, ip, fp, lens, h,
                        c, y, xhat, hhat, mx, mh, th, counts):
    """One direction over raw inputs x [T, N, I]. wxT [I, 4H], whT [P, 4H] (factored: V^T
    [P, r], u = packed U [4H, r]); sx/sh per-row scales or empty; q8 int64 [2]: W_x / W_h
    (V) update with int8 activations (`absorb8`); w_proj packed (or empty);
    aux/ip/fp packed as for `kernels.lstm`. h [N, P], c [N, H] carry the state in place;
    xhat [N, I], hhat [N, P], mx [N, 4H], mh [N, 4H or r] carry the delta state in place;
    th = (θx, θh)."""
    t_len, n_batch = x.shape[0], x.shape[1]
    n_cell = c.shape[1]
    reverse = ip[LSTM_REVERSE] != 0
    thx = np.float32(th[0])
    thh = np.float32(th[1])
    rows, times, idx, dv = _scratch(n_batch, max(x.shape[2], h.shape[1]))
    qv, acc32 = _scratch8(q8, max(x.shape[2], h.shape[1]), max(mx.shape[1], mh.shape[1]))
    x8, h8 = q8[0] != 0, q8[1] != 0     # int8 activations for W_x / W_h (absorb8)
    one = np.zeros(1, dtype=np.int64)
    z = np.empty((n_batch, 4 * n_cell), dtype=np.float32)
    tmp = np.empty((n_batch, mh.shape[1]), dtype=np.float32)
    m = np.empty(n_cell, dtype=np.float32)
    mm = np.empty((1, n_cell), dtype=np.float32)
    pr = np.empty((1, h.shape[1]), dtype=np.float32)
    # the default cell: memories read inside the one-pass cell (int8: scaled on the read)
    fused = not factored and ip[LSTM_PROJECTION] == 0 and _is_plain(ip, fp)
    scaled = sx.shape[0] > 0 or sh.shape[0] > 0
    if fused and scaled:
        sx1 = sx if sx.shape[0] else np.ones(mx.shape[1], dtype=np.float32)
        sh1 = sh if sh.shape[0] else np.ones(mh.shape[1], dtype=np.float32)
    else:
        sx1 = sh1 = np.empty(0, dtype=np.float32)
    for s in range(t_len):
        n_act = begin_step(s, lens, reverse, rows, times, y)
        if n_act == 0:
            continue
        if fused:
            for a in range(n_act):
                b = rows[a]
                counts[0] += absorb_any(x8, x[times[a], b], xhat[b], thx, wxT, mx[b], idx, dv,
                                        qv, acc32)
                counts[1] += absorb_any(h8, h[b], hhat[b], thh, whT, mh[b], idx, dv, qv, acc32)
                if scaled:
                    _plain_delta_cell_scaled(mx[b], sx1, mh[b], sh1, aux, c[b], h[b],
                                             y[times[a], b])
                else:
                    _plain_delta_cell(mx[b], mh[b], aux, c[b], h[b], y[times[a], b])
            counts[2] += n_act
            continue
        for a in range(n_act):
            b = rows[a]
            counts[0] += absorb_any(x8, x[times[a], b], xhat[b], thx, wxT, mx[b], idx, dv,
                                        qv, acc32)
            counts[1] += absorb_any(h8, h[b], hhat[b], thh, whT, mh[b], idx, dv, qv, acc32)
            read_memory(mx[b], sx, z[b], False)
            if factored:
                read_memory(mh[b], sh, tmp[b], False)
            else:
                read_memory(mh[b], sh, z[b], True)
        counts[2] += n_act
        if factored:
            matvec16(u, tmp, rows, n_act, z, True)       # int16 products when I8Q16
        for a in range(n_act):
            b = rows[a]
            zb = z[b]
            cb = c[b]
            _update_cell(zb, cb, aux, ip, fp)
            _update_hidden(zb, cb, m, aux, ip, fp)
            hb = h[b]
            if ip[LSTM_PROJECTION]:
                _project(w_proj, m, aux, fp, hb, mm, pr, one)
            else:
                for j in range(n_cell):
                    hb[j] = m[j]
            y[times[a], b, :] = hb


@njit(**NJIT)
def _gru_lbr_delta_cell(mx, mh, aux, h, yt):
    """GRU (linear_before_reset = 1, sigmoid/tanh, no clip) straight from the memories in one
    vectorisable pass: z, r, n = tanh(W_xn x + b_xn + r (W_hn h + b_hn)), h = n + z (h - n)."""
    n_hidden = h.shape[0]
    for j in range(n_hidden):
        z = fast_sigmoid(mx[j] + mh[j] + aux[0, j] + aux[3, j])
        r = fast_sigmoid(mx[n_hidden + j] + mh[n_hidden + j] + aux[1, j] + aux[4, j])
        n = fast_tanh(mx[2 * n_hidden + j] + aux[2, j] + r * (mh[2 * n_hidden + j] + aux[5, j]))
        hn = n + z * (h[j] - n)
        h[j] = hn
        yt[j] = hn


@njit(**NJIT)
def gru_delta_sequence(x, wxT, sx, whT, sh, q8, w_hh, aux, ip, fp, lens, h, y,
                       xhat, hhat, mx, mh, th, counts):
    """One direction of a GRU (ONNX z, r, h). wxT [I, 3H]; whT [H, 3H] when
    linear_before_reset = 1 (the h gate's recurrent term r ⊙ (W_hh h + b) is linear in h,
    so its memory is exact), else [H, 2H] (z, r only) and w_hh = packed W_hh [H, H] runs
    densely on r ⊙ h each step. Packing of aux/ip/fp as `kernels.gru`."""
    t_len, n_batch = x.shape[0], x.shape[1]
    n_hidden = h.shape[1]
    lbr = ip[GRU_LINEAR_BEFORE_RESET] != 0
    reverse = ip[GRU_REVERSE] != 0
    thx = np.float32(th[0])
    thh = np.float32(th[1])
    rows, times, idx, dv = _scratch(n_batch, max(x.shape[2], n_hidden))
    qv, acc32 = _scratch8(q8, max(x.shape[2], n_hidden), max(mx.shape[1], mh.shape[1]))
    x8, h8 = q8[0] != 0, q8[1] != 0     # int8 activations for W_x / W_h (absorb8)
    xz = np.empty((n_batch, 3 * n_hidden), dtype=np.float32)
    rz = np.zeros((n_batch, 3 * n_hidden), dtype=np.float32)
    tmp = np.empty((n_batch, n_hidden), dtype=np.float32)
    hh = np.empty((n_batch, n_hidden), dtype=np.float32)
    # linear_before_reset = 1 with sigmoid/tanh, no clip, unscaled weights: one-pass cell
    fused = (lbr and ip[GRU_ACT_F] == 0 and ip[GRU_ACT_G] == 1 and fp[GRU_GATE_CLIP] <= 0
             and sx.shape[0] == 0 and sh.shape[0] == 0)
    for s in range(t_len):
        n_act = begin_step(s, lens, reverse, rows, times, y)
        if n_act == 0:
            continue
        if fused:
            for a in range(n_act):
                b = rows[a]
                counts[0] += absorb_any(x8, x[times[a], b], xhat[b], thx, wxT, mx[b], idx, dv,
                                        qv, acc32)
                counts[1] += absorb_any(h8, h[b], hhat[b], thh, whT, mh[b], idx, dv, qv, acc32)
                _gru_lbr_delta_cell(mx[b], mh[b], aux, h[b], y[times[a], b])
            counts[2] += n_act
            continue
        for a in range(n_act):
            b = rows[a]
            counts[0] += absorb_any(x8, x[times[a], b], xhat[b], thx, wxT, mx[b], idx, dv,
                                        qv, acc32)
            counts[1] += absorb_any(h8, h[b], hhat[b], thh, whT, mh[b], idx, dv, qv, acc32)
            read_memory(mx[b], sx, xz[b], False)
            read_memory(mh[b], sh, rz[b, :mh.shape[1]], False)
            _gru_gates(xz[b], rz[b], h[b], tmp[b], n_hidden, aux, ip, fp, lbr)
        counts[2] += n_act
        if not lbr:
            # NOTE: W_hh (r ⊙ h) is not linear in Δh (r changes every step): computed densely
            matvec16(w_hh, tmp, rows, n_act, hh, False)  # int16 products when I8Q16
            for a in range(n_act):
                b = rows[a]
                for j in range(n_hidden):
                    xz[b, 2 * n_hidden + j] += aux[2, j] + hh[b, j] + aux[5, j]
        for a in range(n_act):
            b = rows[a]
            xb = xz[b]
            hb = h[b]
            _update_hidden_gru(xb, hb, n_hidden, ip, fp)
            y[times[a], b, :] = hb


@njit(**NJIT)
def rnn_delta_sequence(x, wxT, sx, whT, sh, q8, aux, ip, fp, lens, h, y,
                       xhat, hhat, mx, mh, th, counts):
    """One direction of a simple RNN: h = act(clip(W x̂ + R ĥ + b)) from the two memories."""
    t_len, n_batch = x.shape[0], x.shape[1]
    n_hidden = h.shape[1]
    reverse = ip[RNN_REVERSE] != 0
    thx = np.float32(th[0])
    thh = np.float32(th[1])
    rows, times, idx, dv = _scratch(n_batch, max(x.shape[2], n_hidden))
    qv, acc32 = _scratch8(q8, max(x.shape[2], n_hidden), max(mx.shape[1], mh.shape[1]))
    x8, h8 = q8[0] != 0, q8[1] != 0     # int8 activations for W_x / W_h (absorb8)
    z = np.empty(n_hidden, dtype=np.float32)
    for s in range(t_len):
        n_act = begin_step(s, lens, reverse, rows, times, y)
        for a in range(n_act):
            b = rows[a]
            counts[0] += absorb_any(x8, x[times[a], b], xhat[b], thx, wxT, mx[b], idx, dv,
                                        qv, acc32)
            counts[1] += absorb_any(h8, h[b], hhat[b], thh, whT, mh[b], idx, dv, qv, acc32)
            read_memory(mx[b], sx, z, False)
            read_memory(mh[b], sh, z, True)
            for j in range(n_hidden):
                z[j] += aux[0, j]
            clip_inplace(z, 0, n_hidden, fp[RNN_GATE_CLIP])
            activate(z, 0, n_hidden, ip[RNN_ACT], fp[RNN_ALPHA], fp[RNN_BETA])
            h[b, :] = z
            y[times[a], b, :] = z
        counts[2] += n_act


@njit(**NJIT)
def absorb_rows(v, vhat, wT, acc, int8act):
    """Propagate whole vectors (every non-zero change) for each batch row: used once to put
    an initial state's contribution W_h h0 into the memory (int8act: as `absorb8`, so ĥ
    becomes h0's int8 rounding)."""
    idx = np.empty(v.shape[1], dtype=np.int64)
    dv = np.empty(v.shape[1], dtype=np.float32)
    qv = np.empty(v.shape[1], dtype=np.int16)
    acc32 = np.empty(acc.shape[1], dtype=np.int32)
    for b in range(v.shape[0]):
        absorb_any(int8act, v[b], vhat[b], np.float32(0.0), wT, acc[b], idx, dv, qv, acc32)
