"""Thread counts while a Model runs.

The kernels are single-threaded Numba code without `prange` (batch-1 latency first: a
parallel region per step does not pay below ~512 units here), so Numba's thread pool is never
started. The BLAS behind NumPy (the one input-projection GEMM per recurrent layer, MatMul,
Gemm, Conv1d) is pinned to `threads` for the duration of a call and restored afterwards:
measured on a shared 2-core machine, OpenBLAS's default of one thread per core made a
29-step batch-1 classifier 70x slower (threads spin-waiting for busy cores).

Pinning uses threadpoolctl when it is installed; without it the BLAS keeps its own setting
(`blas_pinning()` says which)."""
from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _blas_libs() -> tuple:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return ()
    import numpy  # noqa: F401  (make sure NumPy's BLAS is loaded before looking for it)
    return tuple(c for c in ThreadpoolController().lib_controllers if c.user_api == "blas")


def blas_pinning() -> str:
    """How BLAS threads are controlled, for reports."""
    libs = _blas_libs()
    if not libs:
        return "BLAS threads not pinned (install threadpoolctl)"
    return ", ".join(f"{c.internal_api} pinned per call" for c in libs)


class ThreadPins:
    """Context manager: BLAS thread count = n inside, previous value restored on exit.
    Process-global, like the BLAS setting itself: concurrent calls from several threads
    all pin the same value, so only the restore can interleave (speed, never results)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.libs = _blas_libs()

    def __enter__(self) -> list:
        saved = []
        for lib in self.libs:
            before = lib.num_threads
            if before != self.n:
                lib.set_num_threads(self.n)
            saved.append(before)
        return saved

    def pin(self) -> list:
        return self.__enter__()

    def restore(self, saved: list) -> None:
        for lib, before in zip(self.libs, saved):
            if before != self.n:
                lib.set_num_threads(before)
