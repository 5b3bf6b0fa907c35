"""What every compression pass shares: which tensors are a layer's weights, how to replace a
constant without touching the input graph, and the per-layer size rows of a report.

A "layer" is a recurrent node or a linear glue node (MatMul/Gemm/Conv1d) reading a constant.
Report rows are plain dicts so the CLI can print them and tools can tabulate them.
"""
from __future__ import annotations

import numpy as np

from edgeseq.graph import SCALE_SUFFIX, Graph, Node
from edgeseq.ops import LINEAR, RECURRENT, Op

# Matrix slots of recurrent ops that compression rewrites. Biases, peepholes and layer-norm
# gains stay float32 (docs/design.md, compression passes): they are tiny and feed additions, not dot products.
MATRIX_SLOTS = ("w_x", "w_h", "w_h_u", "w_h_v", "w_proj")
# Which positional input of a linear glue op is its weight.
LINEAR_WEIGHT_INPUT = {Op.MATMUL: 1, Op.GEMM: 1, Op.CONV1D: 1}


def is_layer(graph: Graph, node: Node) -> bool:
    """A recurrent node, or a linear glue node whose weight is a constant."""
    if node.op in RECURRENT:
        return True
    k = LINEAR_WEIGHT_INPUT.get(node.op)
    return k is not None and k < len(node.inputs) and node.inputs[k] in graph.constants


def layer_constants(graph: Graph, node: Node) -> list[str]:
    """Names of every constant a layer reads (weights, biases, and int8 scales)."""
    if node.op in RECURRENT:
        names = list(node.weights.values())
    else:
        names = [n for n in node.inputs if n in graph.constants]
    scales = [n + SCALE_SUFFIX for n in names if n + SCALE_SUFFIX in graph.constants]
    return names + scales


def layer_size(graph: Graph, node: Node) -> tuple[int, int]:
    """(parameters, bytes) of a layer; scales count as bytes, not parameters."""
    params = nbytes = 0
    for name in layer_constants(graph, node):
        c = graph.constants[name]
        nbytes += c.nbytes
        if not name.endswith(SCALE_SUFFIX):
            params += c.size
    return params, nbytes


def weight_format(graph: Graph, node: Node) -> str:
    """Compact description of a layer's weight dtypes, e.g. 'int8' or 'fp16+fp32'."""
    short = {"float32": "fp32", "float16": "fp16", "int8": "int8", "float64": "fp64"}
    names = [n for n in layer_constants(graph, node) if not n.endswith(SCALE_SUFFIX)]
    if node.op in RECURRENT:
        names = [node.weights[s] for s in MATRIX_SLOTS if s in node.weights]
    else:
        names = [node.inputs[LINEAR_WEIGHT_INPUT[node.op]]]
    kinds = sorted({short.get(str(graph.constants[n].dtype), str(graph.constants[n].dtype))
                    for n in names})
    return "+".join(kinds)


def size_rows(before: Graph, after: Graph, extra: dict[str, dict] | None = None) -> list[dict]:
    """One report row per layer of `after` (matched by node name to `before`)."""
    extra = extra or {}
    old = {n.name: n for n in before.nodes}
    rows = []
    for node in after.nodes:
        if not is_layer(after, node):
            continue
        p1, b1 = layer_size(after, node)
        p0, b0 = layer_size(before, old[node.name]) if node.name in old else (0, 0)
        row = {"layer": node.name, "op": node.op.value, "weights": weight_format(after, node),
               "params_before": p0, "params_after": p1, "bytes_before": b0, "bytes_after": b1,
               "rank": None, "proj": None, "error": None}
        if node.op is Op.LSTM and node.attrs.get("proj_size"):
            row["proj"] = int(node.attrs["proj_size"])
        if "w_h_u" in node.weights:
            row["rank"] = int(after.constants[node.weights["w_h_u"]].shape[-1])
        row.update(extra.get(node.name, {}))
        rows.append(row)
    return rows


def constant_users(graph: Graph) -> dict[str, int]:
    """How many slot/input references each constant has across the graph."""
    count: dict[str, int] = {}
    for node in graph.nodes:
        refs = list(node.weights.values()) + [n for n in node.inputs if n in graph.constants]
        for name in refs:
            count[name] = count.get(name, 0) + 1
    return count


def put_constant(graph: Graph, name: str, array: np.ndarray) -> None:
    """Bind a new array to `name` (the input graph's arrays are never written to)."""
    graph.constants[name] = np.ascontiguousarray(array)


def drop_unused_constants(graph: Graph) -> None:
    """Remove constants (and their scales) that no node references any more."""
    used = set(constant_users(graph))
    used |= {n + SCALE_SUFFIX for n in used}
    for name in [n for n in graph.constants if n not in used]:
        del graph.constants[name]


def note_pass(graph: Graph, description: dict) -> None:
    """Record an applied pass in the graph metadata (kept in the artifact for `inspect`)."""
    graph.metadata = dict(graph.metadata)
    graph.metadata["compression"] = list(graph.metadata.get("compression", [])) + [description]


def graph_bytes(graph: Graph) -> int:
    """Bytes of all constant tensors (the bulk of an artifact)."""
    return int(sum(c.nbytes for c in graph.constants.values()))
