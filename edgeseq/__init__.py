"""edgeseq: compile and run recurrent sequence models (LSTM, GRU, RNN) on small machines."""
from __future__ import annotations

__version__ = "0.1.0"

from edgeseq.errors import (ArtifactError, EdgeseqError, GraphError, InputError, ShapeError,
                            UnsupportedModelError)
from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import Op

__all__ = ["__version__", "Graph", "Node", "Value", "Op", "EdgeseqError", "GraphError",
           "ShapeError", "UnsupportedModelError", "ArtifactError", "InputError", "load"]


def load(path, **options):
    """Load an .eseq artifact and compile it: returns an `edgeseq.runtime.Model`."""
    from edgeseq.runtime.session import load as _load  # lazy: keeps `import edgeseq` light
    return _load(path, **options)
