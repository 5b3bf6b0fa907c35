"""Re-roll a per-step map (Keras 3 `TimeDistributed(Dense)`, written as T slices of one value,
T copies of the same stateless glue, and a stack) into the glue applied to the whole value.

The copies read one time step each (Slice or Split, then Squeeze), run the same ops with the
same constants (Gemm/MatMul with a constant weight, elementwise ops with small constants,
activations) and are stacked back (Unsqueeze + Concat) on the axis they were sliced from. Those
ops act on the last axis only, so the same ops on the [T, N, H] value compute the stack; a Gemm
becomes MatMul + Add (a Gemm takes 2-D operands only). The new graph must reproduce the old one
on a random probe (`reroll._verify`); otherwise the graph is left as it was.
"""
from __future__ import annotations

import numpy as np

from edgeseq.graph import Graph, Node, read_constants
from edgeseq.ops import UNARY, Op

_ELEMENTWISE = frozenset({Op.ADD, Op.MUL, Op.SUB, Op.DIV})


class _Skip(Exception):
    pass


def reroll_maps(graph: Graph, verify) -> Graph:
    """Every stack of identical per-step glue chains becomes one chain; `graph` changed in place."""
    done = set()
    while True:
        stacks = [n for n in graph.nodes if n.op is Op.CONCAT and len(n.inputs) >= 3
                  and n.name not in done]
        if not stacks:
            return graph
        done.add(stacks[0].name)
        try:
            new = _one(graph, stacks[0])
            verify(graph, new)
        except Exception:   # noqa: BLE001 - anything unexpected: the graph stays as it was
            continue
        graph.nodes, graph.constants, graph.values = new.nodes, new.constants, new.values


def _chain(graph: Graph, value: str, producers: dict, users: dict, axis: int):
    """(source value, step index, [squeeze, ops..., unsqueeze], slice node) of one operand."""
    nodes = []
    n = producers[value]
    if n.op is not Op.UNSQUEEZE or tuple(n.attrs["axes"]) != (axis,):
        raise _Skip("not an unsqueezed step")
    while True:
        nodes.insert(0, n)
        data = [i for i in n.inputs if i and i not in graph.constants]
        if len(data) != 1 or data[0] not in producers:
            raise _Skip("not a chain")
        if n.op is Op.SQUEEZE:
            break
        n = producers[data[0]]
        if len(users.get(n.outputs[0], ())) != 1:
            raise _Skip("a chain value is read elsewhere")
    if tuple(n.attrs["axes"]) != (axis,):
        raise _Skip("squeezes another axis")
    src = producers[n.inputs[0]]
    if src.op is Op.SLICE and tuple(src.attrs["axes"]) == (axis,) and \
            tuple(src.attrs["steps"]) == (1,) and src.attrs["ends"][0] - src.attrs["starts"][0] == 1:
        return src.inputs[0], src.attrs["starts"][0], nodes, src
    if src.op is Op.SPLIT and src.attrs["axis"] == axis and all(s == 1 for s in src.attrs["split"]):
        return src.inputs[0], src.outputs.index(n.inputs[0]), nodes, src
    raise _Skip("not a slice of one step")


def _key(graph: Graph, node: Node) -> tuple:
    ins = tuple(("c", graph.constants[i].shape, graph.constants[i].tobytes())
                if i in graph.constants else "v" for i in node.inputs)
    return node.op, tuple(sorted((k, repr(v)) for k, v in node.attrs.items())), ins


def _one(graph: Graph, stack: Node) -> Graph:
    out_shape = graph.value(stack.outputs[0]).shape
    axis = stack.attrs["axis"] % len(out_shape)
    if len(out_shape) != 3 or axis == 2:
        raise _Skip("not a [T, N, O] stack")
    producers = {o: n for n in graph.nodes for o in n.outputs}
    users: dict = {}
    for n in graph.nodes:
        for i in n.inputs:
            users.setdefault(i, []).append(n)
    chains = [_chain(graph, v, producers, users, axis) for v in stack.inputs]
    sources = {c[0] for c in chains}
    if len(sources) != 1 or [c[1] for c in chains] != list(range(len(chains))):
        raise _Skip("not the steps of one value in order")
    src = sources.pop()
    covered = graph.value(src).shape[axis]
    if isinstance(covered, int) and covered != len(chains):
        # NOTE: a symbolic length was unrolled at len(chains) steps by the exporter; the
        # caller's probe checks the new graph at that length
        raise _Skip("the steps do not cover the value")
    keys = [[_key(graph, n) for n in c[2]] for c in chains]
    if any(k != keys[0] for k in keys):
        raise _Skip("the copies differ")
    new = graph.copy()
    made, x = [], src
    for n in chains[0][2][1:-1]:
        made += _lift(new, n, x)
        x = made[-1].outputs[0]
    if not made:        # the steps stacked as they were sliced: the value itself
        made = [Node(new.fresh_name(stack.name + "/all_steps"), Op.IDENTITY, [src], [""], {})]
    made[-1].outputs[0] = stack.outputs[0]
    gone = {id(n) for c in chains for n in c[2]} | {id(stack)}
    gone |= {id(c[3]) for c in chains if all(id(u) in gone for o in c[3].outputs
                                              for u in users.get(o, ()))}
    at = graph.nodes.index(stack)
    kept = [n for n in graph.nodes[:at] if id(n) not in gone] + made + \
        [n for n in graph.nodes[at:] if id(n) not in gone]
    new.nodes = kept
    new.constants = read_constants(new.constants, kept)
    new.values = {}
    return new.validate()


def _lift(g: Graph, n: Node, x: str) -> list[Node]:
    """Node `n` of a step applied to the whole [T, N, H] value `x`."""
    out = g.fresh_name(n.outputs[0] + "/all_steps")
    if n.op is Op.GEMM:
        a = n.attrs
        b = n.inputs[1]
        if a.get("trans_a") or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or \
                b not in g.constants or g.constants[b].ndim != 2:
            raise _Skip("a Gemm that is not x W + b")
        if a.get("trans_b"):
            bt = g.fresh_name(b + "/t")
            g.constants[bt] = np.ascontiguousarray(g.constants[b].T)
            b = bt
        mm = Node(g.fresh_name(n.name + "/all_steps"), Op.MATMUL, [x, b], [out], {})
        c = n.inputs[2] if len(n.inputs) > 2 else ""
        if not c:
            return [mm]
        out2 = g.fresh_name(n.outputs[0] + "/all_steps_bias")
        return [mm, Node(g.fresh_name(n.name + "/all_steps_bias"), Op.ADD, [out, c], [out2], {})]
    if n.op is Op.MATMUL:
        if n.inputs[1] not in g.constants or g.constants[n.inputs[1]].ndim != 2:
            raise _Skip("a MatMul without a constant weight")
        return [Node(g.fresh_name(n.name + "/all_steps"), Op.MATMUL, [x, n.inputs[1]], [out], {})]
    if n.op in _ELEMENTWISE:
        if any(i in g.constants and g.constants[i].ndim > 1 and g.constants[i].shape[0] != 1
               for i in n.inputs):
            raise _Skip("an elementwise constant with a batch axis")
        ins = [i if i in g.constants else x for i in n.inputs]
        return [Node(g.fresh_name(n.name + "/all_steps"), n.op, ins, [out], dict(n.attrs))]
    if n.op in UNARY:
        return [Node(g.fresh_name(n.name + "/all_steps"), n.op, [x], [out], dict(n.attrs))]
    raise _Skip(f"op {n.op.value} is not per-row")
