"""Which graphs can stream, and along which axis time runs through every value.

A graph streams when every node is per-time-step: its output at step t depends only on
inputs at step t (and, for forward recurrent nodes, on the carried state). Then pushing a
sequence chunk by chunk equals one full run. What cannot stream exactly, and is refused with
a GraphError naming the node: reverse/bidirectional recurrence (needs the future),
per-batch sequence_lens, a Conv1d whose kernel spans several time steps, reductions,
softmax, slicing, padding or concatenation along the time axis, and mixing a time value with
a per-chunk value (such as a final state) that is not constant.

Per-chunk final values (a recurrent node's final state, the last step taken by a Slice or a
Gather at index -1, as `return_sequences=False` and `return_state` exports write them) stream
through any op that has no time input: after each push they are the values of the sequence so
far, after the last push those of the whole run.

Rules are registered per op: rule(node, axes, values, static) -> output axes, where axes[k]
is the time axis of input k (None: no time axis) and static[k] says whether input k is
constant over the stream.

`_feed_state` hands a stream's carried state to a recurrent node as its initial state.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edgeseq.errors import GraphError, InputError
from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import BINARY, COMPARISON, Op, RECURRENT, UNARY

_RULES: dict[Op, Callable] = {}
_NEEDS_CONSTS = {Op.GATHER}     # rules that also read their constant inputs (consts=[...])


class NotStreamable(Exception):
    """Internal: a node cannot run chunk by chunk (turned into a GraphError naming it)."""


class WrongAxis(NotStreamable):
    """Internal: the candidate time axis is not the recurrent node's: the candidate is
    wrong, not the model, so another candidate's refusal names the real obstacle."""


def _rule(*ops: Op):
    def deco(fn):
        for op in ops:
            _RULES[op] = fn
        return fn
    return deco


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise NotStreamable(msg)


def _one_time_input(axes, static, k=0):
    _need(axes[k] is not None, "its main input has no time axis")
    for j, (a, s) in enumerate(zip(axes, static)):
        if j != k and a is None:
            _need(s, f"input {j} is a per-chunk value (not constant over the stream)")
    return axes[k]


@_rule(*RECURRENT)
def _recurrent(node, axes, vals, static):
    a = node.attrs
    _need(a["direction"] == "forward",
          f"direction '{a['direction']}' needs the whole sequence (only forward streams)")
    _need(len(node.inputs) < 2 or not node.inputs[1] or static[1] is None,
          "per-batch sequence_lens cannot be applied chunk by chunk")
    want = 1 if a["batch_first"] else 0
    if axes[0] != want:
        raise WrongAxis(f"time must run along axis {want} of its input x, got axis {axes[0]}")
    return [want, None, None]


@_rule(*UNARY, Op.SOFTMAX, Op.LOG_SOFTMAX, Op.LP_NORMALIZATION)
def _unary(node, axes, vals, static):
    t = _one_time_input(axes, static)
    if node.op in (Op.SOFTMAX, Op.LOG_SOFTMAX, Op.LP_NORMALIZATION):
        _need(node.attrs["axis"] % len(vals[0].shape) != t, "it normalises over the time axis")
    return [t]


@_rule(*BINARY)
def _binary(node, axes, vals, static):
    rank = max(len(v.shape) for v in vals)
    out = set()
    for a, v, s in zip(axes, vals, static):
        shift = rank - len(v.shape)
        if a is not None:
            out.add(a + shift)
        else:
            _need(s, "an operand is a per-chunk value (not constant over the stream)")
    _need(len(out) == 1, "its operands have time along different axes")
    t = out.pop()
    for a, v in zip(axes, vals):
        k = t - (rank - len(v.shape))
        if a is None and k >= 0:
            _need(v.shape[k] == 1, f"operand '{v.name}' has size {v.shape[k]} along the time axis")
    return [t]


