"""Numba's file cache for the kernels, invalidated by any kernel source.

Numba stamps a cached function with a hash of its own source file only, but a kernel links
the kernels it calls into its machine code: after an edit of `quantized.py` (or an upgrade
that changes it), `delta.py`'s cached kernels kept the old code (a delta stream drifted from
the interpreter in the last bit). Here every function defined in this package gets one stamp,
the hash of all its sources (`KERNELS_DIGEST`, also part of the generated modules' cache key,
runtime/codegen/cache.py), through locators put in front of Numba's own."""
from __future__ import annotations

import hashlib
from pathlib import Path

from numba.core import caching

_HERE = Path(__file__).resolve().parent


def _digest() -> str:
    h = hashlib.sha256()
    for f in sorted(_HERE.glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


KERNELS_DIGEST = _digest()


def _package_stamped(base: type) -> type:
    """`base` restricted to this package's files, stamped with the package digest."""
    class Locator(base):
        @classmethod
        def from_function(cls, py_func, py_file):
            try:
                if Path(py_file).resolve().parent != _HERE:
                    return None
            except OSError:
                return None
            return super().from_function(py_func, py_file)

        def get_source_stamp(self):
            return KERNELS_DIGEST
    Locator.__name__ = f"Kernels{base.__name__}"
    return Locator


if not any(getattr(c, "__name__", "").startswith("Kernels")
           for c in caching.CacheImpl._locator_classes):
    caching.CacheImpl._locator_classes[:0] = [
        _package_stamped(c) for c in (caching.UserProvidedCacheLocator,
                                      caching.InTreeCacheLocator,
                                      caching.UserWideCacheLocator)]
