"""The error function over a float32 array (NumPy has no erf; libm's, one call per element)."""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from edgeseq.runtime.kernels.flags import NJIT


@njit(**NJIT)
def erf_f32(x):
    """erf of every element of a C-contiguous float32 array, as a new array."""
    flat = x.ravel()
    out = np.empty_like(flat)
    for k in range(flat.size):
        out[k] = math.erf(flat[k])
    return out.reshape(x.shape)