@_rule(Op.MATMUL)
def _matmul(node, axes, vals, static):
    t = _one_time_input(axes, static)
    a, b = vals
    _need(len(a.shape) >= 2 and t != len(a.shape) - 1, "it contracts over the time axis")
    rank = max(len(a.shape), len(b.shape))
    return [t + rank - len(a.shape)]


@_rule(Op.GEMM)
def _gemm(node, axes, vals, static):
    t = _one_time_input(axes, static)
    _need(t == 0 and not node.attrs["trans_a"], "it contracts over the time axis")
    if len(vals) > 2 and vals[2] is not None:
        c = vals[2]
        _need(len(c.shape) < 2 or c.shape[0] == 1, "its bias has a row per time step")
    return [0]


@_rule(Op.CONV1D)
def _conv(node, axes, vals, static):
    t = _one_time_input(axes, static)
    a = node.attrs
    _need(t != 1, "time runs along its channel axis")
    if t == 2:
        # a kernel over several steps streams with a carried input window
        # (runtime/stream_windows.py) when each output needs no future frame
        k = vals[1].shape[2]
        _need(a["stride"] == 1, f"its stride {a['stride']} along time needs the phase of "
              "every chunk")
        _need(a["pads"][1] == 0, f"its kernel (size {k}) spans several time steps and its "
              f"right padding {a['pads'][1]} needs future steps (padding 'same'); export "
              "with padding 'causal' or 'valid' to stream it")
    return [t]


@_rule(Op.REDUCE_MEAN, Op.REDUCE_SUM)
def _reduce(node, axes, vals, static):
    t = _one_time_input(axes, static)
    r = len(vals[0].shape)
    red = {x % r for x in node.attrs["axes"]} if node.attrs["axes"] else set(range(r))
    _need(t not in red, "it reduces over the time axis")
    return [t if node.attrs["keepdims"] else t - sum(1 for x in red if x < t)]


@_rule(Op.CONCAT)
def _concat(node, axes, vals, static):
    _need(all(a is not None for a in axes) and len(set(axes)) == 1,
          "its inputs do not all carry time along the same axis")
    _need(node.attrs["axis"] % len(vals[0].shape) != axes[0], "it concatenates along time")
    return [axes[0]]


@_rule(Op.SPLIT)
def _split(node, axes, vals, static):
    t = _one_time_input(axes, static)
    _need(node.attrs["axis"] % len(vals[0].shape) != t, "it splits along time")
    return [t] * len(node.outputs)


@_rule(Op.SLICE)
def _slice(node, axes, vals, static):
    t = _one_time_input(axes, static)
    r = len(vals[0].shape)
    out = t
    for st, en, ax, sp in zip(*(node.attrs[k] for k in ("starts", "ends", "axes", "steps"))):
        if ax % r != t or (st == 0 and sp == 1 and en >= 2 ** 31 - 1):
            continue
        # the last step (return_sequences=False): per chunk, the chunk's last step, which
        # after the last push is the whole run's
        _need(sp >= 0 or _last_step(st, en, sp), "it reverses the time axis (a backward "
              "layer needs the whole sequence)")
        _need(_last_step(st, en, sp), "it slices along time (only the whole axis or its last "
              "step stream)")
        out = None
    return [out]


def _last_step(start: int, end: int, step: int) -> bool:
    return (step == 1 and start == -1 and end >= 2 ** 31 - 1) or \
        (step == -1 and start in (-1, 2 ** 31 - 1, 2 ** 63 - 1) and end == -2)


@_rule(Op.TRANSPOSE)
def _transpose(node, axes, vals, static):
    t = _one_time_input(axes, static)
    return [list(node.attrs["perm"]).index(t)]


