"""Fewer runs of Python's cyclic garbage collector while a model loads.

Loading imports Numba and edgeseq's kernels and unpickles cached machine code: ~90 000
long-lived objects and no garbage cycles (measured on silero-vad with warm caches: a
collection right after finds nothing unreachable), yet every 700 allocations start a
collection, and the older generations' collections re-scan what the load built (105-135 ms
of a warm start at load ~4). Inside `fewer_collections()` the youngest generation is
collected every `YOUNG_THRESHOLD` allocations instead. A block that stayed under that (a
warm load) hands what it built straight to the oldest generation (gc.freeze + unfreeze:
no scan), as surviving collections would have; a block that collected (a compile on an
empty cache makes some hundred thousand garbage objects) leaves the rest to the collector
as usual."""
from __future__ import annotations

import gc
from contextlib import contextmanager

YOUNG_THRESHOLD = 200_000


def _collections() -> int:
    return sum(s["collections"] for s in gc.get_stats())


@contextmanager
def fewer_collections():
    """Raise the youngest generation's threshold inside the block (never lower it, and
    0, automatic collection off, stays off); the previous thresholds are restored after."""
    old = gc.get_threshold()
    if not old[0]:
        yield
        return
    gc.set_threshold(max(old[0], YOUNG_THRESHOLD), *old[1:])
    before = _collections()
    try:
        yield
    finally:
        # NOTE: never when the process froze objects itself (unfreeze would thaw them)
        if _collections() == before and not gc.get_freeze_count():
            gc.freeze()
            gc.unfreeze()
        gc.set_threshold(*old)
