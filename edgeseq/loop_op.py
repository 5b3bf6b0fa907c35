"""The general Loop op: loops whose body is no known recurrent cell (custom cells, greedy
decoders) run their body, an edgeseq Graph, once per iteration, with ONNX `Loop` semantics.

    inputs   [max_trip_count, cond, carried (num_carried), captured ...]  ("" = absent)
    body     [iteration int64 (), cond bool (), carried ..., captured ...]
             -> [cond, carried ..., scan values ...]
    outputs  [final carried ..., scan values stacked along a new axis 0]

    i = 0; go = cond (True if absent); v = carried
    while go and i < max_trip_count (no bound if absent):
        go, v, s_i = body(i, go, v, captured); i += 1
    outputs: v, stack(s_0, s_1, ...)

The body reads outer values only through `captured` (explicit, not by name as in ONNX). Its
constants are hoisted into the enclosing graph's constant table when the Loop is validated
(one name, one array: a clash is an error), so an artifact stores every tensor once and
`Graph.from_json` hands each body its constants by name.

This module holds what the reference (`edgeseq.reference`), shape inference
(`edgeseq.shapes`) and the runtime kernel (`edgeseq.runtime.loop`) share: the shape rule,
the iteration driver and the limits (nesting depth, iterations of one run).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgeseq.errors import GraphError, InputError, ShapeError
from edgeseq.ir import Node, Value
from edgeseq.limits import LIMITS


@dataclass(frozen=True)
class LoopIO:
    """A Loop node's operand names by role."""
    trip: str
    cond: str
    carried: tuple[str, ...]
    captured: tuple[str, ...]


def loop_io(node: Node) -> LoopIO:
    """The operands of a (validated) Loop node by role."""
    nc = node.attrs["num_carried"]
    ins = list(node.inputs) + [""] * max(0, 2 - len(node.inputs))
    return LoopIO(ins[0], ins[1], tuple(ins[2:2 + nc]), tuple(ins[2 + nc:]))


def num_scans(node: Node) -> int:
    """Scan outputs of a Loop node's body."""
    return len(node.attrs["body"].outputs) - 1 - node.attrs["num_carried"]


def nesting_depth(body, limit: int = LIMITS.loop_depth) -> int:
    """Levels of Loop bodies in `body` (1 = no Loop inside); raises GraphError past `limit`."""
    depth, level, frontier = 0, 1, [body]
    while frontier:
        if level > limit:
            raise GraphError(f"Loop bodies nest {level} levels deep, more than the limit of "
                             f"{limit} (edgeseq.limits.Limits.loop_depth)")
        depth = level
        frontier = [n.attrs["body"] for g in frontier for n in g.nodes
                    if n.op.value == "Loop" and hasattr(n.attrs.get("body"), "nodes")]
        level += 1
    return depth


# ---- shape rule ----------------------------------------------------------------------------
def _scalar_like(v: Value | None, dtypes: tuple, what: str) -> None:
    if v is None:
        return
    if v.dtype not in dtypes or len(v.shape) > 1 or (v.shape and v.shape[0] not in (1,)
                                                      and isinstance(v.shape[0], int)):
        raise ShapeError(f"{what}: expected a {'/'.join(dtypes)} scalar (shape () or (1,)), "
                         f"got {v.describe()}")


def infer(graph, node: Node, ins: list[Value | None]) -> list[Value]:
    """Output Values of a Loop node; validates the body and hoists its constants into `graph`."""
    body = node.attrs["body"]
    nc = node.attrs["num_carried"]
    if nc < 0 or len(ins) < 2 + nc:
        raise ShapeError(f"attribute 'num_carried' = {nc} needs at least {2 + nc} inputs "
                         f"[max_trip_count, cond, carried...], got {len(ins)}")
    if any(v is None for v in ins[2:]):
        raise ShapeError("carried and captured inputs cannot be absent (\"\")")
    nesting_depth(body)
    if len(body.inputs) != len(ins):
        raise ShapeError(f"attribute 'body' takes {len(body.inputs)} inputs but the node gives "
                         f"{len(ins)} ([iteration, cond, {nc} carried, {len(ins) - 2 - nc} "
                         f"captured])")
    if len(body.outputs) < 1 + nc:
        raise ShapeError(f"attribute 'body' returns {len(body.outputs)} outputs; expected at "
                         f"least {1 + nc} ([cond, {nc} carried, scans...])")
    _scalar_like(ins[0], ("int64", "int32"), "input 'max_trip_count'")
    _scalar_like(ins[1], ("bool",), "input 'cond'")
    _scalar_like(body.inputs[0], ("int64",), "body input 0 (iteration)")
    _scalar_like(body.inputs[1], ("bool",), "body input 1 (cond)")
    symbols: dict[str, object] = {}        # body input symbol -> the outer dim it stands for
    for k in range(2, len(ins)):
        b, v = body.inputs[k], ins[k]
        role = "carried" if k < 2 + nc else "captured"
        if b.dtype != v.dtype or len(b.shape) != len(v.shape) or any(
                isinstance(x, int) and isinstance(y, int) and x != y
                for x, y in zip(b.shape, v.shape)):
            raise ShapeError(f"input {k} ('{v.name}', {role}) is {v.describe()} but body input "
                             f"'{b.name}' is declared {b.describe()}")
        for x, y in zip(b.shape, v.shape):
            if isinstance(x, str):
                symbols.setdefault(x, y)
    try:
        body.validate()
    except (GraphError, ShapeError) as e:
        raise type(e)(f"attribute 'body' (graph '{body.name}'): {e}") from None
    _hoist_constants(graph, node, body)
    _scalar_like(body.outputs[0], ("bool",), "body output 0 (cond)")
    outs: list[Value] = []
    for j in range(nc):
        b_out, v_in = body.outputs[1 + j], ins[2 + j]
        if b_out.dtype != v_in.dtype or len(b_out.shape) != len(v_in.shape):
            raise ShapeError(f"carried value {j}: enters as {v_in.describe()} but the body "
                             f"returns {b_out.describe()} (dtype and rank must stay)")
        dims = tuple(d if symbols.get(o, o) == d else f"{node.name}:{j}.{a}"
                     for a, (d, o) in enumerate(zip(v_in.shape, b_out.shape)))
        outs.append(Value(f"{node.name}:{j}", v_in.dtype, dims))
    trips = _fixed_trips(graph, node)
    for s, b_out in enumerate(body.outputs[1 + nc:]):
        dims = tuple(symbols.get(d, f"{node.name}:scan{s}.{a}") if isinstance(d, str) else d
                     for a, d in enumerate(b_out.shape))
        outs.append(Value(f"{node.name}:scan{s}", b_out.dtype,
                          (f"{node.name}:trips" if trips is None else trips,) + dims))
    if len(node.outputs) > len(outs):
        raise ShapeError(f"{len(node.outputs)} outputs, but the body gives {nc} carried and "
                         f"{len(outs) - nc} scan values")
    return outs