@_rule(Op.RESHAPE)
def _reshape(node, axes, vals, static):
    t = _one_time_input(axes, static)
    shape = list(node.attrs["shape"])
    src = vals[0].shape
    _need(all(isinstance(d, int) for k, d in enumerate(src) if k != t),
          "its input has symbolic dims besides time")
    after = int(np.prod(src[t + 1:], dtype=np.int64))
    before = int(np.prod(src[:t], dtype=np.int64))
    for k, d in enumerate(shape):
        # time lands on axis k if it is copied there (0 at its own index) or inferred (-1),
        # and the elements before/after it in the output are exactly those of one step
        if not (d == -1 or (d == 0 and k == t)):
            continue
        out_dims = [src[j] if (e == 0 and j < len(src)) else e for j, e in enumerate(shape)]
        pre, post = out_dims[:k], out_dims[k + 1:]
        if all(isinstance(e, int) and e > 0 for e in pre + post) and \
                (pre == list(src[:t]) or (before == 1 and int(np.prod(pre, dtype=np.int64)) == 1)) \
                and int(np.prod(post, dtype=np.int64)) == after:
            return [k]
    raise NotStreamable("it reshapes across the time axis (it streams only when the elements "
                        "of one time step stay together and time is copied (0) or inferred (-1))")


@_rule(Op.SQUEEZE)
def _squeeze(node, axes, vals, static):
    t = _one_time_input(axes, static)
    r = len(vals[0].shape)
    sq = {x % r for x in node.attrs["axes"]}
    _need(bool(sq) and t not in sq, "it may squeeze the time axis (give explicit axes)")
    return [t - sum(1 for x in sq if x < t)]


@_rule(Op.UNSQUEEZE)
def _unsqueeze(node, axes, vals, static):
    t = _one_time_input(axes, static)
    r = len(vals[0].shape) + len(node.attrs["axes"])
    new = sorted(x % r for x in node.attrs["axes"])
    kept = [k for k in range(r) if k not in new]
    return [kept[t]]


@_rule(Op.PAD)
def _pad(node, axes, vals, static):
    t = _one_time_input(axes, static)
    r = len(vals[0].shape)
    p = node.attrs["pads"]
    _need(p[t] == 0 and p[t + r] == 0, "it pads along time")
    return [t]


@_rule(Op.GATHER)
def _gather(node, axes, vals, static, consts=None):
    if axes[0] is None and len(axes) > 1 and axes[1] is not None and static[0]:
        # a lookup of time-carrying indices in a constant table (an embedding of tokens):
        # the indices' dims replace the table's axis, time among them
        return [node.attrs["axis"] % len(vals[0].shape) + axes[1]]
    t = _one_time_input(axes, static)
    ax = node.attrs["axis"] % len(vals[0].shape)
    if ax == t:
        # gathering the last step (index -1) is a per-chunk final value, as for Slice
        idx = consts[1] if consts else None
        _need(idx is not None and idx.size == 1 and int(idx.reshape(-1)[0]) == -1,
              "it gathers along time (only the last step, constant index -1, streams)")
        return [None]
    _need(ax != t, "it gathers along time")
    return [t if t < ax else t + len(vals[1].shape) - 1]


def time_axes(graph: Graph, given: dict[str, int | None] | None = None) -> dict[str, int | None]:
    """Time axis of every value of a validated graph when streaming (None: no time axis).

    `given` fixes the time axis of graph inputs; the others are found by trying each axis
    and keeping the assignment under which every node streams. Raises GraphError naming
    the node (or input) that prevents streaming."""
    given = dict(given or {})
    names = {v.name for v in graph.inputs}
    unknown = set(given) - names
    if unknown:
        raise GraphError(f"time_axes names unknown input(s) {sorted(unknown)}; inputs: "
                         f"{sorted(names)}")
    state_only = state_prep(graph).inputs
    free = [v for v in graph.inputs if v.name not in given and v.name not in state_only]
    # every axis, then none for a vector (per-row lengths, given whole with each push; never
    # for a higher-rank input, which could be a sequence read whole against a chunk)
    choices = [list(range(len(v.shape))) + ([None] if len(v.shape) <= 1 else []) for v in free]
    # NOTE: of the failed candidates, report the one that streamed furthest into the graph:
    # its blocking node is the real obstacle (the first candidate is often the batch axis,
    # which fails at the first recurrent node for a reason that is not the model's)
    best: GraphError | None = None
    for combo in itertools.islice(itertools.product(*choices), 4096):
        axes = {v.name: None for v in graph.inputs}
        axes.update(given)
        axes.update({v.name: a for v, a in zip(free, combo)})
        if not _one_length(graph, axes):
            continue
        try:
            return _propagate(graph, axes)
        except GraphError as e:
            if best is None or getattr(e, "progress", -1) > getattr(best, "progress", -1):
                best = e
    if best is None:
        raise GraphError("graph has no inputs to stream")
    raise best


