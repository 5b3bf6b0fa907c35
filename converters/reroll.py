"""Re-roll an unrolled recurrent layer (Keras `LSTM(unroll=True)`) into one LSTM/GRU/RNN node.

Converters write such a layer as T copies of the cell's glue: the sequence is split into T
steps (ONNX Split + Squeeze, TFLite UNPACK), each copy reads its step and the previous copy's
h (and c), and the copies' outputs are stacked (Unsqueeze + Concat). Nothing in that graph
carries state from one chunk to the next, so it cannot stream. This pass finds the copies
(every node is assigned the latest step it depends on), takes the body of a middle step (step 0
reads constant zeros instead of h), hands it to the cell patterns of
`edgeseq.converters.loops` as a `Step` (they match the dataflow, read the weights by probing and
verify a candidate against the body run step by step), and replaces the copies with the lifted
node only when the new graph reproduces the whole unrolled graph on a random probe (float64
reference). Whatever does not fit is left as it was: the pass never refuses a graph.
"""
from __future__ import annotations

import numpy as np

from edgeseq.errors import EdgeseqError
from edgeseq.graph import Graph, Node
from edgeseq.ops import Op

from edgeseq.converters import loops

# IR op -> the normalised kind the cell patterns read (TFLite spelling)
_KINDS = {Op.SIGMOID: "LOGISTIC", Op.SQUEEZE: "RESHAPE", Op.UNSQUEEZE: "RESHAPE"}
MIN_STEPS = 3            # a middle step needs a step before and after it
TOLERANCE = 1e-5         # the re-rolled graph against the unrolled one, relative to the output


class _Skip(Exception):
    """This split is not the start of an unrolled cell (left as it is)."""


def reroll(graph: Graph) -> Graph:
    """Replace every unrolled recurrent layer that a registered cell pattern reproduces by one
    recurrent node; returns `graph` (changed in place)."""
    try:
        graph.validate()
    except EdgeseqError:
        return graph          # the converter's own validation reports what is wrong
    from edgeseq.converters.identities import drop_identities
    from edgeseq.converters.reroll_map import reroll_maps
    done = set()
    while True:
        splits = [n for n in graph.nodes if n.op is Op.SPLIT and n.name not in done
                  and len(n.outputs) >= MIN_STEPS and all(s == 1 for s in n.attrs["split"])]
        if not splits:
            return drop_identities(reroll_maps(graph, _verify))
        split = splits[0]
        done.add(split.name)
        try:
            new = _reroll_one(graph, split)
        except Exception:   # noqa: BLE001 - whatever does not fit: the graph stays as it was
            continue
        graph.nodes, graph.constants, graph.values = new.nodes, new.constants, new.values


def _kind(op: Op) -> str:
    return _KINDS.get(op, op.value.upper())


def _steps(graph: Graph, split: Node, stack: Node | None) -> list[list[Node]]:
    """The nodes of each step: the latest step a node depends on, stack and its users excluded;
    a node that only turns step t's values into step t+1's inputs belongs to step t+1."""
    t_len = len(split.outputs)
    step_of = {v: k for k, v in enumerate(split.outputs)}
    after_stack = set(stack.outputs) if stack is not None else set()
    steps: list[list[Node]] = [[] for _ in range(t_len)]
    for n in graph.nodes:
        if n is split or n is stack:
            continue
        if any(i in after_stack for i in n.inputs):
            after_stack.update(n.outputs)
            continue
        k = max((step_of.get(i, -1) for i in n.inputs), default=-1)
        if k < 0:
            continue
        step_of.update((o, k) for o in n.outputs)
        steps[k].append(n)
    slices = set(split.outputs)
    readers: dict = {}
    for m in graph.nodes:
        for i in m.inputs:
            readers.setdefault(i, []).append(m)
    outputs = {v.name for v in graph.outputs}
    for t in range(t_len - 1):
        nxt = {id(n) for n in steps[t + 1]}
        for n in reversed(list(steps[t])):
            users = [m for o in n.outputs for m in readers.get(o, ())]
            if users and all(id(m) in nxt for m in users) and not slices & set(n.inputs) \
                    and not set(n.outputs) & outputs:
                steps[t].remove(n)
                steps[t + 1].insert(0, n)
                nxt.add(id(n))
    return steps


_COMMUTATIVE = frozenset({Op.ADD, Op.MUL})