def _fixed_trips(graph, node: Node) -> int | None:
    """The number of iterations when it is known before running: a constant trip count, no
    condition (or a constant true one) and a body that hands its condition on unchanged."""
    if graph is None:
        return None
    io, body = loop_io(node), node.attrs["body"]
    m = graph.constants.get(io.trip) if io.trip else None
    go = graph.constants.get(io.cond) if io.cond else np.array(True)
    if m is None or go is None or np.size(m) != 1 or np.size(go) != 1 or \
            not bool(np.asarray(go).reshape(-1)[0]) or not _hands_condition_on(body):
        return None
    return max(0, int(np.asarray(m).reshape(-1)[0]))


def _hands_condition_on(body) -> bool:
    """The body's condition output is its condition input, directly or through Identity
    nodes (as a re-rolled cell loop writes it)."""
    producer = {o: n for n in body.nodes for o in n.outputs if o}
    name, seen = body.outputs[0].name, set()
    while name != body.inputs[1].name:
        n = producer.get(name)
        if n is None or n.op.value != "Identity" or name in seen:
            return False
        seen.add(name)
        name = n.inputs[0]
    return True


def _hoist_constants(graph, node: Node, body) -> None:
    """Body constants join the enclosing graph's table (one name, one array)."""
    if graph is None or graph is body:
        return
    for name, arr in body.constants.items():
        have = graph.constants.get(name)
        if have is None:
            graph.constants[name] = arr
        elif have is not arr and (have.dtype != arr.dtype or have.shape != arr.shape
                                  or not np.array_equal(have, arr)):
            raise GraphError(f"attribute 'body': constant '{name}' differs from the enclosing "
                             f"graph's constant of that name (names are shared by nesting "
                             f"levels)")


# ---- running -------------------------------------------------------------------------------
def run(node: Node, ins: list, run_body: Callable[[list], list], float_dtype) -> list:
    """Run a Loop node: `run_body(inputs) -> outputs` evaluates the body once (the reference
    and the runtime pass their own graph interpreters); float_dtype types empty scans."""
    body = node.attrs["body"]
    nc = node.attrs["num_carried"]
    where = f"node '{node.name}' (Loop)"
    trips = None if ins[0] is None else _scalar(ins[0], where, "max_trip_count")
    go = True if ins[1] is None else bool(_scalar(ins[1], where, "cond"))
    carried, captured = list(ins[2:2 + nc]), list(ins[2 + nc:])
    scans: list[list] = [[] for _ in body.outputs[1 + nc:]]
    i, scan_bytes = 0, 0
    while go and (trips is None or i < trips):
        if i >= LIMITS.loop_iterations:
            raise InputError(f"{where}: still running after {i} iterations, the limit "
                             f"(edgeseq.limits.Limits.loop_iterations); give it a trip count "
                             f"or a condition that ends")
        outs = run_body([np.array(i, np.int64), np.array(go), *carried, *captured])
        go = bool(_scalar(outs[0], where, "body output 0 (cond)"))
        carried = list(outs[1:1 + nc])
        for k, v in enumerate(outs[1 + nc:]):
            if scans[k] and np.shape(v) != np.shape(scans[k][0]):
                raise InputError(f"{where}: scan output {k} is {np.shape(v)} at iteration {i} "
                                 f"but {np.shape(scans[k][0])} before (scan values must keep "
                                 f"their shape)")
            scans[k].append(v)
            scan_bytes += np.asarray(v).nbytes
        # NOTE: scans accumulate and carried values may grow (Concat): bounded like a run
        held = scan_bytes + sum(np.asarray(v).nbytes for v in carried)
        if held > LIMITS.memory_bytes:
            raise InputError(f"{where}: after {i + 1} iterations its scan and carried values "
                             f"hold {held} bytes, more than the limit of {LIMITS.memory_bytes} "
                             f"(edgeseq.limits.Limits.memory_bytes)")
        i += 1
    stacked = []
    for k, vals in enumerate(scans):
        if vals:
            stacked.append(np.stack(vals))
        else:
            b = body.outputs[1 + nc + k]
            dt = float_dtype if b.dtype.startswith("float") else b.dtype
            stacked.append(np.zeros((0,) + tuple(d if isinstance(d, int) else 0
                                                 for d in b.shape), dt))
    return carried + stacked


def _scalar(a, where: str, what: str):
    a = np.asarray(a)
    if a.size != 1:
        raise InputError(f"{where}: {what} must hold one value, got shape {a.shape}")
    return a.reshape(()).item()
