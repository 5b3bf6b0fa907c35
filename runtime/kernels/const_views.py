"""Views of a generated function's packed float32 constants (`wf`, runtime/codegen): the
function's prologue takes one view per weight. Spelled inline (`wf[a:b].reshape(...)`)
each view costs the generated function's compile a reshape lowering (~70 ms under load);
called through a pointer (kernels/pointer_calls.py) it is one call of code compiled once."""
from __future__ import annotations

from numba import njit

from edgeseq.runtime.kernels.flags import NJIT


@njit(**NJIT)
def view2(w, off, d0, d1):
    return w[off:off + d0 * d1].reshape((d0, d1))


@njit(**NJIT)
def view3(w, off, d0, d1, d2):
    return w[off:off + d0 * d1 * d2].reshape((d0, d1, d2))


@njit(**NJIT)
def view4(w, off, d0, d1, d2, d3):
    return w[off:off + d0 * d1 * d2 * d3].reshape((d0, d1, d2, d3))
