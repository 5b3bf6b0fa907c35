"""Runtime settings a user may read or set.

The Numba flags of the compiled kernels are defined in `kernels/flags.py` (compiled code
imports nothing above `kernels/`) and re-exported here.
"""
from __future__ import annotations

import os

from edgeseq.runtime.kernels.flags import FASTMATH_FLAGS, NJIT

__all__ = ["FASTMATH_FLAGS", "NJIT", "DEFAULT_THREADS"]

# Kernels are single-threaded: batch-1 latency is the first target, and a prange region per
# step does not pay below ~512 units on these machines. Sessions pin numba's thread count to
# this value while running and restore it afterwards.
DEFAULT_THREADS = int(os.environ.get("EDGESEQ_THREADS", "1"))