def _one_length(graph: Graph, axes: dict) -> bool:
    """Some input has a time axis, and the inputs given one agree on its length where the
    graph fixes it (a Stream pushes one chunk length to all of them): a [N] lengths input of
    a fixed-shape graph is not a time axis of N steps."""
    fixed = [graph.value(k).shape[a] for k, a in axes.items() if a is not None]
    return bool(fixed) and len({d for d in fixed if isinstance(d, int)}) <= 1


@dataclass(frozen=True)
class StatePrep:
    """Graph inputs that only set recurrent initial states (or sequence lengths), directly or
    through glue of their own (Keras' [N, H] initial state unsqueezed to [1, N, H]): such an
    input is optional, and a Stream reads it only when given (explicit wins over the carried
    state). `nodes`: that glue, skipped when its inputs are left out; `sources`: the graph
    inputs behind each value the glue computes."""
    inputs: frozenset = frozenset()
    nodes: frozenset = frozenset()
    sources: dict = field(default_factory=dict)


def state_prep(graph: Graph) -> StatePrep:
    outputs = {v.name for v in graph.outputs}
    uses: dict[str, list[tuple[Node, int]]] = {}
    for n in graph.nodes:
        for k, name in enumerate(n.inputs):
            if name:
                uses.setdefault(name, []).append((n, k))
    sources = {v.name: frozenset([v.name]) for v in graph.inputs}
    nodes = {}
    for n in graph.nodes:
        ins = [x for x in n.inputs if x and x not in graph.constants]
        if n.op not in RECURRENT and ins and all(x in sources for x in ins):
            src = frozenset().union(*(sources[x] for x in ins))
            nodes[n.name] = n
            for o in n.outputs:
                if o:
                    sources[o] = src
    def ok(value: str) -> bool:
        return value not in outputs and bool(uses.get(value)) and all(
            (c.op in RECURRENT and k >= 1) or c.name in nodes or _loop_state_slot(c, k)
            for c, k in uses[value])

    # the greatest set of glue nodes whose values only reach initial-state slots
    while True:
        drop = [name for name, n in nodes.items()
                if not all(ok(o) for o in n.outputs if o)
                or not all(x in graph.constants or ok(x) for x in n.inputs if x)]
        if not drop:
            break
        for name in drop:
            del nodes[name]
    kept = {o for n in nodes.values() for o in n.outputs if o}
    inputs = frozenset(v.name for v in graph.inputs if ok(v.name))
    return StatePrep(inputs, frozenset(nodes), {o: sources[o] for o in kept})


# Masked sequences (Keras Masking lifted into sequence_lens, converters/masks.py) stream
# when the graph carries a right-padding input check: per chunk, the mask's count over time is
# that chunk's lengths ("lengths"), the recurrent node then holds its state over the masked
# tail, and its final state ("held") may fill the masked steps of the output (Where).
_LAYOUT = frozenset({Op.CAST, Op.IDENTITY, Op.SQUEEZE, Op.UNSQUEEZE, Op.RESHAPE})


def _masked(graph: Graph) -> bool:
    from edgeseq import input_checks
    checks = graph.metadata.get(input_checks.KEY) or {}
    return any("right_padded" in str(c) for c in checks.values())


