"""Drop arithmetic with constant ones and zeros that changes nothing (x * 1, x + 0, x - 0; 0 - x
becomes -x).

Keras LayerNormalization, as tf2onnx and the TF converter write it, is a batch norm over a
[1, N*T, H, 1] reshape whose scale and offset are ones and zeros of size N*T: harmless for one
fixed-length run, but a constant sized by the merged time axis cannot be cut into chunks, so
such a model does not stream. Only an operation whose result has the shape of its other operand
is dropped (a constant that broadcasts the result wider is kept).
"""
from __future__ import annotations

import numpy as np

from edgeseq.errors import EdgeseqError
from edgeseq.graph import Graph, Node, read_constants
from edgeseq.ops import Op

_PURE_LAYOUT = frozenset({Op.UNSQUEEZE, Op.SQUEEZE, Op.RESHAPE, Op.IDENTITY})


def _constant(graph: Graph, name: str, producers: dict) -> np.ndarray | None:
    """The value of `name` when it is a constant or a layout op of one (scale-free), else None."""
    seen = 0
    while name not in graph.constants:
        n = producers.get(name)
        if n is None or n.op not in _PURE_LAYOUT or seen > 8:
            return None
        name, seen = n.inputs[0], seen + 1
    if graph.constant_scale(name) is not None:
        return None
    return graph.constants[name]


def _all(c: np.ndarray | None, v: float) -> bool:
    return c is not None and c.dtype.kind == "f" and c.size > 0 and bool(np.all(c == v))


def _same_shape(out, x) -> bool:
    """The result has x's shape; a symbolic dim of x that only the neutral constant pins to a
    literal counts as the same (the TF converter writes T into such constants while the input
    declares it free: the graph ran at that T only, and computes the same there)."""
    return len(out) == len(x) and all(o == d or (isinstance(d, str) and isinstance(o, int))
                                      for o, d in zip(out, x))


def drop_identities(graph: Graph) -> Graph:
    """Rewrite x*1, 1*x, x+0, 0+x, x-0 to Identity and 0-x to Neg when the result has x's shape;
    layout ops left without readers are removed. Returns `graph` (changed in place)."""
    try:
        graph.validate()
    except EdgeseqError:
        return graph
    producers = {o: n for n in graph.nodes for o in n.outputs}
    changed = False
    for k, n in enumerate(graph.nodes):
        if n.op not in (Op.MUL, Op.ADD, Op.SUB) or len(n.inputs) != 2:
            continue
        a, b = n.inputs
        ca, cb = _constant(graph, a, producers), _constant(graph, b, producers)
        neutral = 1.0 if n.op is Op.MUL else 0.0
        if _all(cb, neutral):
            op, x = Op.IDENTITY, a
        elif _all(ca, neutral) and n.op is not Op.SUB:
            op, x = Op.IDENTITY, b
        elif _all(ca, 0.0) and n.op is Op.SUB:
            op, x = Op.NEG, b
        else:
            continue
        try:
            if not _same_shape(graph.value(n.outputs[0]).shape, graph.value(x).shape):
                continue
        except KeyError:
            continue
        graph.nodes[k] = Node(n.name, op, [x], list(n.outputs), {})
        changed = True
    if not changed:
        return graph
    outputs = {v.name for v in graph.outputs}
    while True:
        read = {i for n in graph.nodes for i in n.inputs} | outputs
        dead = [n for n in graph.nodes if n.op in _PURE_LAYOUT and not set(n.outputs) & read]
        if not dead:
            break
        graph.nodes = [n for n in graph.nodes if n not in dead]
    graph.constants = read_constants(graph.constants, graph.nodes)
    graph.values = {}
    graph.validate()
    return graph
