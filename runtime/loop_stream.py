"""Streaming a general Loop that scans the time axis (the Loop rule of runtime/streaming.py).

A Loop streams when it is a scan over time in disguise, as the loops Keras writes through
tf2onnx and the TFLite converter are: each iteration reads one step of its sequences (a
Gather along their time axis at an index that equals the iteration number), the per-step
results are stacked (scan outputs: time on axis 0), the carried values that are not index
arithmetic are the state, and the loop runs exactly once per step of its sequence. The index
arithmetic (the "control" part of the body: everything computed from the iteration, the
counters and constants only) must decide the condition and the counters, and may reach the
rest of the body only as the index of those Gathers. At stream creation this module runs the
control part for the sequence's length in the graph and checks that the loop then takes
exactly that many iterations and reads step i at iteration i.

Per chunk the loop then runs with the chunk's length as trip count and its counters
restarted (index i of the chunk is step i of the chunk), and its state carried across pushes
in `Stream.state[node]["carried<j>"]` (j: the carried value's position). Anything else is
refused naming the reason: a greedy decoder (trip count a maximum length, a condition
computed from the data, attention over the whole sequence), a counter used by the state's
arithmetic (a position), a counter read after the loop.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from edgeseq.errors import InputError
from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import Op

# the control part is run once per step of the sequence at stream creation
MAX_CHECKED_STEPS = 1 << 16


class NotAScan(Exception):
    """The Loop is not a scan over time (the message says why)."""


class WrongTimeAxis(NotAScan):
    """The candidate time axis is not the one the loop reads step by step: the candidate is
    wrong, not the model (streaming.WrongAxis)."""


@dataclass(frozen=True)
class Scan:
    """How a streamable Loop node uses its operands."""
    sequences: tuple      # (node input index, time axis) of the values read step by step
    states: tuple         # carried positions j (node input 2 + j) carried across pushes
    counters: tuple       # carried positions restarted every push
    length: int           # steps of the sequence in the graph (what the check covered)


# id(node) -> (weak reference to the node, scan): the rule's findings, for the pushes
_SCANS: dict[int, tuple[weakref.ref, Scan]] = {}


def slot(j: int) -> str:
    return f"carried{j}"


def analyse(graph: Graph, node: Node, axes: list, static: list) -> list:
    """Output time axes of `node` when it scans time (axes/static per node input, None for
    an absent one); raises NotAScan saying why not."""
    body, nc = node.attrs["body"], node.attrs["num_carried"]
    names = list(node.inputs) + [""] * max(0, 2 - len(node.inputs))
    b_in = [v.name for v in body.inputs]
    b_out = [v.name for v in body.outputs]
    const = {k: graph.constants.get(n) for k, n in enumerate(names) if n}
    for k in (0, 1):
        if names[k] and const.get(k) is None:
            what = "trip count" if k == 0 else "initial condition"
            raise NotAScan(f"its {what} '{names[k]}' is computed at run time (a scan over "
                           f"time has a constant trip count, the length of its sequence)")
    passed = {2 + j for j in range(nc) if b_out[1 + j] == b_in[2 + j]}
    passed |= set(range(2 + nc, len(names)))                  # captured values
    sequences, fixed = [], {}
    for k in range(2, len(names)):
        if axes[k] is not None:
            if k not in passed:
                raise NotAScan(f"its carried value {k - 2} ('{names[k]}') has a time axis and "
                               f"changes every iteration")
            sequences.append(k)
        elif k in passed:
            if not static[k]:
                raise NotAScan(f"it reads '{names[k]}', a per-chunk value (not constant over "
                               f"the stream)")
            if const.get(k) is not None:
                fixed[b_in[k]] = const[k]
    if not sequences:
        raise NotAScan("it reads no sequence step by step (its trip count is no time length: "
                       "a decoder?)")
    rewritten = [j for j in range(nc) if 2 + j not in passed]
    counters = [j for j in rewritten if _index_like(body.inputs[2 + j])]
    while True:         # counters are carried values whose update is index arithmetic
        control = _control(body, {b_in[0], b_in[1]} | set(fixed) |
                           {b_in[2 + j] for j in counters})
        keep = [j for j in counters if b_out[1 + j] in control]
        if keep == counters:
            break
        counters = keep
    states = [j for j in rewritten if j not in counters]
    if b_out[0] not in control:
        raise NotAScan("its condition depends on the data (a loop that stops on a value it "
                       "computes, as a decoder stops at an end token)")
    seq_inputs = {b_in[k]: k for k in sequences}
    counting = _tainted(body, control, {b_in[0], b_in[1]} | {b_in[2 + j] for j in counters})
    indices = _check_uses(body, control, counting, seq_inputs, axes, names)
    for j in states:
        if static[2 + j] is False:
            raise NotAScan(f"the initial value of its state {j} ('{names[2 + j]}') is a "
                           f"per-chunk value")
        if body.outputs[1 + j].name in control:
            raise NotAScan(f"its carried value {j} is index arithmetic")
    for j in counters:
        if const.get(2 + j) is None:
            raise NotAScan(f"its counter {j} ('{names[2 + j]}') starts at a run-time value")
        _unread(graph, node.outputs[j] if j < len(node.outputs) else "",
                f"its final counter {j}")
    for o in b_out[1 + nc:]:
        if o in control:
            raise NotAScan(f"its per-step output '{o}' is index arithmetic (it counts steps)")
    length = _length(graph, names, sequences, axes)
    _check_trips(body, node, names, const, fixed, counters, control, indices, length)
    scan = Scan(tuple((k, axes[k]) for k in sequences), tuple(states), tuple(counters), length)
    for key in [k for k, (ref, _) in _SCANS.items() if ref() is None]:
        del _SCANS[key]
    _SCANS[id(node)] = (weakref.ref(node), scan)
    outs = [axes[2 + j] if 2 + j in sequences else None for j in range(nc)]
    return (outs + [0] * (len(node.outputs) - nc))[:len(node.outputs)]


def _index_like(v: Value) -> bool:
    return v.dtype.startswith(("int", "uint")) and len(v.shape) <= 1 and \
        all(d == 1 for d in v.shape)


def _control(body: Graph, sources: set) -> set:
    """Values computed from `sources` and constants only (the index arithmetic)."""
    c = set(sources)
    for n in body.nodes:
        ins = [x for x in n.inputs if x and x not in body.constants]
        if all(x in c for x in ins):
            c.update(o for o in n.outputs if o)
    return c


def _tainted(body: Graph, control: set, sources: set) -> set:
    """The index arithmetic that depends on the iteration or a counter (not constants only)."""
    t = set(sources)
    for n in body.nodes:
        if any(x in t for x in n.inputs if x) and all(o in control for o in n.outputs if o):
            t.update(o for o in n.outputs if o)
    return t


def _check_uses(body: Graph, control: set, counting: set, seq_inputs: dict, axes: list,
                names: list) -> list:
    """Index arithmetic may reach the data only as the index of a Gather that reads one step
    of a sequence along its time axis; a sequence is read no other way. Returns those
    Gathers' index names."""
    indices = []
    for n in body.nodes:
        if all(o in control for o in n.outputs if o):
            continue
        for pos, x in enumerate(n.inputs):
            if x in seq_inputs:
                k = seq_inputs[x]
                if n.op is not Op.GATHER or pos != 0 or n.inputs[1] not in control:
                    raise NotAScan(f"body node '{n.name}' ({n.op.value}) reads the sequence "
                                   f"'{names[k]}' other than one step at the iteration "
                                   f"(attention over the whole sequence, a reversed read?)")
                rank = len(body.value(x).shape)
                if n.attrs.get("axis", 0) % rank != axes[k]:
                    raise WrongTimeAxis(f"body node '{n.name}' gathers '{names[k]}' along axis "
                                   f"{n.attrs.get('axis', 0) % rank}, but time runs along "
                                   f"axis {axes[k]}")
                indices.append(n.inputs[1])
            elif x in counting and not (n.op is Op.GATHER and pos == 1
                                       and n.inputs[0] in seq_inputs):
                raise NotAScan(f"body node '{n.name}' ({n.op.value}) computes with the "
                               f"iteration count '{x}' (per chunk it would restart)")
    return indices


