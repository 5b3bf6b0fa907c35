"""Disk cache of generated modules: the source is written once under the cache directory,
named by a hash of the source itself, edgeseq's and Numba's versions and the host CPU, and
imported from there, so Numba's file cache (`cache=True`, `__pycache__` beside the file)
serves a second process, and graphs with the same structure share one compiled function."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import sys
import tempfile
from pathlib import Path
from types import ModuleType

# where generated modules (and Numba's cache of them) live; EDGESEQ_CACHE_DIR overrides
CACHE_DIR = os.environ.get("EDGESEQ_CACHE_DIR") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
    "edgeseq")
# module name of a generated module: this prefix + its cache key
MODULE_PREFIX = "edgeseq_generated_"


def _host() -> str:
    import numba
    from llvmlite import binding
    return f"{platform.machine()}-{binding.get_host_cpu_name()}-numba{numba.__version__}"


def _kernels_digest() -> str:
    """Hash of the kernel sources the generated code calls: Numba's file cache checks only
    the generated file itself, so a changed kernel must change the module's name."""
    from edgeseq.runtime.kernels.cache_stamp import KERNELS_DIGEST
    return KERNELS_DIGEST


def cache_key(source: str) -> str:
    """Content address of a generated module (source + versions + kernel sources + CPU)."""
    from edgeseq import __version__
    h = hashlib.sha256()
    for part in (source, __version__, _kernels_digest(), _host()):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def _warm_loads() -> None:
    """Cached generated functions load as the kernels do (kernels/cache_stamp.py)."""
    from edgeseq.runtime.kernels.cache_stamp import WARM_LOAD_MODULES
    if MODULE_PREFIX not in WARM_LOAD_MODULES:
        WARM_LOAD_MODULES.append(MODULE_PREFIX)


def _directory() -> Path:
    d = Path(CACHE_DIR) / "codegen"
    try:
        d.mkdir(parents=True, exist_ok=True)
        if os.access(d, os.W_OK):
            return d
    except OSError:
        pass
    d = Path(tempfile.gettempdir()) / f"edgeseq-codegen-{os.getuid()}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def load_module(source: str) -> tuple[ModuleType, Path]:
    """Import the module of this source from the cache (writing it on first use)."""
    key = cache_key(source)
    name = MODULE_PREFIX + key
    if name in sys.modules:
        mod = sys.modules[name]
        return mod, Path(mod.__file__)
    path = _directory() / f"g_{key}.py"
    if not path.exists() or path.read_text() != source:
        # NOTE: write-then-rename, so a concurrent process never imports a half-written file
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(source)
        os.replace(tmp, path)
    _warm_loads()
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod, path
