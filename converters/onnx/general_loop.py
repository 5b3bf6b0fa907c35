"""ONNX `Loop` nodes whose body is no recurrent cell edgeseq lifts (custom cells, greedy
decoders, anything loops.py refuses), and ONNX `Scan` nodes, become one general Loop node
(edgeseq/loop_op.py): the body is converted by the same handlers as the main graph, in a
child Context, into an edgeseq Graph.

Outer-scope values the body reads by name become explicit: constants join the body's
constants (folding goes on inside the body), run-time values become captured inputs of the
Loop node. Body inputs take the dtype and shape of the outer values they receive; a carried
value whose shape the body changes (a sequence grown with Concat) gets symbolic dims for
the dims that change and the body is converted once more, so that no shape-derived constant
is folded for the first iteration only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx

from edgeseq.errors import EdgeseqError
from edgeseq.graph import Graph, Value
from edgeseq.limits import LIMITS
from edgeseq.ops import Op

from edgeseq.converters.onnx.context import Context, Unsupported
from edgeseq.converters.onnx.registry import handler

_MAX_PASSES = 3


@dataclass(frozen=True)
class Walker:
    """The converter's own passes, handed to the Loop handler through the Context (the
    converter imports the handlers, so they cannot import it): walk(ctx, nodes) ->
    (unsupported ops, problems, malformed); initializers(graph, label) -> {name: array};
    assemble(ctx, graph, inputs, label) -> Graph."""
    walk: Callable
    initializers: Callable
    assemble: Callable


def _outer_names(g: onnx.GraphProto) -> list[str]:
    """Names a (sub)graph reads that it does not define, nested sub-graphs included."""
    defined = {i.name for i in g.input} | {t.name for t in g.initializer}
    defined |= {o for n in g.node for o in n.output}
    used: list[str] = []
    for n in g.node:
        used += [i for i in n.input if i]
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                used += _outer_names(a.g)
    used += [o.name for o in g.output]
    return [u for u in dict.fromkeys(used) if u not in defined]


def emit_general_loop(ctx: Context, node: onnx.NodeProto, why: str) -> None:
    """Emit `node` as a general Loop node; `why` says why no cell was lifted (for messages)."""
    proto = next((a.g for a in node.attribute if a.name == "body"), None)
    if proto is None:
        raise Unsupported("the Loop has no 'body' attribute")
    depth = getattr(ctx, "loop_depth", 0) + 1
    if depth > LIMITS.loop_depth:     # checked before converting (and recursing into) the body
        raise Unsupported(f"Loop bodies nest more than {LIMITS.loop_depth} levels deep "
                          f"(edgeseq.limits.Limits.loop_depth)")
    n_carried = len(node.input) - 2
    if len(proto.input) != 2 + n_carried or len(proto.output) < 1 + n_carried:
        raise Unsupported(f"the Loop body takes {len(proto.input)} inputs and returns "
                          f"{len(proto.output)} outputs for {n_carried} carried values "
                          f"(ONNX: 2 + carried inputs, 1 + carried + scan outputs)")
    outer = _outer_names(proto)
    captured = [n for n in outer if ctx.const(n) is None]
    base = ctx.node_name
    outer_ins = [ctx.inp(node, 2 + k) for k in range(n_carried)] + \
        [ctx.resolve(n) for n in captured]
    declared = [Value(proto.input[0].name, "int64", ()), Value(proto.input[1].name, "bool", ())]
    for k, name in enumerate(outer_ins):
        dt, shp = ctx.dtype(name), ctx.shape(name)
        inner = proto.input[2 + k].name if k < n_carried else captured[k - n_carried]
        if dt is None or shp is None:
            raise Unsupported(f"the Loop's {'carried' if k < n_carried else 'captured'} value "
                              f"'{name}' has no known dtype and shape (needed to convert the "
                              f"body as a general loop; no cell was lifted: {why})")
        declared.append(Value(inner, dt, tuple(shp)))
    body = None
    for _ in range(_MAX_PASSES):
        body = _convert_body(ctx, proto, declared, captured, base, why)
        changed = False
        for k in range(n_carried):
            d_in, d_out = declared[2 + k], body.outputs[1 + k]
            if len(d_in.shape) != len(d_out.shape):
                break        # the shape rule reports it, naming the value
            dims = tuple(a if a == b else f"{base}:carried{k}.{j}"
                         for j, (a, b) in enumerate(zip(d_in.shape, d_out.shape)))
            if dims != d_in.shape:
                declared[2 + k] = Value(d_in.name, d_in.dtype, dims)
                changed = True
        if not changed:
            break
    _rename_constants(ctx, body, base)
    ins = [ctx.inp(node, 0), ctx.inp(node, 1)] + outer_ins
    ctx.emit(Op.LOOP, ins, list(node.output), {"body": body, "num_carried": n_carried})


def _convert_body(ctx: Context, proto: onnx.GraphProto, declared: list[Value],
                  captured: list[str], base: str, why: str) -> Graph:
    walker: Walker = ctx.walker
    child = Context(ctx.opsets, dict(ctx.shapes))
    child.loop_body, child.walker = True, walker
    child.loop_depth = getattr(ctx, "loop_depth", 0) + 1
    for v in declared:
        child.shapes[v.name] = (v.dtype, v.shape)
    child.consts.update({n: ctx.const(n) for n in _outer_names(proto) if n not in captured})
    child.consts.update(walker.initializers(proto, base))
    child.graph_inputs = {v.name for v in declared}
    child.graph_outputs = {o.name for o in proto.output}
    child.reserve(list(child.consts) + list(child.graph_inputs))
    for n in proto.node:
        child.reserve(n.output)
        child.producers.update((o, n) for o in n.output if o)
    unsupported, problems, _ = walker.walk(child, proto.node)
    if unsupported or problems:
        lines = [f"op {k}: no handler" for k in unsupported] + problems
        raise Unsupported(f"no cell was lifted ({why}), and the body cannot run as a general "
                          f"loop: " + "; ".join(lines))
    ctx.wanted_const += child.wanted_const
    proxy = onnx.GraphProto()
    proxy.CopyFrom(proto)
    del proxy.input[:]
    try:
        body = walker.assemble(child, proxy, [], f"{base}/body")
    except EdgeseqError as e:
        raise Unsupported(f"the Loop body cannot run as a general loop: {e}") from None
    body.name = f"{base}/body"
    body.inputs = list(declared)
    try:
        body.validate()
    except EdgeseqError as e:
        raise Unsupported(f"no cell was lifted ({why}), and the converted body is "
                          f"inconsistent: {e}") from None
    return body


def _rename_constants(ctx: Context, body: Graph, base: str) -> None:
    """Body constants get names unique in the whole model (bodies share the enclosing table),
    except outer constants the body reads under their own name."""
    renames = {}
    for name, arr in body.constants.items():
        if ctx.consts.get(name) is not arr:
            renames[name] = ctx.fresh(f"{base}/{name}")
    if not renames:
        return
    body.constants = {renames.get(k, k): v for k, v in body.constants.items()}
    for n in body.nodes:
        n.inputs = [renames.get(i, i) for i in n.inputs]
        n.weights = {s: renames.get(c, c) for s, c in n.weights.items()}
    body.values = {}
    body.validate()


def if_as_where(ctx: Context, node: onnx.NodeProto) -> None:
    """An If with a run-time condition inside a Loop body (what TorchScript writes for a
    short-circuit `and`/`or` in a while condition): both branches are converted and each
    output is Where(cond, then, else). Sound for branches without side effects whose outputs
    agree in dtype and broadcast; anything else is refused by the branches' own handlers or
    by shape inference of the Where."""
    branches = {a.name: a.g for a in node.attribute}
    if set(branches) != {"then_branch", "else_branch"}:
        raise Unsupported(f"If with attributes {sorted(branches)}")
    then_g, else_g = branches["then_branch"], branches["else_branch"]
    if len(then_g.output) != len(node.output) or len(else_g.output) != len(node.output):
        raise Unsupported("If branches return a different number of values than the node")
    me, my_name = ctx.node, ctx.node_name
    nodes = list(then_g.node) + list(else_g.node)
    for g in (then_g, else_g):
        ctx.consts.update(ctx.walker.initializers(g, my_name))
    for k, out in enumerate(node.output):
        if out:
            nodes.append(onnx.helper.make_node(
                "Where", [node.input[0], then_g.output[k].name, else_g.output[k].name], [out],
                name=f"{my_name}/select{k}"))
    ctx.reserve(o for n in nodes for o in n.output)
    ctx.producers.update((o, n) for n in nodes for o in n.output if o)
    unsupported, problems, _ = ctx.walker.walk(ctx, nodes)
    ctx.node, ctx.node_name = me, my_name
    if unsupported or problems:
        raise Unsupported("the If (a run-time condition inside a Loop body: both branches are "
                          "run and Where picks) cannot be converted: " + "; ".join(
                              [f"op {k}: no handler" for k in unsupported] + problems))


@handler("Scan", since=9)
def scan(ctx: Context, node: onnx.NodeProto) -> None:
    """ONNX Scan as the Loop it is: the body Gathers each scan input at the iteration (at
    length-1-i for a reversed input), the trip count is the scanned length (fixed at
    conversion), scan outputs stack along axis 0 forwards (other output axes or directions
    are refused)."""
    a = ctx.attrs(node, {"body", "num_scan_inputs", "scan_input_axes", "scan_input_directions",
                         "scan_output_axes", "scan_output_directions"})
    body, m = a["body"], int(a["num_scan_inputs"])
    n_states = len(node.input) - m
    if m < 1 or n_states < 0 or len(body.input) != len(node.input):
        raise Unsupported(f"Scan with {len(node.input)} inputs, num_scan_inputs {m} and a body "
                          f"of {len(body.input)} inputs")
    n_outs = len(body.output) - n_states
    axes = list(a.get("scan_input_axes", [0] * m))
    dirs = list(a.get("scan_input_directions", [0] * m))
    if any(list(a.get(k, [0] * n_outs)) != [0] * n_outs
           for k in ("scan_output_axes", "scan_output_directions")):
        raise Unsupported("Scan outputs along another axis than 0 or reversed are not supported")
    lengths = set()
    for j in range(m):
        shp = ctx.shape(node.input[n_states + j])
        if shp is None or not isinstance(shp[axes[j] % len(shp)], int):
            raise Unsupported(f"Scan input '{node.input[n_states + j]}' needs a fixed length "
                              f"along axis {axes[j]} (got shape {shp}); fix it with --shape")
        lengths.add(shp[axes[j] % len(shp)])
    if len(lengths) != 1:
        raise Unsupported(f"Scan inputs of different lengths {sorted(lengths)}")
    t_len = lengths.pop()
    base = ctx.node_name
    it, go = f"{base}/iteration", f"{base}/cond"
    nodes = []
    for j in range(m):
        index = it
        if dirs[j]:
            last = f"{base}/last{j}"
            nodes.append(onnx.helper.make_node("Constant", [], [last], value=onnx.numpy_helper
                                               .from_array(np.array(t_len - 1, np.int64))))
            index = f"{base}/reversed{j}"
            nodes.append(onnx.helper.make_node("Sub", [last, it], [index]))
        nodes.append(onnx.helper.make_node("Gather", [node.input[n_states + j], index],
                                           [body.input[n_states + j].name], axis=axes[j]))
    nodes += list(body.node)
    nodes.append(onnx.helper.make_node("Identity", [go], [f"{base}/cond_out"]))
    loop_body = onnx.helper.make_graph(
        nodes, f"{base}/body",
        [onnx.helper.make_tensor_value_info(it, onnx.TensorProto.INT64, []),
         onnx.helper.make_tensor_value_info(go, onnx.TensorProto.BOOL, [])]
        + list(body.input[:n_states]),
        [onnx.helper.make_tensor_value_info(f"{base}/cond_out", onnx.TensorProto.BOOL, [])]
        + list(body.output), list(body.initializer))
    trips = ctx.add_const(f"{base}/trips", np.array(t_len, np.int64))
    loop = onnx.helper.make_node("Loop", [trips, ""] + list(node.input[:n_states]),
                                 list(node.output), name=node.name, body=loop_body)
    emit_general_loop(ctx, loop, "an ONNX Scan")