def _unread(graph: Graph, name: str, what: str) -> None:
    if not name:
        return
    if name in {v.name for v in graph.outputs} or any(name in n.inputs for n in graph.nodes):
        raise NotAScan(f"{what} ('{name}') is read after the loop (per chunk it would count "
                       f"the chunk's steps only)")


def _length(graph: Graph, names: list, sequences: list, axes: list) -> int:
    lengths = {}
    for k in sequences:
        d = graph.value(names[k]).shape[axes[k]]
        if not isinstance(d, int):
            raise NotAScan(f"the length of its sequence '{names[k]}' is symbolic ('{d}'), so "
                           f"its trip count cannot be checked against it")
        lengths[names[k]] = d
    if len(set(lengths.values())) != 1:
        raise NotAScan(f"its sequences have different lengths {lengths}")
    length = next(iter(lengths.values()))
    if length > MAX_CHECKED_STEPS:
        raise NotAScan(f"its sequence has {length} steps, more than the "
                       f"{MAX_CHECKED_STEPS} its iteration check runs")
    return length


def _check_trips(body: Graph, node: Node, names: list, const: dict, fixed: dict,
                 counters: list, control: set, indices: list, length: int) -> None:
    """Run the index arithmetic: the loop must take `length` iterations and read step i at
    iteration i."""
    from edgeseq import reference
    b_in = [v.name for v in body.inputs]
    nc = node.attrs["num_carried"]
    wanted = [body.outputs[0].name] + [body.outputs[1 + j].name for j in counters] + indices
    wanted = list(dict.fromkeys(wanted))
    nodes = [n for n in body.nodes if all(o in control for o in n.outputs if o)]
    srcs = [b_in[0], b_in[1]] + list(fixed) + [b_in[2 + j] for j in counters]
    srcs = list(dict.fromkeys(srcs))
    used = {x for n in nodes for x in n.inputs} | set(wanted)
    sub = Graph(f"{node.name}/control", [body.value(s) for s in srcs],
                [body.value(w) for w in wanted], nodes,
                {k: v for k, v in body.constants.items() if k in used})
    trips = None if 0 not in const else int(np.asarray(const[0]).reshape(-1)[0])
    go = True if 1 not in const else bool(np.asarray(const[1]).reshape(-1)[0])
    feeds = {b_in[k]: np.asarray(fixed[b_in[k]]) for k in range(len(b_in)) if b_in[k] in fixed}
    counts = {b_in[2 + j]: np.asarray(const[2 + j]) for j in counters}
    i = 0
    while go and (trips is None or i < trips) and i <= length:
        env = {b_in[0]: np.array(i, np.int64), b_in[1]: np.array(go), **feeds, **counts}
        out = reference.run(sub, {s: env[s] for s in srcs})
        for x in indices:
            v = np.asarray(out[x])
            if v.size != 1 or int(v.reshape(-1)[0]) != i:
                raise NotAScan(f"at iteration {i} it reads step {v.reshape(-1).tolist()} of "
                               f"its sequence (streams only when iteration i reads step i)")
        go = bool(np.asarray(out[body.outputs[0].name]).reshape(-1)[0])
        counts = {b_in[2 + j]: np.asarray(out[body.outputs[1 + j].name]) for j in counters}
        i += 1
    if i != length:
        runs = f"more than {length}" if i > length else str(i)
        raise NotAScan(f"it runs {runs} iteration(s) but its sequence has {length} steps (its "
                       f"trip count is not the time length)")


