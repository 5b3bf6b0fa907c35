"""Numba compilation settings for every runtime kernel, from one place.

Every `@njit` in `runtime/` must be written `@njit(**NJIT)` (a test checks this), so that a
kernel cannot silently drop fastmath or change the error model. They live inside `kernels/`
so that compiled code imports nothing above it; `runtime/config.py` re-exports them.
"""
from __future__ import annotations

from edgeseq.runtime.kernels import cache_stamp  # noqa: F401  (one cache stamp per package)

# NOTE: never "nnan"/"ninf": sigmoid and tanh must saturate correctly at +-inf, and clamps
# written with min/max must keep their meaning. "reassoc" + "contract" let LLVM vectorise and
# fuse the dot-product loops; "afn"/"arcp" allow a reciprocal instead of a division.
FASTMATH_FLAGS = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

# error_model="numpy": no ZeroDivisionError check inside loops (that check blocks
# vectorisation; measured 6x slower activation loops with the default "python" model).
NJIT: dict = {
    "fastmath": set(FASTMATH_FLAGS),
    "error_model": "numpy",
    "cache": True,
    "nogil": True,          # one Model shared by threads, each with its own Stream
    "boundscheck": False,
    # nothing takes a kernel's C-callable wrapper (@cfunc style): Python calls the CPython
    # wrapper, compiled code calls the Numba-convention function (kernels/pointer_calls.py).
    # Without it every compiled function costs ~10 % less to compile (an empty-cache start)
    "no_cfunc_wrapper": True,
}
