"""The SRU recurrence, compiled: everything after the one input GEMM is elementwise.

u [T, N, D*G*H] holds, per step, row and direction, the gate blocks W x, W_f x, W_r x (and
W_s x for a projected skip), G = 3 or 4. Per element j of direction d:
    f = sigmoid(u_f + v_f c + b_f)   r = sigmoid(u_r + v_r c + b_r)
    c = f c + (1 - f) u              h = r g(c) + (1 - r) x'
No matrix touches the recurrence, so a step costs O(H) and the sequence is one BLAS GEMM
plus this loop (the reason an SRU layer runs several times faster than an LSTM layer).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from edgeseq.runtime.kernels.activations import activate, fast_sigmoid
from edgeseq.runtime.kernels.flags import NJIT

SKIP_NONE, SKIP_INPUT, SKIP_PROJECTED = 0, 1, 2
_AFFINE = 3      # edgeseq.ops.ACT_CODES["affine"]: alpha 1, beta 0 is the identity, fused below


@njit(**NJIT)
def _step(u_c, u_f, u_r, x_s, x_scale, v_f, v_r, b_f, b_r, c_row, identity, code, alpha, beta,
          g_buf, r_buf, y_out):
    """One step of one row and direction (all arguments 1-D slices of length H, so the loops
    vectorise): c_row updated in place, y_out written. x_s times x_scale is the skip source
    (the raw input, the projected block of u, or anything times 0 for no skip)."""
    one = np.float32(1.0)
    hidden = c_row.shape[0]
    if identity:           # g = identity (the package's default): one fused loop
        for j in range(hidden):
            cp = c_row[j]
            f = fast_sigmoid(u_f[j] + v_f[j] * cp + b_f[j])
            r = fast_sigmoid(u_r[j] + v_r[j] * cp + b_r[j])
            cn = f * cp + (one - f) * u_c[j]
            c_row[j] = cn
            y_out[j] = r * cn + (one - r) * (x_scale * x_s[j])
        return
    for j in range(hidden):
        cp = c_row[j]
        f = fast_sigmoid(u_f[j] + v_f[j] * cp + b_f[j])
        r_buf[j] = fast_sigmoid(u_r[j] + v_r[j] * cp + b_r[j])
        cn = f * cp + (one - f) * u_c[j]
        c_row[j] = cn
        g_buf[j] = cn
    activate(g_buf, 0, hidden, code, alpha, beta)
    for j in range(hidden):
        r = r_buf[j]
        y_out[j] = r * g_buf[j] + (one - r) * (x_scale * x_s[j])


@njit(**NJIT)
def sru_sequence(u, x, v, b, c, lens, reverse, skip, scale, codes, alphas, betas, n_gate, y):
    """The recurrence over all steps, rows and directions. u: [T, N, D*G*H]; x: [T, N, I]
    (read for the input skip); v, b: [D, 2, H]; c: [D, N, H] initial state, final on return;
    lens: [N] steps per row (later steps emit zeros and keep c); reverse: [D] 0/1;
    codes/alphas/betas: [D] the activation g; y: [T, N, D*H] output."""
    t_len, n_batch = u.shape[0], u.shape[1]
    n_dir, hidden = c.shape[0], c.shape[2]
    g_buf = np.empty(hidden, np.float32)
    r_buf = np.empty(hidden, np.float32)
    for d in range(n_dir):
        identity = codes[d] == _AFFINE and alphas[d] == 1.0 and betas[d] == 0.0
        off = d * hidden
        # the skip source: x (its direction's slice), u's projected block, or nothing (x 0)
        src = x if skip == SKIP_INPUT else u
        s_off = off if skip == SKIP_INPUT else (d * n_gate + 3) * hidden
        s_scale = scale if skip == SKIP_INPUT else np.float32(skip == SKIP_PROJECTED)
        if skip == SKIP_NONE:
            s_off = 0
        for n in range(n_batch):
            steps = lens[n]
            c_row = c[d, n]
            for s in range(steps):
                t = steps - 1 - s if reverse[d] else s
                g0 = d * n_gate * hidden
                _step(u[t, n, g0:g0 + hidden], u[t, n, g0 + hidden:g0 + 2 * hidden],
                      u[t, n, g0 + 2 * hidden:g0 + 3 * hidden],
                      src[t, n, s_off:s_off + hidden], s_scale, v[d, 0], v[d, 1], b[d, 0],
                      b[d, 1], c_row, identity, codes[d], alphas[d], betas[d], g_buf, r_buf,
                      y[t, n, off:off + hidden])
            for t in range(steps, t_len):
                for j in range(hidden):
                    y[t, n, off + j] = np.float32(0.0)
