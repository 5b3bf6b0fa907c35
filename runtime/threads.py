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


def _raw_openblas(lib) -> tuple | None:
    """(get, set) ctypes functions of a pthreads OpenBLAS, or None. NOTE: calling them
    directly instead of through threadpoolctl's controller: pin + restore in a silero-vad
    frame measured ~6 us that way (property, symbol lookup and a lock per call), most of
    the frame's Python outside the kernels."""
    if lib.internal_api != "openblas" or getattr(lib, "threading_layer", None) == "openmp":
        return None
    for prefix in ("", "scipy_"):
        for suffix in ("", "64_", "_64"):
            get = getattr(lib.dynlib, f"{prefix}openblas_get_num_threads{suffix}", None)
            put = getattr(lib.dynlib, f"{prefix}openblas_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                return get, put
    return None


class ThreadPins:
    """Context manager: BLAS thread count = n inside, previous value restored on exit.
    Process-global, like the BLAS setting itself: concurrent calls from several threads
    all pin the same value, so only the restore can interleave (speed, never results)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.libs = _blas_libs()
        raw = [_raw_openblas(lib) for lib in self.libs]
        self._raw = raw if raw and all(r is not None for r in raw) else None

    def __enter__(self) -> list:
        if self._raw is not None:
            saved = [get() for get, _ in self._raw]
            for (_, put), before in zip(self._raw, saved):
                if before != self.n:
                    put(self.n)
            return saved
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
        if self._raw is not None:
            for (_, put), before in zip(self._raw, saved):
                if before != self.n:
                    put(before)
            return
        for lib, before in zip(self.libs, saved):
            if before != self.n:
                lib.set_num_threads(before)
