"""Fewer runs of Python's cyclic garbage collector while a model loads.

Loading imports Numba and edgeseq's kernels and unpickles cached machine code: a few hundred
thousand long-lived objects and little garbage, yet every 700 allocations start a
collection, and the older generations' collections re-scan what the load built (40-100 ms
of a 0.6 s warm start). Inside `fewer_collections()` the youngest generation is collected
every `YOUNG_THRESHOLD` allocations instead: cycles (a compile on an empty cache makes
many) are still collected, in bounded batches."""
from __future__ import annotations

import gc
from contextlib import contextmanager

YOUNG_THRESHOLD = 100_000


@contextmanager
def fewer_collections():
    """Raise the youngest generation's threshold inside the block (never lower it, and
    0, automatic collection off, stays off); the previous thresholds are restored after."""
    old = gc.get_threshold()
    if old[0]:
        gc.set_threshold(max(old[0], YOUNG_THRESHOLD), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)
