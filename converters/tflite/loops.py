"""WHILE loops whose body is a recurrent cell (what Keras 3 writes for every LSTM/GRU, and
tf-keras for GRU, SimpleRNN, return_state and initial_state) become one LSTM/GRU/RNN node.

The carried values are classified by what the body does with them: a scalar it increments is
a counter, a [T, N, I] value it passes through and GATHERs at a counter is the input
sequence, a [T, N, H] value it rewrites is the output sequence, [N, S] values it rewrites are
the cell states, and everything else it passes through must be a constant. The cell itself is
matched and verified by `edgeseq.converters.loops` against this module's run of the loop
(`body.Subgraph`, float64).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeseq.ops import Op

from edgeseq.converters import loops
from edgeseq.converters.tflite import body as tfl_body
from edgeseq.converters.tflite import variables
from edgeseq.converters.tflite.context import Context, OpView, Unsupported, handler

_MAX_EXTRA_TRIPS = 2   # the probe loop stops this far past the sequence length (no hang)


@dataclass
class Carried:
    """The WHILE operands by role (indices into the operand list)."""
    counters: list[int]
    sequence: int
    index_of_x: int           # the counter the body GATHERs the sequence at
    outputs: list[int]
    states: list[int]
    passed: list[int]


def _sub_ops(ctx: Context, index: int) -> list[OpView]:
    # NOTE: lazy import: convert.py imports this module to register the handler
    from edgeseq.converters.tflite.convert import _ops
    return _ops(ctx.loaded, ctx.loaded.model.subgraphs[index])


def _subgraph_label(ctx: Context, index: int) -> str:
    name = ctx.loaded.model.subgraphs[index].name
    name = name.decode() if isinstance(name, bytes) else (name or "")
    return f"subgraph {index} '{name}'"


def _classify(ctx: Context, op: OpView, body: tfl_body.Subgraph) -> Carried:
    tensors = body.sub.tensors
    producer = {o: b for b in body.ops for o in b.outputs}
    counters, outputs, states, passed = [], [], [], []
    for k, (bi, bo) in enumerate(zip(body.inputs, body.outputs)):
        shape = tuple(int(d) for d in (tensors[bi].shape if tensors[bi].shape is not None else ()))
        p = producer.get(bo)
        if bo == bi:
            passed.append(k)
        elif not shape and p is not None and p.name == "ADD" and bi in p.inputs:
            counters.append(k)
        elif len(shape) == 3:
            outputs.append(k)
        elif len(shape) == 2:
            states.append(k)
        else:
            raise Unsupported(f"WHILE operand {k} (shape {shape}) is neither a counter, a "
                              f"sequence nor a [batch, units] state")
    seq = None
    for b in body.ops:
        if b.name == "GATHER" and b.inputs[0] in body.inputs:
            k = body.inputs.index(b.inputs[0])
            if k in passed and b.inputs[1] in body.inputs and \
                    body.inputs.index(b.inputs[1]) in counters:
                if seq is not None:
                    raise Unsupported("the WHILE body reads more than one sequence per step "
                                      "(a mask? masked loops are not lifted yet)")
                seq, x_counter = k, body.inputs.index(b.inputs[1])
    if seq is None:
        raise Unsupported("the WHILE body reads no input sequence at its step counter")
    passed.remove(seq)
    for k in passed:
        if not ctx.is_const(op.inputs[k]) and tensors[body.inputs[k]].type != 20:  # RESOURCE
            raise Unsupported(f"WHILE operand {k} '{ctx.tname(op.inputs[k])}' is a run-time "
                              f"value the body only reads (only the sequence may be)")
    if len(outputs) > 1:
        raise Unsupported(f"the WHILE loop writes {len(outputs)} sequences (one expected)")
    return Carried(counters, seq, x_counter, outputs, states, passed)


class _Loop:
    """The loop run in float64 by the body interpreter (for the probe and the matcher)."""

    def __init__(self, ctx: Context, op: OpView, cond, body, carried: Carried):
        self.op, self.cond, self.body, self.c = op, cond, body, carried
        self.start = []
        for k, idx in enumerate(op.inputs):
            val = ctx.real(idx) if ctx.is_const(idx) else None
            self.start.append(None if val is None else np.asarray(val))
        bt = body.sub.tensors
        self.shapes = [tuple(int(d) for d in bt[i].shape) for i in body.inputs]

    def feeds(self, xs: np.ndarray, states: list) -> list:
        vals = list(self.start)
        vals[self.c.sequence] = xs
        for k, s in zip(self.c.states, states):
            vals[k] = s
        for k in self.c.outputs:   # a sequence buffer, or a [1, N, H] last-step buffer
            t = xs.shape[0] if self.shapes[k][0] != 1 else 1
            vals[k] = np.zeros((t,) + self.shapes[k][1:])
        return vals

    def __call__(self, xs: np.ndarray, states: list):
        vals = self.feeds(xs, states)
        for _ in range(xs.shape[0] + _MAX_EXTRA_TRIPS):
            env = self.cond.run(vals)
            if not bool(np.asarray(env[self.cond.outputs[0]]).reshape(-1)[0]):
                break
            env = self.body.run(vals)
            vals = [env[o] for o in self.body.outputs]
        else:
            raise loops.NoMatch("the loop did not stop after the sequence length")
        y = vals[self.c.outputs[0]] if self.c.outputs else None
        return y, [vals[k] for k in self.c.states]

    def step(self) -> loops.Step:
        c, body = self.c, self.body
        gather = next(b for b in body.ops if b.name == "GATHER" and
                      b.inputs[0] == body.inputs[c.sequence])
        n_batch, n_input = self.shapes[c.sequence][1:]

        def run(x, states, overrides):
            vals = self.feeds(x[None], states)
            for k in c.counters:
                vals[k] = np.zeros((), np.int32)
            return body.run(vals, overrides)

        ops = [loops.BodyOp(b.name, tuple(b.inputs), tuple(b.outputs)) for b in body.ops]
        out_key = None
        return loops.Step(run, ops, gather.outputs[0], [body.inputs[k] for k in c.states],
                          [body.outputs[k] for k in c.states], out_key, n_batch, n_input,
                          [self.shapes[k][1] for k in c.states])


@handler("WHILE")
def while_(ctx: Context, op: OpView) -> None:
    cond_i, body_i = int(op.option("condSubgraphIndex")), int(op.option("bodySubgraphIndex"))
    where = f"body {_subgraph_label(ctx, body_i)}"
    try:
        cond = tfl_body.Subgraph(ctx.loaded, cond_i, _sub_ops(ctx, cond_i))
        body = tfl_body.Subgraph(ctx.loaded, body_i, _sub_ops(ctx, body_i))
    except tfl_body.BodyError as e:
        raise Unsupported(f"the loop ({where}) uses {e}, which the loop lifter does not "
                          f"run") from None
    carried = _classify(ctx, op, body)
    loop = _Loop(ctx, op, cond, body, carried)
    t_len = loop.shapes[carried.sequence][0]
    try:
        lifted = loops.lift(loop.step(), loop, t_len)
    except loops.NoMatch as e:
        raise Unsupported(f"the loop's {where} is not a recurrent cell edgeseq recognises "
                          f"({e})") from None
    _emit(ctx, op, carried, lifted.candidate, t_len)
    _note_variable_states(ctx, op, carried)
    ctx.notes.append(f"{op.label}: loop lifted into {lifted.candidate.label} (verified on a "
                     f"probe: {lifted.error:.1g} off)")


def _note_variable_states(ctx: Context, op: OpView, c: Carried) -> None:
    """A stateful layer's states read from variables: its final states may be assigned back
    (variables.py checks each ASSIGN_VARIABLE against this)."""
    st = variables.state(ctx)
    for k, idx in enumerate(op.inputs):
        var = st["reads"].get(idx)
        if var is None:
            continue
        if k not in c.states:
            raise Unsupported(f"WHILE operand {k} reads variable '{var}' but is not a state")
        st["finals"][op.outputs[k]] = var


def _emit(ctx: Context, op: OpView, c: Carried, cand: loops.Candidate, t_len: int) -> None:
    base = ctx.tmp(cand.op.value.lower())
    weights = {slot: ctx.constant(f"{base}.{slot}", np.asarray(w, np.float32)[None])
               for slot, w in cand.weights.items()}
    inits = [""] * 2
    order = [cand.h_index] + ([cand.c_index] if cand.c_index is not None else [])
    for j, k in enumerate(order):
        idx = op.inputs[c.states[k]]
        val = ctx.real(idx) if ctx.is_const(idx) else None
        if val is not None and not np.any(val):
            continue          # zero initial state: the node's default
        u = ctx.tmp(f"init{j}")
        ctx.emit(Op.UNSQUEEZE, [ctx.value(idx)], [u], axes=(0,))
        inits[j] = u
    n_states = len(order)
    y, yh, yc = ctx.tmp("y"), ctx.tmp("y_h"), ctx.tmp("y_c")
    outs = [y, yh] + ([yc] if cand.op == Op.LSTM else [])
    ins = [ctx.value(op.inputs[c.sequence]), ""] + inits[:n_states]
    while ins[-1] == "":
        ins.pop()
    ctx.emit(cand.op, ins, outs, weights, **cand.attrs)
    for k in c.outputs:
        if ctx.shape(op.outputs[k])[0] == t_len:
            ctx.emit(Op.SQUEEZE, [y], [ctx.out(op.outputs[k])], axes=(1,))
        else:   # the last step only: y_h is that step's output, [1, N, H]
            ctx.emit(Op.IDENTITY, [yh], [ctx.out(op.outputs[k])])
    from edgeseq.converters.tflite.convert import _ops
    read = {i for o in _ops(ctx.loaded, ctx.sub) if o.name != "ASSIGN_VARIABLE"
            for i in o.inputs}     # a variable write is the stream's carried state
    read |= {int(i) for i in (ctx.sub.outputs if ctx.sub.outputs is not None else [])}
    for k, src in zip(order, outs[1:]):
        # NOTE: only final states something reads: an unread Squeeze of y_h has no time axis
        # and would stop the graph from streaming
        if op.outputs[c.states[k]] in read:
            ctx.emit(Op.SQUEEZE, [src], [ctx.out(op.outputs[c.states[k]])], axes=(0,))
    for k in c.passed + [c.sequence]:
        ctx.names[op.outputs[k]] = ctx.value(op.inputs[k]) if ctx.is_const(op.inputs[k]) or \
            op.inputs[k] in ctx.names else ctx.names.get(op.inputs[k], "")
    for k in c.counters:
        start = ctx.real(op.inputs[k]) if ctx.is_const(op.inputs[k]) else None
        if start is not None:
            ctx.fold(op.outputs[k], np.asarray(np.asarray(start) + t_len, np.int32))
