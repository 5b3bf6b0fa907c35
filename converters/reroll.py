"""Re-roll an unrolled recurrent layer into one LSTM/GRU/RNN node over the whole sequence.

Two kinds of graph hold a recurrent layer as T copies of one step:
- Keras `LSTM(unroll=True)`: the converters write T copies of the cell's glue (Split + Squeeze
  or UNPACK of the steps, the gates' MatMuls, Split and activations);
- a Python loop over a cell (PyTorch `nn.LSTMCell`/`GRUCell`/`RNNCell`, `h, c = cell(x[t],
  (h, c))`): torch.export writes one T = 1 recurrent node per step, the TorchScript ONNX
  exporter the cell's glue per step; heads applied per step (`ys.append(linear(h))`) follow.
Each copy reads its step (a Split of the sequence, or T one-step Slices) and the previous
copy's states; outputs are stacked (Unsqueeze + Concat). Nothing in that graph carries state
from one chunk to the next, so it cannot stream, and it holds for one length only.

This pass finds the copies (every node is assigned the latest step it depends on), pairs the
values one step hands to the next by the structure of the ops that compute them, and takes the
body of a middle step (step 0 reads constant zeros instead of states). The cell is either the
one T = 1 recurrent node of that body, or what the cell patterns of
`edgeseq.converters.loops` read off its dataflow (they verify a candidate against the body run
step by step). The copies' states are replaced by the time slices of the new node's output,
so the per-step heads read those slices; `reroll_map` then applies identical heads to the whole
sequence. The result replaces the copies only when it reproduces the whole unrolled graph on a
random probe (float64 reference; for quantised glue, within a bound derived from its scales).
Whatever does not fit is left as it was: the pass never refuses a graph.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeseq.errors import EdgeseqError
from edgeseq.graph import Graph, Node, read_constants
from edgeseq.ops import Op

from edgeseq.converters import cells_torch  # noqa: F401 - registers PyTorch's GRU order
from edgeseq.converters import loops

# IR op -> the normalised kind the cell patterns read (TFLite spelling)
_KINDS = {Op.SIGMOID: "LOGISTIC", Op.SQUEEZE: "RESHAPE", Op.UNSQUEEZE: "RESHAPE"}
MIN_STEPS = 3            # a middle step needs a step before and after it
TOLERANCE = 1e-5         # the re-rolled graph against the unrolled one, relative to the output
_ONE_STEP_NODES = frozenset({Op.LSTM, Op.GRU, Op.RNN})
_LAYOUT = frozenset({Op.SQUEEZE, Op.UNSQUEEZE, Op.RESHAPE, Op.IDENTITY})


class _Skip(Exception):
    """This chain is not an unrolled cell (left as it is)."""


@dataclass
class Slices:
    """The T one-step slices of a sequence that an unrolled chain reads (time axis kept)."""
    source: str
    axis: int
    outputs: list[str]       # step k's slice
    nodes: list[Node]        # the Split, or the T Slices

    @property
    def key(self) -> tuple:
        return (self.source, self.axis, self.outputs[0])


def reroll(graph: Graph, quant_steps: dict[str, float] | None = None) -> Graph:
    """Replace every unrolled recurrent layer that a one-step node or a registered cell pattern
    reproduces by one recurrent node; returns `graph` (changed in place).

    quant_steps: value name -> its quantisation step (the largest scale) in a quantised file;
    an output with a step is checked within half of it instead of TOLERANCE (see _bounds)."""
    try:
        graph.validate()
    except EdgeseqError:
        return graph          # the converter's own validation reports what is wrong
    from edgeseq.converters.identities import drop_identities
    from edgeseq.converters.reroll_map import reroll_maps
    done = set()
    while True:
        groups = [s for s in slice_groups(graph) if s.key not in done]
        if not groups:
            return drop_identities(reroll_maps(graph, _verify))
        sl = groups[0]
        done.add(sl.key)
        try:
            new = _reroll_one(graph, sl, _bounds(graph, quant_steps or {}))
        except Exception:   # noqa: BLE001 - whatever does not fit: the graph stays as it was
            continue
        graph.nodes, graph.constants, graph.values = new.nodes, new.constants, new.values


def slice_groups(graph: Graph) -> list[Slices]:
    """Every Split of a value into >= MIN_STEPS unit steps, and every set of one-step Slices
    of one value along one axis that covers steps 0..T-1 exactly once."""
    out, by_source = [], {}
    for n in graph.nodes:
        a = n.attrs
        if n.op is Op.SPLIT and len(n.outputs) >= MIN_STEPS and all(s == 1 for s in a["split"]):
            out.append(Slices(n.inputs[0], a["axis"], list(n.outputs), [n]))
        elif n.op is Op.SLICE and len(a["axes"]) == 1 and tuple(a["steps"]) == (1,) and \
                0 <= a["starts"][0] and a["ends"][0] - a["starts"][0] == 1:
            by_source.setdefault((n.inputs[0], a["axes"][0]), []).append(n)
    for (source, axis), nodes in by_source.items():
        nodes = sorted(nodes, key=lambda n: n.attrs["starts"][0])
        if len(nodes) >= MIN_STEPS and \
                [n.attrs["starts"][0] for n in nodes] == list(range(len(nodes))):
            out.append(Slices(source, axis, [n.outputs[0] for n in nodes], nodes))
    return out


def _as_slices(split) -> Slices:
    if isinstance(split, Slices):
        return split
    return Slices(split.inputs[0], split.attrs["axis"], list(split.outputs), [split])


def _kind(op: Op) -> str:
    return _KINDS.get(op, op.value.upper())


def _step_of(graph: Graph, sl: Slices, stop: set) -> dict:
    """value -> the latest step it depends on (values after `stop` excluded)."""
    step_of = {v: k for k, v in enumerate(sl.outputs)}
    for n in graph.nodes:
        if id(n) in stop:
            continue
        k = max((step_of.get(i, -1) for i in n.inputs), default=-1)
        if k >= 0:
            step_of.update((o, k) for o in n.outputs if o)
    return step_of


def _steps(graph: Graph, split, stack: Node | None) -> list[list[Node]]:
    """The nodes of each step: the latest step a node depends on, stack and its users excluded;
    a node that only turns step t's values into step t+1's inputs belongs to step t+1."""
    sl = _as_slices(split)
    t_len = len(sl.outputs)
    step_of = {v: k for k, v in enumerate(sl.outputs)}
    after_stack = set(stack.outputs) if stack is not None else set()
    skip = {id(n) for n in sl.nodes} | {id(stack)}
    steps: list[list[Node]] = [[] for _ in range(t_len)]
    for n in graph.nodes:
        if id(n) in skip:
            continue
        if any(i in after_stack for i in n.inputs):
            after_stack.update(n.outputs)
            continue
        k = max((step_of.get(i, -1) for i in n.inputs), default=-1)
        if k < 0:
            continue
        step_of.update((o, k) for o in n.outputs if o)
        steps[k].append(n)
    slices = set(sl.outputs)
    readers = _readers(graph)
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


def _readers(graph: Graph) -> dict:
    readers: dict = {}
    for m in graph.nodes:
        for i in m.inputs:
            readers.setdefault(i, []).append(m)
    return readers


_COMMUTATIVE = frozenset({Op.ADD, Op.MUL})


def _signatures(graph: Graph, nodes: list[Node], split) -> dict:
    """value -> a structural signature within one step: the op, its attributes and its
    operands' signatures (a constant by content, a slice of the sequence as 'x', a value from
    outside the step as 'carry')."""
    sig: dict = {}
    slices = set(_as_slices(split).outputs)

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


def _find_stack(graph: Graph, split) -> Node | None:
    """The Concat whose k-th operand is computed from step k (the stacked outputs), or None."""
    sl = _as_slices(split)
    t_len = len(sl.outputs)
    step_of = _step_of(graph, sl, {id(n) for n in sl.nodes})
    for n in graph.nodes:
        if n.op is Op.CONCAT and [step_of.get(i) for i in n.inputs] == list(range(t_len)):
            return n
    return None


def _reroll_one(graph: Graph, sl: Slices, bounds: dict | None = None) -> Graph:
    t_len = len(sl.outputs)
    seq_shape = graph.value(sl.source).shape
    axis = sl.axis % len(seq_shape)
    if len(seq_shape) != 3 or axis not in (0, 1) or \
            not all(isinstance(d, int) for k, d in enumerate(seq_shape) if k != axis):
        raise _Skip("not a [T, N, I] / [N, T, I] sequence")
    dims = {}
    if isinstance(seq_shape[axis], str):
        dims[seq_shape[axis]] = t_len   # exported at T steps: checked there, runs at any T
    elif seq_shape[axis] != t_len:
        raise _Skip("the steps do not cover the sequence")
    n_batch, n_input = seq_shape[1 - axis], seq_shape[2]
    stack = _find_stack(graph, sl)
    if stack is None:
        raise _Skip("no stacked per-step outputs")
    steps = _steps(graph, sl, stack)
    m = t_len // 2
    body, before, after = steps[m], steps[m - 1], steps[m + 1]
    if not body or len(after) != len(body):
        raise _Skip("the steps are not copies of one body")
    made = {o: k for k, s in enumerate(steps) for n in s for o in n.outputs if o}
    made.update((o, k) for k, o in enumerate(sl.outputs))
    # every step value is read only by its own step, the next one, or the stack
    step_nodes = {id(n) for s in steps for n in s}
    slicing = {id(n) for n in sl.nodes}
    outputs = {v.name for v in graph.outputs}
    for n in graph.nodes:
        if id(n) in step_nodes:
            k = max(made.get(i, -1) for i in n.inputs)
            if any(i in made and made[i] < k - 1 for i in n.inputs):
                raise _Skip("a step reads a value two steps back")
            if any(i not in made and i and i not in graph.constants for i in n.inputs):
                raise _Skip("a step reads a computed value from outside the chain")
        elif n is not stack and id(n) not in slicing and any(i in made for i in n.inputs):
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
    sig_in, sig_out = _signatures(graph, before, sl), _signatures(graph, body, sl)
    by_sig = {sig_out[k]: k for k in c_out}
    if len(by_sig) != len(c_out) or len(c_in) != len(c_out) or \
            any(sig_in.get(k) not in by_sig for k in c_in):
        raise _Skip("the carried values do not line up")
    c_out = [by_sig[sig_in[k]] for k in c_in]
    if not c_in:
        raise _Skip("no value is carried from step to step (a per-step map: reroll_map)")
    sizes = []
    for k in c_in:
        shape = graph.value(k).shape
        if not all(isinstance(d, int) for d in shape) or int(np.prod(shape)) % n_batch:
            raise _Skip("a carried value has no static [N, S] shape")
        sizes.append(int(np.prod(shape)) // n_batch)
    x_shape = (1, n_batch, n_input) if axis == 0 else (n_batch, 1, n_input)
    step = _make_step(graph, body, sl.outputs[m], x_shape, c_in, c_out, n_batch, n_input, sizes)
    cand = _one_step_node(graph, step, body)
    if cand is not None:
        if loops.verify(cand, _looped(step), *_probe(step, t_len)) > loops.TOLERANCE:
            raise _Skip("the one-step node does not reproduce the body")
    else:
        try:
            cand = loops.lift(step, _looped(step), t_len).candidate
        except loops.NoMatch:
            cand = None       # no known cell: the body runs as a general Loop
    states = _state_values(graph, steps, sl, c_in, c_out, m)
    out_axis = stack.attrs["axis"] % len(graph.value(stack.outputs[0]).shape)
    out_axis = out_axis if out_axis in (0, 1) else 0
    if cand is not None:
        new = _replace(graph, sl, steps, _node_maker(cand, axis),
                       [{0: s.get(cand.h_index)} for s in states], out_axis)
    else:
        new = _replace(graph, sl, steps, _loop_maker(graph, sl, body, c_in, c_out, axis, t_len),
                       states, out_axis)
    from edgeseq.converters.reroll_map import reroll_maps
    new = reroll_maps(new, lambda old, g: _verify(old, g, dims))   # the per-step heads
    _verify(graph, new, dims, bounds)
    return new


def _probe(step: loops.Step, t_len: int):
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((t_len, step.n_batch, step.n_input))
    init = [0.5 * rng.standard_normal((step.n_batch, s)) for s in step.state_sizes]
    return xs.astype(np.float32).astype(np.float64), \
        [s.astype(np.float32).astype(np.float64) for s in init]


def _one_step_node(graph: Graph, step: loops.Step, body: list[Node]) -> loops.Candidate | None:
    """The body's one recurrent node of one step (a traced `nn.LSTMCell` call) as the cell,
    its initial states read from the carried values (through layout ops), or None."""
    rec = [n for n in body if n.op in _ONE_STEP_NODES]
    if len(rec) != 1:
        return None
    n = rec[0]
    a = n.attrs
    if a.get("direction", "forward") != "forward" or a.get("batch_first") or \
            any(i for i in n.inputs[1:2]):
        raise _Skip("the step's node is not a forward time-major cell without lengths")
    producers = {o: p for p in body for o in p.outputs}

    def origin(v):
        seen = 0
        while v in producers and producers[v].op in _LAYOUT and seen < 4:
            v, seen = producers[v].inputs[0], seen + 1
        return v
    slots = [origin(i) if i else None for i in n.inputs[2:]]
    if origin(n.inputs[0]) != step.x_key or any(s not in step.state_keys for s in slots) or \
            len(slots) != len(step.state_keys):
        raise _Skip("the step's node does not read x_t and every carried state")
    from edgeseq import reference
    weights = {slot: reference._to_compute(reference.dequantize(
        graph.constants[name], graph.constant_scale(name)))[0]
        for slot, name in n.weights.items()}
    attrs = {k: v for k, v in a.items() if k not in ("direction", "batch_first")}
    h_index = step.state_keys.index(slots[0])
    c_index = step.state_keys.index(slots[1]) if n.op is Op.LSTM else None
    return loops.Candidate(n.op, attrs, weights, h_index, c_index, f"one-step {n.op.value}")


def _state_values(graph: Graph, steps, sl: Slices, c_in, c_out, m: int) -> list[dict]:
    """For each step, state index -> the value that plays c_out[state] (the state the step
    hands on). Steps with the middle step's structure are matched by signature; a step that
    reads constants instead of states (step 0) by how the next step reads its values."""
    sig_m = _signatures(graph, steps[m], sl)
    want = [sig_m[v] for v in c_out]

    def read_key(nodes, sig, value):
        return frozenset((sig[n.outputs[0]], -1 if n.op in _COMMUTATIVE else j)
                         for n in nodes for j, i in enumerate(n.inputs) if i == value)
    keys_m = [read_key(steps[m], sig_m, v) for v in c_in]
    out = []
    for k, nodes in enumerate(steps):
        sig = _signatures(graph, nodes, sl)
        found = {}
        for s, w in enumerate(want):
            hits = [v for v, g in sig.items() if g == w]
            if len(hits) == 1:
                found[s] = hits[0]
        out.append(found)
    for k in range(len(steps) - 1):
        if len(out[k]) == len(want):
            continue
        mine = {o for n in steps[k] for o in n.outputs}
        sig = _signatures(graph, steps[k + 1], sl)
        for v in dict.fromkeys(i for n in steps[k + 1] for i in n.inputs if i in mine):
            key = read_key(steps[k + 1], sig, v)
            hits = [s for s, km in enumerate(keys_m) if km == key]
            if len(hits) == 1:
                out[k].setdefault(hits[0], v)
    return out


def _make_step(graph, body, x_key, x_shape, c_in, c_out, n_batch, n_input, sizes) -> loops.Step:
    from edgeseq import reference
    consts = {name: reference._to_compute(reference.dequantize(c, graph.constant_scale(name)))
              for name, c in graph.constants.items()}
    shapes = {k: graph.value(k).shape for k in c_in}
    shapes[x_key] = x_shape                   # one step, the time axis kept

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
    # no per-step output: the heads stay in the graph, the cell is checked by its states
    return loops.Step(run, ops, x_key, list(c_in), list(c_out), None, n_batch, n_input, sizes)


def _looped(step: loops.Step):
    """The body run over a sequence: (None, final states)."""
    def loop(xs, init):
        states = list(init)
        for x in xs:
            env = step.run(x, states, {})
            states = [env[k].reshape(step.n_batch, -1) for k in step.new_state_keys]
        return None, states
    return loop


def _node_maker(cand: loops.Candidate, axis: int):
    """Nodes of the lifted recurrent node over the sequence: {0: its [T, N, H] output}."""
    if cand.run is not None:
        raise _Skip("not a sequence cell")

    def make(new: Graph, x: str, base: str):
        nodes = []
        if axis == 1:
            x_tm = new.fresh_name(base + "_x")
            nodes.append(Node(x_tm, Op.TRANSPOSE, [x], [x_tm], {"perm": (1, 0, 2)}))
            x = x_tm
        weights = {}
        for slot, w in cand.weights.items():
            name = new.fresh_name(f"{base}_{slot}")
            new.constants[name] = np.asarray(w, np.float32)[None]
            weights[slot] = name
        y, y3 = new.fresh_name(base + "_y"), new.fresh_name(base + "_y3")
        nodes.append(Node(base, cand.op, [x], [y], dict(cand.attrs), weights))
        nodes.append(Node(y3, Op.SQUEEZE, [y], [y3], {"axes": (1,)}))
        return nodes, {0: y3}
    return make


def _loop_maker(graph: Graph, sl: Slices, body: list[Node], c_in, c_out, axis: int,
                t_len: int):
    """Nodes of a general Loop running the middle step's body once per step (a cell no pattern
    knows): the iteration gathers its step of the sequence (a captured value), the states are
    carried from zeros, and every state is also a scan output {state: [T, N, S]}."""
    from edgeseq.graph import Value

    def make(new: Graph, x: str, base: str):
        seq = graph.value(sl.source)
        it, go, x_all = base + "/iteration", base + "/cond", base + "/sequence"
        x_t, x_key = base + "/x_t", sl.outputs[len(sl.outputs) // 2]
        b_nodes = [Node(base + "/gather", Op.GATHER, [x_all, it], [x_t], {"axis": axis}),
                   Node(base + "/step", Op.UNSQUEEZE, [x_t], [x_key], {"axes": (axis,)})]
        b_nodes += [Node(n.name, n.op, list(n.inputs), list(n.outputs), dict(n.attrs),
                         dict(n.weights)) for n in body]
        b_nodes.append(Node(base + "/go", Op.IDENTITY, [go], [go + "_out"], {}))
        scans = [f"{base}/scan{j}" for j in range(len(c_out))]
        b_nodes += [Node(o, Op.IDENTITY, [v], [o], {}) for o, v in zip(scans, c_out)]
        consts = read_constants(graph.constants, body)
        states = [Value(k, "float32", graph.value(k).shape) for k in c_in]
        b_graph = Graph(base + "/body",
                        [Value(it, "int64", ()), Value(go, "bool", ()), *states,
                         Value(x_all, seq.dtype, seq.shape)],
                        [Value(go + "_out", "bool", ())] +
                        [Value(o, "float32", ()) for o in [*c_out, *scans]], b_nodes, consts)
        trip = new.fresh_name(base + "_trips")
        new.constants[trip] = np.array(t_len, np.int64)
        inits = []
        for v in states:
            inits.append(new.fresh_name(f"{base}_init"))
            new.constants[inits[-1]] = np.zeros(v.shape, np.float32)
        finals = [new.fresh_name(f"{base}_final{j}") for j in range(len(c_out))]
        ys = [new.fresh_name(f"{base}_y{j}") for j in range(len(c_out))]
        node = Node(base, Op.LOOP, [trip, "", *inits, x], finals + ys,
                    {"body": b_graph, "num_carried": len(c_out)})
        return [node], dict(enumerate(ys))
    return make


def _replace(graph: Graph, sl: Slices, steps, make, values: list[dict],
             out_axis: int) -> Graph:
    """`graph` with the nodes `make` builds over the sequence ({key: [T, N, S] output}); step
    k's value values[k][key] becomes slice k of that output (the heads read it), and the
    copies nobody reads any more are dropped."""
    new = graph.copy()
    base = new.fresh_name(sl.nodes[0].name + "/reroll")
    nodes, outs = make(new, sl.source, base)
    replaced = set()
    for key, y3 in outs.items():
        if out_axis == 1:
            y_bt = new.fresh_name(f"{base}_bt{key}")
            nodes.append(Node(y_bt, Op.TRANSPOSE, [y3], [y_bt], {"perm": (1, 0, 2)}))
            y3 = y_bt
        for k, found in enumerate(values):
            h = found.get(key)
            if h is None:
                continue
            if len(graph.value(h).shape) != 2:
                raise _Skip("a step's state is not [N, S]")
            cut = new.fresh_name(f"{base}_step{k}_{key}")
            nodes.append(Node(cut, Op.SLICE, [y3], [cut], {"starts": (k,), "ends": (k + 1,),
                                                             "axes": (out_axis,), "steps": (1,)}))
            nodes.append(Node(new.fresh_name(f"{base}_h{k}_{key}"), Op.SQUEEZE, [cut], [h],
                              {"axes": (out_axis,)}))
            replaced.add(h)
    chain = {n.name for s in steps for n in s} | {n.name for n in sl.nodes}
    at = min(k for k, n in enumerate(new.nodes) if n.name in chain)
    kept = new.nodes[:at] + nodes + new.nodes[at:]
    for n in kept:
        if n.name in chain:      # the old producers of the h values write where nobody reads
            n.outputs = [new.fresh_name(o + "/unrolled") if o in replaced else o
                         for o in n.outputs]
    slices = {n.name for n in nodes if n.op in (Op.SLICE, Op.SQUEEZE)}   # unread ones go
    kept = _drop_unread(kept, chain | slices, {v.name for v in graph.outputs})
    made_here, ours = {o for n in nodes for o in n.outputs}, {id(n) for n in nodes}
    if not any(i in made_here for n in kept if id(n) not in ours for i in n.inputs) and \
            not made_here & {v.name for v in graph.outputs}:
        raise _Skip("nothing reads the re-rolled sequence")
    made = {o: k for k, s in enumerate(steps) for n in s for o in n.outputs if o}
    step_of = {n.name: k for k, s in enumerate(steps) for n in s}
    if any(made.get(i, step_of[n.name]) < step_of[n.name]
           for n in kept if n.name in step_of for i in n.inputs):
        raise _Skip("a per-step node still reads the previous step: not only h leaves a step")
    new.nodes = kept
    new.constants = read_constants(new.constants, kept)
    new.values = {}
    return new.validate()


def _drop_unread(nodes: list[Node], droppable: set, outputs: set) -> list[Node]:
    """`nodes` without the droppable ones whose outputs nobody reads (repeatedly)."""
    while True:
        read = ({i for n in nodes for i in n.inputs} | outputs) - {""}
        dead = {id(n) for n in nodes if n.name in droppable and not set(n.outputs) & read}
        if not dead:
            return nodes
        nodes = [n for n in nodes if id(n) not in dead]


_PASS_THROUGH = frozenset({Op.IDENTITY, Op.TRANSPOSE, Op.RESHAPE, Op.SQUEEZE, Op.UNSQUEEZE})


def _bounds(graph: Graph, quant_steps: dict[str, float]) -> dict[str, float]:
    """Graph output -> how far a re-rolled graph may be from the unrolled one there: half the
    quantisation step of the quantised tensor the output is (through layout ops), else absent.

    NOTE: in a quantised file each step's copy of a glue constant may be quantised at its own
    scale (TFLite int8: step 0 adds its bias inside FULLY_CONNECTED, as int32 at
    s_x * s_w, later steps in an ADD, as int8 at the ADD's scale), while the re-rolled node
    takes the middle step's copy for every step. The file itself writes the output as integers
    at step s: answers closer than s / 2 are the same output to it. The cell is still the one
    the middle step computes to 1e-5 (`loops.lift`); only the copies' rounding is absorbed."""
    producers = {o: n for n in graph.nodes for o in n.outputs}
    out = {}
    for v in graph.outputs:
        name, seen = v.name, 0
        while name not in quant_steps and name in producers and seen < 8 and \
                producers[name].op in _PASS_THROUGH:
            name, seen = producers[name].inputs[0], seen + 1
        if name in quant_steps:
            out[v.name] = 0.5 * quant_steps[name]
    return out


def _index_bound(graph: Graph, v) -> int:
    """Values an integer input (token ids, lengths) takes on the probe: [0, rows of the
    smallest constant table it indexes through layout ops); any other use skips the probe."""
    readers = _readers(graph)
    bound, todo = None, [v.name]
    while todo:
        name = todo.pop()
        for n in readers.get(name, ()):
            if n.op in _PASS_THROUGH or n.op is Op.TRANSPOSE:
                todo.extend(n.outputs)
            elif n.op is Op.GATHER and n.inputs[1] == name and n.inputs[0] in graph.constants:
                rows = graph.constants[n.inputs[0]].shape[n.attrs.get("axis", 0)]
                bound = rows if bound is None else min(bound, rows)
            else:
                raise _Skip(f"probe: integer input '{v.name}' is read by '{n.name}'")
    return max(bound or 1, 1)       # unread or only passed on: any value will do


def _verify(old: Graph, new: Graph, dims: dict | None = None,
            bounds: dict | None = None) -> None:
    """The re-rolled graph reproduces the unrolled one on a random probe (float64 reference);
    `dims` binds symbolic input dims (the length the chain was unrolled at), `bounds` are the
    quantisation-aware tolerances of quantised outputs (_bounds)."""
    from edgeseq import reference
    rng = np.random.default_rng(3)
    feeds = {}
    for v in old.inputs:
        shape = tuple((dims or {}).get(d, d) for d in v.shape)
        if not all(isinstance(d, int) for d in shape):
            raise _Skip("probe needs static inputs")
        if v.dtype.startswith("float"):
            feeds[v.name] = rng.standard_normal(shape).astype(v.dtype)
        else:
            feeds[v.name] = rng.integers(0, _index_bound(old, v), shape).astype(v.dtype)
    want, got = reference.run(old, feeds), reference.run(new, feeds)
    for k, w in want.items():
        g = got[k]
        tol = max(TOLERANCE * (1 + np.max(np.abs(w))), (bounds or {}).get(k, 0.0))
        if g.shape != w.shape or np.max(np.abs(g - w)) > tol:
            raise _Skip(f"the re-rolled graph differs from the unrolled one at {k}")
