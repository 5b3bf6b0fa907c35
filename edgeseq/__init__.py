"""edgeseq: compile and run recurrent sequence models (LSTM, GRU, RNN) on small machines."""
from __future__ import annotations

__version__ = "0.1.0"

from edgeseq.errors import (ArtifactError, EdgeseqError, GraphError, InputError, ShapeError,
                            UnsupportedModelError)
from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import Op

__all__ = ["__version__", "Graph", "Node", "Value", "Op", "EdgeseqError", "GraphError",
           "ShapeError", "UnsupportedModelError", "ArtifactError", "InputError", "load"]

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


def load(path: str, **options):
    """Load an .eseq artifact and compile it: returns an `edgeseq.runtime.Model`."""
    from edgeseq.runtime.session import load as _load  # lazy: keeps `import edgeseq` light
    return _load(path, **options)
