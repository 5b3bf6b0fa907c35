"""Numba's file cache for the kernels, invalidated by any kernel source.

Numba stamps a cached function with a hash of its own source file only, but a kernel links
the kernels it calls into its machine code: after an edit of `quantized.py` (or an upgrade
that changes it), `delta.py`'s cached kernels kept the old code (a delta stream drifted from
the interpreter in the last bit). Here every function defined in this package gets one stamp,
the hash of all its sources (`KERNELS_DIGEST`, also part of the generated modules' cache key,
runtime/codegen/cache.py), through locators put in front of Numba's own.

Loading: Numba sets up its whole typing and lowering registries before every cache load
(`refresh()`: ~0.15 s on its first use in a process, most of a warm start's Numba cost),
though a cache hit only links stored machine code, which needs Numba's runtime (NRT) and
nothing else. Functions of this package and of the modules listed in `WARM_LOAD_MODULES`
(the generated whole-graph modules) load with just that; a miss compiles, and Numba's
compiler then sets the registries up itself."""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from numba.core import caching
from numba.core.runtime import rtsys

_HERE = Path(__file__).resolve().parent


def _digest() -> str:
    h = hashlib.sha256()
    for f in sorted(_HERE.glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


KERNELS_DIGEST = _digest()


@functools.lru_cache(maxsize=None)
def _in_package(py_file: str) -> bool:
    # NOTE: cached: asked per function and locator, and resolve() is a syscall per component
    try:
        return Path(py_file).resolve().parent == _HERE
    except OSError:
        return False


def _package_stamped(base: type) -> type:
    """`base` restricted to this package's files, stamped with the package digest."""
    class Locator(base):
        @classmethod
        def from_function(cls, py_func, py_file):
            if not _in_package(py_file):
                return None
            return super().from_function(py_func, py_file)

        def get_source_stamp(self):
            return KERNELS_DIGEST

        def ensure_cache_path(self):
            # NOTE: Numba creates and writes a test file per function; one check per directory
            path = self.get_cache_path()
            if path not in _ENSURED:
                super().ensure_cache_path()
                _ENSURED.add(path)
    Locator.__name__ = f"Kernels{base.__name__}"
    return Locator


_ENSURED: set[str] = set()       # cache directories found writable in this process

# module-name prefixes whose cached functions load without Numba's registries (this package's
# and, registered by runtime/codegen/cache.py, the generated modules)
WARM_LOAD_MODULES: list[str] = [__name__.rpartition(".")[0] + "."]
_numba_load_overload = caching.FunctionCache.load_overload


def _load_overload(self, sig, target_context):
    """FunctionCache.load_overload; ours link the stored code after NRT set-up only."""
    if not self._py_func.__module__.startswith(tuple(WARM_LOAD_MODULES)):
        return _numba_load_overload(self, sig, target_context)
    rtsys.initialize(target_context)
    # NOTE: the one registry module that adds linker symbols when imported (the hash
    # secret, which cached code that hashes links to); the pickled environments of array
    # code import it anyway
    import numba.cpython.hashing  # noqa: F401
    with self._guard_against_spurious_io_errors():
        return self._load_overload(sig, target_context)


if not any(getattr(c, "__name__", "").startswith("Kernels")
           for c in caching.CacheImpl._locator_classes):
    caching.CacheImpl._locator_classes[:0] = [
        _package_stamped(c) for c in (caching.UserProvidedCacheLocator,
                                      caching.InTreeCacheLocator,
                                      caching.UserWideCacheLocator)]
    # NOTE: private Numba API (0.59-0.68): where it is missing, Numba's own load path stays
    if all(hasattr(caching.FunctionCache, a) for a in ("_load_overload",
                                                     "_guard_against_spurious_io_errors")):
        caching.FunctionCache.load_overload = _load_overload
