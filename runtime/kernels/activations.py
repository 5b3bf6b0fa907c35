"""Vectorisable activation functions for the recurrent kernels.

libm `tanh`/`exp` never vectorise in Numba; the rational tanh below (Eigen's
`generic_fast_tanh_float` coefficients, a [13/6] odd/even rational on [-7.9, 7.9]) does, and
has max abs error ~3e-7 against float64 tanh. sigmoid(x) = 0.5 + 0.5 tanh(x / 2).
Activation functions are chosen by an int code inside the kernels: the position of the name in
`edgeseq.ops.ACTIVATIONS` (`edgeseq.ops.ACT_CODES`; the kernel families translate names, this
module knows only codes). The branch sits outside each loop so every loop body stays
branch-free.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from edgeseq.runtime.kernels.flags import NJIT

_CLAMP = np.float32(7.90531110763549805)
_A1 = np.float32(4.89352455891786e-03)
_A3 = np.float32(6.37261928875436e-04)
_A5 = np.float32(1.48572235717979e-05)
_A7 = np.float32(5.12229709037114e-08)
_A9 = np.float32(-8.60467152213735e-11)
_A11 = np.float32(2.00018790482477e-13)
_A13 = np.float32(-2.76076847742355e-16)
_B0 = np.float32(4.89352518554385e-03)
_B2 = np.float32(2.26843463243900e-03)
_B4 = np.float32(1.18534705686654e-04)
_B6 = np.float32(1.19825839466702e-06)


@njit(**NJIT)
def fast_tanh(x):
    # clamping with min/max also maps +-inf to +-1 (no nnan/ninf flags, so this is safe)
    x = min(max(x, -_CLAMP), _CLAMP)
    x2 = x * x
    p = x2 * _A13 + _A11
    p = x2 * p + _A9
    p = x2 * p + _A7
    p = x2 * p + _A5
    p = x2 * p + _A3
    p = x2 * p + _A1
    p = x * p
    q = x2 * _B6 + _B4
    q = x2 * q + _B2
    q = x2 * q + _B0
    return p / q


@njit(**NJIT)
def fast_sigmoid(x):
    return np.float32(0.5) + np.float32(0.5) * fast_tanh(np.float32(0.5) * x)


@njit(**NJIT)
def activate(buf, start, n, code, alpha, beta):
    """buf[start:start+n] = act(buf[start:start+n]) in place."""
    a = np.float32(alpha)
    b = np.float32(beta)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    if code == 0:  # sigmoid
        for k in range(start, start + n):
            buf[k] = fast_sigmoid(buf[k])
    elif code == 1:  # tanh
        for k in range(start, start + n):
            buf[k] = fast_tanh(buf[k])
    elif code == 2:  # relu
        for k in range(start, start + n):
            buf[k] = max(buf[k], zero)
    elif code == 3:  # affine
        for k in range(start, start + n):
            buf[k] = a * buf[k] + b
    elif code == 4:  # leaky_relu
        for k in range(start, start + n):
            v = buf[k]
            buf[k] = v if v >= zero else a * v
    elif code == 5:  # thresholded_relu
        for k in range(start, start + n):
            v = buf[k]
            buf[k] = v if v > a else zero
    elif code == 6:  # scaled_tanh
        for k in range(start, start + n):
            buf[k] = a * fast_tanh(b * buf[k])
    elif code == 7:  # hard_sigmoid
        for k in range(start, start + n):
            buf[k] = min(max(a * buf[k] + b, zero), one)
    elif code == 8:  # elu
        for k in range(start, start + n):
            v = buf[k]
            buf[k] = v if v >= zero else a * (np.exp(v) - one)
    elif code == 9:  # softsign
        for k in range(start, start + n):
            v = buf[k]
            buf[k] = v / (one + abs(v))
    else:  # softplus
        for k in range(start, start + n):
            v = buf[k]
            # log(1 + e^v) without overflow: max(v, 0) + log1p(e^-|v|)
            buf[k] = max(v, zero) + np.log1p(np.exp(-abs(v)))