def _signatures(graph: Graph, nodes: list[Node], split: Node) -> dict:
    """value -> a structural signature within one step: the op, its attributes and its
    operands' signatures (a constant by content, a slice of the sequence as 'x', a value from
    outside the step as 'carry')."""
    sig: dict = {}
    slices = set(split.outputs)

    def operand(i):
        if i in sig:
            return sig[i]
        if i in graph.constants:
            c = graph.constants[i]
            return ("const", c.shape, hash(np.ascontiguousarray(c).tobytes()))
        return "x" if i in slices else "carry"
    for n in nodes:
        ins = [operand(i) for i in n.inputs]
        if n.op in _COMMUTATIVE:
            ins = sorted(ins, key=repr)
        attrs = tuple(sorted((k, repr(v)) for k, v in n.attrs.items()))
        for k, o in enumerate(n.outputs):
            sig[o] = hash((n.op.value, attrs, tuple(ins), k))
    return sig


def _find_stack(graph: Graph, split: Node) -> Node | None:
    """The Concat whose k-th operand is computed from step k (the stacked outputs), or None."""
    t_len = len(split.outputs)
    for n in graph.nodes:
        if n.op is Op.CONCAT and len(n.inputs) == t_len:
            return n
    return None


def _reroll_one(graph: Graph, split: Node) -> Graph | None:
    t_len = len(split.outputs)
    seq = split.inputs[0]
    seq_shape = graph.value(seq).shape
    axis = split.attrs["axis"] % len(seq_shape)
    if len(seq_shape) != 3 or axis not in (0, 1) or not all(isinstance(d, int) for d in seq_shape):
        raise _Skip("not a [T, N, I] / [N, T, I] sequence")
    n_batch, n_input = seq_shape[1 - axis], seq_shape[2]
    stack = _find_stack(graph, split)
    if stack is None:
        raise _Skip("no stacked per-step outputs")
    steps = _steps(graph, split, stack)
    m = t_len // 2
    body, before, after = steps[m], steps[m - 1], steps[m + 1]
    if not body or len(after) != len(body):
        raise _Skip("the steps are not copies of one body")
    made = {o: k for k, s in enumerate(steps) for n in s for o in n.outputs}
    made.update((o, k) for k, o in enumerate(split.outputs))
    # every step value is read only by its own step, the next one, or the stack
    step_nodes = {id(n) for s in steps for n in s}
    outputs = {v.name for v in graph.outputs}
    for n in graph.nodes:
        if id(n) in step_nodes:
            k = max(made.get(i, -1) for i in n.inputs)
            if any(i in made and made[i] < k - 1 for i in n.inputs):
                raise _Skip("a step reads a value two steps back")
            if any(i not in made and i and i not in graph.constants for i in n.inputs):
                raise _Skip("a step reads a computed value from outside the chain")
        elif n is not stack and n is not split and any(i in made for i in n.inputs):
            raise _Skip("a step value is read outside the chain")
    if any(o in made for o in outputs):
        raise _Skip("a step value is a graph output")
    if [made.get(i) for i in stack.inputs] != list(range(t_len)):
        raise _Skip("the stack does not take one output per step in order")
    c_in = list(dict.fromkeys(i for n in body for i in n.inputs if made.get(i) == m - 1))
    c_out = list(dict.fromkeys(i for n in after for i in n.inputs if made.get(i) == m))
    # a carried value of step m-1 and one of step m are the same state when the ops that
    # compute them have the same structure (operands: constants by content, the step's slice,
    # carried values)
    sig_in, sig_out = _signatures(graph, before, split), _signatures(graph, body, split)
    by_sig = {sig_out[k]: k for k in c_out}
    if len(by_sig) != len(c_out) or len(c_in) != len(c_out) or \
            any(sig_in.get(k) not in by_sig for k in c_in):
        raise _Skip("the carried values do not line up")
    c_out = [by_sig[sig_in[k]] for k in c_in]
    x_key = split.outputs[m]
    sizes = []
    for k in c_in:
        shape = graph.value(k).shape
        if not all(isinstance(d, int) for d in shape) or int(np.prod(shape)) % n_batch:
            raise _Skip("a carried value has no static [N, S] shape")
        sizes.append(int(np.prod(shape)) // n_batch)
    step = _make_step(graph, body, x_key, c_in, c_out, stack.inputs[m], n_batch, n_input, sizes)
    lifted = loops.lift(step, _looped(step), t_len)
    new = _replace(graph, split, stack, steps, lifted.candidate, axis)
    _verify(graph, new)
    return new


def _make_step(graph, body, x_key, c_in, c_out, out_key, n_batch, n_input, sizes) -> loops.Step:
    from edgeseq import reference
    consts = {name: reference._to_compute(reference.dequantize(c, graph.constant_scale(name)))
              for name, c in graph.constants.items()}
    shapes = {k: graph.value(k).shape for k in [x_key, *c_in]}

    def run(x, states, over):
        env = dict(consts)
        env[x_key] = np.asarray(x, np.float64).reshape(shapes[x_key])
        for k, s in zip(c_in, states):
            env[k] = np.asarray(s, np.float64).reshape(shapes[k])
        for n in body:
            outs = reference._OPS[n.op](graph, n, [env[i] if i else None for i in n.inputs])
            for name, v in zip(n.outputs, outs):
                if name:
                    env[name] = over[name] if name in over else v
        return env
    ops = [loops.BodyOp(_kind(n.op), tuple(i for i in n.inputs if i), tuple(n.outputs))
           for n in body]
    return loops.Step(run, ops, x_key, list(c_in), list(c_out), out_key, n_batch, n_input, sizes)


def _looped(step: loops.Step):
    """The body run over a sequence: (y [T, N, O], final states)."""
    def loop(xs, init):
        states, ys = list(init), []
        for x in xs:
            env = step.run(x, states, {})
            states = [env[k].reshape(step.n_batch, -1) for k in step.new_state_keys]
            ys.append(env[step.out_key].reshape(step.n_batch, -1))
        return np.stack(ys), states
    return loop


def _replace(graph: Graph, split: Node, stack: Node, steps, cand: loops.Candidate,
             axis: int) -> Graph:
    if cand.run is not None:
        raise _Skip("not a sequence cell")
    new = graph.copy()
    base = stack.name
    x = split.inputs[0]
    nodes = []
    if axis == 1:
        x_tm = new.fresh_name(base + "/reroll_x")
        nodes.append(Node(x_tm, Op.TRANSPOSE, [x], [x_tm], {"perm": (1, 0, 2)}))
        x = x_tm
    weights = {}
    for slot, w in cand.weights.items():
        name = new.fresh_name(f"{base}/reroll_{slot}")
        new.constants[name] = np.asarray(w, np.float32)[None]
        weights[slot] = name
    y = new.fresh_name(base + "/reroll_y")
    rec = Node(new.fresh_name(base + "/reroll"), cand.op, [x], [y], dict(cand.attrs), weights)
    nodes.append(rec)
    y3 = new.fresh_name(base + "/reroll_y3")
    out = stack.outputs[0]
    stack_axis = stack.attrs["axis"] % len(graph.value(out).shape)
    nodes.append(Node(y3, Op.SQUEEZE, [y], [y3 if stack_axis == 1 else out], {"axes": (1,)}))
    if stack_axis == 1:
        nodes.append(Node(base + "/reroll_bt", Op.TRANSPOSE, [y3], [out], {"perm": (1, 0, 2)}))
    gone = {id(n) for s in steps for n in s} | {id(split), id(stack)}
    at = graph.nodes.index(split)
    kept = [n for n in graph.nodes[:at] if id(n) not in gone]
    kept += nodes + [n for n in graph.nodes[at:] if id(n) not in gone]
    new.nodes = kept
    used = {i for n in kept for i in n.inputs} | {w for n in kept for w in n.weights.values()}
    new.constants = {k: v for k, v in new.constants.items()
                     if k in used or any(k == u + ".scale" for u in used)}
    new.values = {}
    return new.validate()


def _verify(old: Graph, new: Graph) -> None:
    """The re-rolled graph reproduces the unrolled one on a random probe (float64 reference)."""
    from edgeseq import reference
    rng = np.random.default_rng(3)
    feeds = {}
    for v in old.inputs:
        if not all(isinstance(d, int) for d in v.shape) or not v.dtype.startswith("float"):
            raise _Skip("probe needs static float inputs")
        feeds[v.name] = rng.standard_normal(v.shape).astype(v.dtype)
    want, got = reference.run(old, feeds), reference.run(new, feeds)
    for k, w in want.items():
        g = got[k]
        if g.shape != w.shape or np.max(np.abs(g - w)) > TOLERANCE * (1 + np.max(np.abs(w))):
            raise _Skip(f"the re-rolled graph differs from the unrolled one at {k}")