def _chunk_lengths(node, in_axes, vals) -> bool:
    """A ReduceSum of the mask over time (and size-1 axes) into one count per batch row."""
    if node.op is not Op.REDUCE_SUM or in_axes[0] is None or node.attrs["keepdims"]:
        return False
    shape = vals[0].shape
    r = len(shape)
    red = {x % r for x in node.attrs["axes"]}
    return in_axes[0] in red and all(shape[k] == 1 for k in red - {in_axes[0]}) \
        and r - len(red) == 1


def _propagate(graph: Graph, axes: dict[str, int | None]) -> dict[str, int | None]:
    static = {v.name: axes[v.name] is None for v in graph.inputs}
    tags: dict[str, str] = {}
    masked = _masked(graph)
    for name in graph.constants:
        axes[name], static[name] = None, True
    for node in graph.nodes:
        ins = [n for n in node.inputs]
        vals: list[Value | None] = [graph.value(n) if n else None for n in ins]
        in_axes = [axes.get(n) if n else None for n in ins]
        in_static = [static.get(n, True) if n else True for n in ins]
        in_tags = [tags.get(n) if n else None for n in ins]
        try:
            _need("lengths" not in in_tags or node.op in _LAYOUT or
                  (node.op in RECURRENT and in_tags.index("lengths") == 1),
                  "it uses the per-chunk count of a mask other than as sequence lengths")
        except NotStreamable as e:
            err = GraphError(f"cannot stream: node '{node.name}' ({node.op.value}): {e}")
            err.progress = graph.nodes.index(node)
            raise err from None
        if masked and _chunk_lengths(node, in_axes, vals):
            axes[node.outputs[0]], static[node.outputs[0]] = None, False
            tags[node.outputs[0]] = "lengths"
            continue
        if node.op in _LAYOUT and in_tags[0] == "lengths":
            axes[node.outputs[0]], static[node.outputs[0]] = None, False
            tags[node.outputs[0]] = "lengths"
            continue
        if node.op is Op.WHERE and in_tags[2] == "held" and in_axes[0] is not None:
            in_static[2] = True     # the held final state fills the masked (final) steps
        if node.op not in RECURRENT and all(a is None for a in in_axes):
            # NOTE: without a time axis a value is constant or a per-chunk final value (a
            # final state, the last step): any function of final values streams, since after
            # the last push it is the function of the whole run's final values
            outs = [None] * len(node.outputs)
            for o in node.outputs:
                static[o] = all(in_static)
        else:
            try:
                if node.op in RECURRENT:
                    # NOTE: static[1] None marks sequence lengths that are a chunk's mask count
                    outs = _RULES[node.op](node, in_axes, vals, [
                        None if k == 1 and t == "lengths" else s
                        for k, (s, t) in enumerate(zip(in_static, in_tags))])
                else:
                    present = [(a, v, s, graph.constants.get(n)) for a, v, s, n
                               in zip(in_axes, vals, in_static, ins) if v]
                    extra = {"consts": [p[3] for p in present]} if node.op in _NEEDS_CONSTS \
                        else {}
                    if node.op is Op.LOOP:
                        extra["graph"] = graph
                    outs = _RULES[node.op](node, [p[0] for p in present],
                                           [p[1] for p in present], [p[2] for p in present],
                                           **extra)
            except NotStreamable as e:
                err = GraphError(f"cannot stream: node '{node.name}' ({node.op.value}): {e}")
                err.progress = -1 if isinstance(e, WrongAxis) else graph.nodes.index(node)
                raise err from None
            for o, a in zip(node.outputs, outs):
                static[o] = False
            if node.op in RECURRENT and len(in_tags) > 1 and in_tags[1] == "lengths":
                for o in node.outputs[1:]:
                    tags[o] = "held"
        for o, a in zip(node.outputs, outs):
            if o:
                axes[o] = a
    return axes


def _loop_state_slot(node: Node, k: int) -> bool:
    """Input k of a general Loop is the initial value of a carried value its body rewrites
    (a state, when the Loop scans time: runtime/loop_stream.py)."""
    if node.op is not Op.LOOP or not 2 <= k < 2 + node.attrs["num_carried"]:
        return False
    body = node.attrs["body"]
    return body.outputs[k - 1].name != body.inputs[k].name


