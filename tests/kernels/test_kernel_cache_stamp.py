"""A kernel's Numba cache entry is stamped with every kernel source, not its own file only:
a cached kernel links the kernels it calls, so a changed callee must invalidate it (a stale
`delta.py` cache kept an old `quantized.py` tile and drifted in the last bit)."""
from edgeseq.runtime.kernels import cache_stamp, delta, lstm


def test_kernel_caches_are_stamped_with_the_whole_kernel_package():
    for fn in (delta.lstm_delta_sequence, lstm._plain_sequence):
        locator = fn._cache._impl.locator
        assert type(locator).__name__.startswith("Kernels")
        assert locator.get_source_stamp() == cache_stamp.KERNELS_DIGEST


def test_the_digest_covers_every_kernel_file():
    names = {p.name for p in cache_stamp._HERE.glob("*.py")}
    assert {"delta.py", "quantized.py", "lstm.py", "flags.py"} <= names
    assert len(cache_stamp.KERNELS_DIGEST) == 64