# ---- running ----------------------------------------------------------------------------------
def scan_of(node: Node) -> Scan:
    hit = _SCANS.get(id(node))
    if hit is None or hit[0]() is not node:
        raise InputError(f"stream: node '{node.name}' (Loop) was not checked for streaming")
    return hit[1]


def feed(node: Node, ins: list, state: dict, explicit=lambda name: False) -> None:
    """This push's operands: the chunk's length as trip count, the carried state (unless
    the push gives that initial state: `explicit(value name)`, explicit wins)."""
    scan = scan_of(node)
    k, axis = scan.sequences[0]
    n = int(np.shape(ins[k])[axis])
    if n > scan.length:
        raise InputError(f"stream: node '{node.name}' (Loop) runs at most {scan.length} steps "
                         f"a push (its sequence's length in the graph, for which its trip "
                         f"count was checked); got a chunk of {n}")
    ins[0] = np.array(n, np.int64)
    for j in scan.states:
        if slot(j) in state and not explicit(node.inputs[2 + j]):
            ins[2 + j] = state[slot(j)]


def keep(node: Node, ins: list, res: list, state: dict) -> None:
    """Carry the final state values to the next push; a chunk the loop did not finish is an
    error (its condition ended it early)."""
    scan = scan_of(node)
    nc = node.attrs["num_carried"]
    n = int(np.asarray(ins[0]))
    for s in res[nc:]:
        if np.shape(s)[0] != n:
            raise InputError(f"stream: node '{node.name}' (Loop) stopped after "
                             f"{np.shape(s)[0]} of the chunk's {n} steps")
    for j in scan.states:
        state[slot(j)] = res[j]


def check_state(graph: Graph, node: Node, name: str, arr) -> np.ndarray:
    """A state slot given to Stream.state, checked against the carried value's shape."""
    scan = scan_of(node)
    slots = {slot(j): j for j in scan.states}
    if name not in slots:
        raise InputError(f"stream state of '{node.name}': unknown slot '{name}'; slots: "
                         f"{sorted(slots)}")
    want = graph.value(node.inputs[2 + slots[name]])
    a = np.asarray(arr) if isinstance(arr, np.ndarray) else None
    if a is None or a.dtype.kind not in "fiub" or a.ndim != len(want.shape) or any(
            isinstance(w, int) and w != d for w, d in zip(want.shape, a.shape)):
        raise InputError(f"stream state of '{node.name}'['{name}']: expected an array "
                         f"{want.describe()}, got {getattr(arr, 'shape', type(arr).__name__)}")
    dt = np.float32 if want.dtype.startswith("float") else want.dtype
    return np.array(a, dtype=dt, copy=True)