def _feed_state(node, ins: list, st: dict, given, sources: dict | None = None) -> None:
    """Use the carried state as the node's initial state, unless the caller passed that
    initial state explicitly as a graph input in this push (explicit wins; `sources`: the
    graph inputs behind a state computed by glue, see StatePrep)."""
    if node.op is Op.LOOP:
        from edgeseq.runtime.loop_stream import feed
        feed(node, ins, st, lambda name: name in given or bool(
            sources and any(x in given for x in sources.get(name, ()))))
        return
    bf = node.attrs["batch_first"]
    n_batch = ins[0].shape[0 if bf else 1]
    for k, slot in ((2, "h"), (3, "c")):
        if slot not in st:
            continue
        name = node.inputs[k] if k < len(node.inputs) else ""
        if name and (name in given or (sources and any(x in given
                                                       for x in sources.get(name, ())))):
            continue
        have = st[slot].shape[0 if bf else 1]
        if have != n_batch:
            raise InputError(f"stream: node '{node.name}' carries state for batch {have}, but "
                             f"this chunk has batch {n_batch}; call reset() to change batch")
        while len(ins) <= k:
            ins.append(None)
        ins[k] = st[slot]


# ---- spatial, selection, comparison ----------------------------------------------------------
_rule(*COMPARISON, Op.WHERE)(_binary)


def _window_rule(node, t: int, rank: int, kernel, strides, dilations, pads) -> None:
    """A sliding window streams along time only when it covers one step there."""
    k = len(kernel)
    lead = rank - k
    if t >= lead:
        j = t - lead
        _need(kernel[j] == 1 and strides[j] == 1 and dilations[j] == 1 and pads[j] == 0
              and pads[j + k] == 0,
              f"its window (size {kernel[j]}, stride {strides[j]}) spans several time steps")


@_rule(Op.CONV2D)
def _conv2d(node, axes, vals, static):
    t = _one_time_input(axes, static)
    _need(t != 1, "time runs along its channel axis")
    a = node.attrs
    _window_rule(node, t, 4, vals[1].shape[2:], a["strides"], a["dilations"], a["pads"])
    return [t]


@_rule(Op.MAX_POOL)
def _max_pool(node, axes, vals, static):
    from edgeseq.shapes import pool_params
    t = _one_time_input(axes, static)
    _need(not node.attrs["ceil_mode"], "ceil_mode adds a partial window at the end")
    _window_rule(node, t, len(vals[0].shape), *pool_params(node.attrs))
    return [t]


@_rule(Op.ARG_MAX, Op.ARG_MIN)
def _arg_extremum(node, axes, vals, static):
    t = _one_time_input(axes, static)
    ax = node.attrs["axis"] % len(vals[0].shape)
    _need(ax != t, "it reduces over the time axis")
    return [t if node.attrs["keepdims"] or t < ax else t - 1]


@_rule(Op.TILE)
def _tile(node, axes, vals, static):
    t = _one_time_input(axes, static)
    _need(node.attrs["repeats"][t] == 1, "it repeats along the time axis")
    return [t]


@_rule(Op.LOOP)
def _loop(node, axes, vals, static, consts=None, graph=None):
    # a Loop that scans time streams with its state carried (runtime/loop_stream.py)
    from edgeseq.runtime import loop_stream
    full_axes, full_static = [None] * len(node.inputs), [True] * len(node.inputs)
    for p, k in enumerate(k for k, n in enumerate(node.inputs) if n):
        full_axes[k], full_static[k] = axes[p], static[p]
    try:
        return loop_stream.analyse(graph, node, full_axes, full_static)
    except loop_stream.WrongTimeAxis as e:
        raise WrongAxis(str(e)) from None
    except loop_stream.NotAScan as e:
        raise NotStreamable(f"a general Loop streams only as a scan over time: {e}") from None
