"""Calibration data and the error a compressed graph makes against the float graph.

Errors are measured with the float64 reference interpreter on both graphs, so they are the
error of the compression itself, not of any runtime kernel.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseq.errors import InputError
from edgeseq.graph import Graph, Value
from edgeseq.quant.common import is_layer


def load(source, graph: Graph) -> dict[str, np.ndarray]:
    """Graph inputs taken from an .npz path or a dict (other keys, e.g. labels, are ignored)."""
    if isinstance(source, (str, Path)):
        where = str(source)
        try:
            z = np.load(source, allow_pickle=False)
        except (ValueError, EOFError) as e:   # corrupt or pickled: a clear error, no traceback
            raise InputError(f"{where}: not a readable .npz of calibration inputs "
                             f"({type(e).__name__}: {e})") from None
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise InputError(f"{where}: calibration data must be an .npz archive mapping graph "
                             f"input names to arrays, got a single .npy array")
        with z:
            data = {k: z[k] for k in z.files}
    else:
        data, where = dict(source), "calibration data"
    missing = [v.name for v in graph.inputs if v.name not in data]
    if missing:
        raise InputError(f"{where}: graph input(s) {missing} missing; it holds {sorted(data)}")
    return {v.name: np.asarray(data[v.name]).astype(v.dtype, copy=False) for v in graph.inputs}


def _with_layer_outputs(graph: Graph) -> tuple[Graph, dict[str, str]]:
    """A copy of `graph` that also outputs every layer's first output; layer -> value name."""
    g = graph.copy().validate()
    names = {v.name for v in g.outputs}
    exposed = {}
    for node in g.nodes:
        y = node.outputs[0] if node.outputs else ""
        if y and is_layer(g, node):
            exposed[node.name] = y
            if y not in names:
                v = g.values[y]
                g.outputs.append(Value(y, v.dtype, v.shape))
                names.add(y)
    return g.validate(), exposed


def run_all(graph: Graph, inputs: dict[str, np.ndarray]) -> tuple[dict, dict[str, str]]:
    """Reference outputs including every layer's output."""
    from edgeseq.reference import run

    g, exposed = _with_layer_outputs(graph)
    return run(g, inputs), exposed


def _max_abs(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.shape != b.shape:
        return None
    return float(np.max(np.abs(np.asarray(a, np.float64) - b))) if a.size else 0.0


def output_error(float_graph: Graph, graph: Graph, inputs: dict[str, np.ndarray]) -> float:
    """Max abs difference over the graph outputs of `graph` vs `float_graph`."""
    from edgeseq.reference import run

    ref, got = run(float_graph, inputs), run(graph, inputs)
    errs = [_max_abs(ref[k], got[k]) for k in got if k in ref]
    errs = [e for e in errs if e is not None]
    return max(errs) if errs else float("nan")


def errors(float_graph: Graph, graph: Graph, inputs: dict[str, np.ndarray]
           ) -> tuple[float, dict[str, float | None]]:
    """(graph output error, {layer: max abs error of that layer's output}) vs the float graph.

    A layer whose output changed shape (an LSTMP layer's projected output) gets None."""
    ref, _ = run_all(float_graph, inputs)
    got, exposed = run_all(graph, inputs)
    per_layer = {layer: (_max_abs(ref[y], got[y]) if y in ref else None)
                 for layer, y in exposed.items()}
    outs = [_max_abs(ref[v.name], got[v.name]) for v in graph.outputs if v.name in ref]
    outs = [e for e in outs if e is not None]
    return (max(outs) if outs else float("nan")), per_layer
