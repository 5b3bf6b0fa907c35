"""edgeseq: compile and run recurrent sequence models (LSTM, GRU, RNN) on small machines."""
from __future__ import annotations

__version__ = "0.1.0"

from edgeseq.errors import (ArtifactError, EdgeseqError, GraphError, InputError, ShapeError,
                            UnsupportedModelError)
from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import Op

__all__ = ["__version__", "Graph", "Node", "Value", "Op", "EdgeseqError", "GraphError",
           "ShapeError", "UnsupportedModelError", "ArtifactError", "InputError", "load",
           "compile_native"]

# Sub-modules reachable as attributes after a bare `import edgeseq`, imported on first use
# (PEP 562) so that `import edgeseq` loads neither Numba nor any converter's framework.
_LAZY_SUBMODULES = frozenset({"artifact", "converters", "quant", "runtime", "reference"})


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib
        return importlib.import_module(f"edgeseq.{name}")
    raise AttributeError(f"module 'edgeseq' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY_SUBMODULES)


def load(path: str, native_code: bool | None = None, **options):
    """Load an .eseq artifact and compile it: returns an `edgeseq.runtime.Model`.

    native_code=True runs the machine code `edgeseq compile` stored in the artifact instead
    (a NativeModel; no Numba is imported): trust the file like a shared library. None (the
    default) uses it only for artifacts whose checksum is listed in the allow-list file
    (runtime/native/loader.py); False never. Without code for this CPU the model is compiled
    as usual, and `describe()` and one warning say why."""
    from edgeseq.gc_pause import fewer_collections
    with fewer_collections():
        return _load(path, native_code, options)


def _load(path: str, native_code: bool | None, options: dict):
    # lazy imports: keep `import edgeseq` light
    from edgeseq.runtime.native.loader import load_native
    model, note = load_native(path, native_code, options)
    if model is not None:
        return model
    try:
        from edgeseq.runtime.session import load as _load_jit
    except ModuleNotFoundError as e:      # a board install without Numba
        if e.name not in ("numba", "llvmlite") or not native_code:
            raise
        raise UnsupportedModelError(f"{path}: {note or 'no native code used'}; the JIT runtime "
                                    f"it falls back to needs {e.name}, which is not installed "
                                    f"(compile the artifact for this CPU: edgeseq compile "
                                    f"--target ..., or pip install numba)") from None
    model = _load_jit(path, **options)
    if note:
        import warnings
        model._codegen_note += "\n" + note
        warnings.warn(note, UserWarning, stacklevel=3)
    return model


def compile_native(model, out, targets=("native",)):
    """Write artifact `out`: `model` (an .eseq path or a Graph) plus machine code for each
    target ("native", "x86-64-v3", "cortex-a72", ...; see `edgeseq compile --help`)."""
    from edgeseq.runtime.aot.compile import compile_native as _compile
    return _compile(model, out, targets)
