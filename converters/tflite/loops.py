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

from edgeseq.converters import loops, loops_conv, masks
from edgeseq.converters.tflite import body as tfl_body
from edgeseq.converters.tflite import conv_body  # noqa: F401  (registers CONV_2D)
from edgeseq.converters.tflite import general_loop
from edgeseq.converters.tflite import masks as _masks  # noqa: F401  (registers mask ops)
from edgeseq.converters.tflite import variables
from edgeseq.converters.tflite.context import Context, OpView, Unsupported, handler

_BOOL = 6              # TFLite TensorType BOOL
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
    mask: int | None = None   # a [T, N, 1] bool sequence (Keras Masking) read at the counter
    aliases: dict = None      # masked loops: state -> the state it copies (the last output)


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
    # a sequence is [T, N, I] (or [T, N, *L, C] for ConvLSTM feature maps), its output buffer
    # has the same rank and a state one less
    rank = max((len(tensors[b.inputs[0]].shape) for b in body.ops if b.name == "GATHER" and
                b.inputs[0] in body.inputs and tensors[b.inputs[0]].type != _BOOL), default=3)
    counters, outputs, states, passed = [], [], [], []
    for k, (bi, bo) in enumerate(zip(body.inputs, body.outputs)):
        shape = tuple(int(d) for d in (tensors[bi].shape if tensors[bi].shape is not None else ()))
        p = producer.get(bo)
        if bo == bi:
            passed.append(k)
        elif not shape and p is not None and p.name == "ADD" and bi in p.inputs:
            counters.append(k)
        elif len(shape) == rank:
            outputs.append(k)
        elif len(shape) == rank - 1 and len(shape) >= 2:
            states.append(k)
        else:
            raise Unsupported(f"WHILE operand {k} (shape {shape}) is neither a counter, a "
                              f"sequence nor a [batch, units] state")
    seq = mask = None
    for b in body.ops:
        if b.name == "GATHER" and b.inputs[0] in body.inputs:
            k = body.inputs.index(b.inputs[0])
            if k in passed and b.inputs[1] in body.inputs and \
                    body.inputs.index(b.inputs[1]) in counters:
                if tensors[b.inputs[0]].type == _BOOL and mask is None:
                    shape = tuple(int(d) for d in tensors[b.inputs[0]].shape)
                    if len(shape) != 3 or shape[2] != 1:
                        raise Unsupported(f"the WHILE body reads a boolean sequence of shape "
                                          f"{shape} (a Keras mask is [T, N, 1])")
                    mask = k
                    continue
                if seq is not None:
                    raise Unsupported("the WHILE body reads more than one sequence per step "
                                      "(a mask? masked loops are not lifted yet)")
                seq, x_counter = k, body.inputs.index(b.inputs[1])
    if seq is None:
        raise Unsupported("the WHILE body reads no input sequence at its step counter")
    passed.remove(seq)
    if mask is not None:
        passed.remove(mask)
    for k in passed:
        if not ctx.is_const(op.inputs[k]) and tensors[body.inputs[k]].type != 20:  # RESOURCE
            raise Unsupported(f"WHILE operand {k} '{ctx.tname(op.inputs[k])}' is a run-time "
                              f"value the body only reads (only the sequence may be)")
    if len(outputs) > 1:
        raise Unsupported(f"the WHILE loop writes {len(outputs)} sequences (one expected)")
    return Carried(counters, seq, x_counter, outputs, states, passed, mask)


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

    def feeds(self, xs: np.ndarray, states: list, mask: np.ndarray | None = None) -> list:
        vals = list(self.start)
        # feature maps come flattened ([T, N, I], [N, S]: loops.Step) and go back in shape
        vals[self.c.sequence] = xs.reshape(xs.shape[:2] + self.shapes[self.c.sequence][2:])
        if self.c.mask is not None:   # the cell is matched with every step unmasked
            vals[self.c.mask] = np.ones(xs.shape[:2] + (1,), bool) if mask is None else mask
        for k, s in zip(self.c.states, states):
            vals[k] = s.reshape(s.shape[:1] + self.shapes[k][1:])
        for k, j in (self.c.aliases or {}).items():   # Keras starts the carry at zeros
            vals[k] = self.start[k] if self.start[k] is not None else vals[j]
        for k in self.c.outputs:   # a sequence buffer, or a [1, N, H] last-step buffer
            t = xs.shape[0] if self.shapes[k][0] != 1 else 1
            vals[k] = np.zeros((t,) + self.shapes[k][1:])
        return vals

    def __call__(self, xs: np.ndarray, states: list, mask: np.ndarray | None = None):
        vals = self.feeds(xs, states, mask)
        for _ in range(xs.shape[0] + _MAX_EXTRA_TRIPS):
            env = self.cond.run(vals)
            if not bool(np.asarray(env[self.cond.outputs[0]]).reshape(-1)[0]):
                break
            env = self.body.run(vals)
            vals = [env[o] for o in self.body.outputs]
        else:
            raise loops.NoMatch("the loop did not stop after the sequence length")
        y = vals[self.c.outputs[0]] if self.c.outputs else None
        y = y.reshape(y.shape[:2] + (-1,)) if y is not None else None
        return y, [vals[k].reshape(vals[k].shape[0], -1) for k in self.c.states]

    def drop_output_carry(self) -> None:
        """Set the loop's last-output carry apart from the cell's states (masks.py)."""
        c, body = self.c, self.body
        rng = np.random.default_rng(1)
        xs = rng.standard_normal((1,) + tuple(self.shapes[c.sequence][1:]))
        vals = self.feeds(xs, [rng.standard_normal(self.shapes[k]) for k in c.states])
        for k in c.counters:
            vals[k] = np.zeros((), np.int32)
        env = body.run(vals)
        c.aliases = masks.output_carries(
            {k: env[body.outputs[k]] for k in c.states},
            {k: {b.name for b in body.ops if body.inputs[k] in b.inputs} for k in c.states})
        c.states = [k for k in c.states if k not in c.aliases]

    def step(self) -> loops.Step:
        c, body = self.c, self.body
        gather = next(b for b in body.ops if b.name == "GATHER" and
                      b.inputs[0] == body.inputs[c.sequence])
        n_batch = self.shapes[c.sequence][1]
        n_input = int(np.prod(self.shapes[c.sequence][2:]))

        def run(x, states, overrides):
            vals = self.feeds(x[None], states)
            for k in c.counters:
                vals[k] = np.zeros((), np.int32)
            return body.run(vals, overrides)

        ops = [loops.BodyOp(b.name, tuple(b.inputs), tuple(b.outputs), _op_attrs(body, b))
               for b in body.ops]
        out_key = None
        maps = len(self.shapes[c.sequence]) > 3
        return loops.Step(run, ops, gather.outputs[0], [body.inputs[k] for k in c.states],
                          [body.outputs[k] for k in c.states], out_key, n_batch, n_input,
                          [int(np.prod(self.shapes[k][1:])) for k in c.states],
                          self.shapes[c.sequence][1:] if maps else None,
                          [self.shapes[k] for k in c.states] if maps else None)


def _op_attrs(body: tfl_body.Subgraph, b) -> dict:
    """Options a cell pattern reads (converters/loops_conv.py): a CONV_2D's geometry."""
    if b.name != "CONV_2D":
        return {}
    t = body.sub.tensors
    try:
        geo = conv_body.conv2d_geometry(b, tuple(int(d) for d in t[b.inputs[1]].shape[1:3]),
                                        tuple(int(d) for d in t[b.inputs[0]].shape[1:3]))
    except (tfl_body.BodyError, TypeError, IndexError):   # the pattern then reports no match
        return {}
    return {"layout": "OHWI", "padding": geo["padding"], "strides": geo["strides"],
            "dilations": geo["dilations"]}


@handler("WHILE")
def while_(ctx: Context, op: OpView) -> None:
    cond_i, body_i = int(op.option("condSubgraphIndex")), int(op.option("bodySubgraphIndex"))
    saved = (len(ctx.nodes), dict(ctx.names), dict(ctx.folded), dict(ctx.constants),
             list(getattr(ctx, "input_checks", [])), len(ctx.notes))
    try:
        _lift_while(ctx, op, cond_i, body_i)
    except Unsupported as e:     # no known cell: the body runs as it is (general_loop.py)
        del ctx.nodes[saved[0]:]
        ctx.names, ctx.folded, ctx.constants = saved[1], saved[2], saved[3]
        if hasattr(ctx, "input_checks"):
            ctx.input_checks = saved[4]
        del ctx.notes[saved[5]:]
        general_loop.emit(ctx, op, cond_i, body_i, str(e))


def _lift_while(ctx: Context, op: OpView, cond_i: int, body_i: int) -> None:
    where = f"body {_subgraph_label(ctx, body_i)}"
    try:
        cond = tfl_body.Subgraph(ctx.loaded, cond_i, _sub_ops(ctx, cond_i))
        body = tfl_body.Subgraph(ctx.loaded, body_i, _sub_ops(ctx, body_i))
    except tfl_body.BodyError as e:
        raise Unsupported(f"the loop ({where}) uses {e}, which the loop lifter does not "
                          f"run") from None
    carried = _classify(ctx, op, body)
    loop = _Loop(ctx, op, cond, body, carried)
    if carried.mask is not None:
        loop.drop_output_carry()
    t_len = loop.shapes[carried.sequence][0]
    try:
        lifted = loops.lift(loop.step(), loop, t_len)
    except loops.NoMatch as e:
        raise Unsupported(f"the loop's {where} is not a recurrent cell edgeseq recognises "
                          f"({e})") from None
    if carried.mask is not None:
        _verify_masked(op, loop, lifted.candidate, t_len)
    _emit(ctx, op, carried, lifted.candidate, t_len)
    _note_variable_states(ctx, op, carried)
    ctx.notes.append(f"{op.label}: loop lifted into {lifted.candidate.label} (verified on a "
                     f"probe: {lifted.error:.1g} off)")


def _verify_masked(op: OpView, loop: _Loop, cand: loops.Candidate, t_len: int) -> None:
    """The lifted node with sequence_lens and Keras' output glue must reproduce the masked
    loop on a right-padded probe."""
    try:
        err = masks.verify(cand, loop, t_len, loop.shapes[loop.c.sequence][1:],
                           [loop.shapes[k][1] for k in loop.c.states])
    except loops.NoMatch as e:
        raise Unsupported(f"the masked loop: {e}") from None
    if err > loops.TOLERANCE:
        raise Unsupported(f"the masked loop is not reproduced by {cand.label} with sequence "
                          f"lengths on a right-padded probe ({err:.2g} off)")


def _mask_source(ctx: Context, op: OpView, idx: int) -> tuple[str, float]:
    """(graph input, mask value) of a Keras mask any(x != value, axis=-1) reaching the loop
    through layout ops, or Unsupported: only then can the input be checked for right padding."""
    from edgeseq.converters.tflite.convert import _ops
    producer = {o: b for b in _ops(ctx.loaded, ctx.sub) for o in b.outputs}
    p = producer.get(idx)
    while p is not None and p.name in ("RESHAPE", "TRANSPOSE", "EXPAND_DIMS", "SQUEEZE"):
        p = producer.get(p.inputs[0])
    ne = producer.get(p.inputs[0]) if p is not None and p.name == "REDUCE_ANY" else None
    graph_inputs = {int(i) for i in (ctx.sub.inputs if ctx.sub.inputs is not None else [])}
    if ne is None or ne.name != "NOT_EQUAL" or ne.inputs[0] not in graph_inputs or \
            not ctx.is_const(ne.inputs[1]) or np.size(ctx.real(ne.inputs[1])) != 1 or \
            ctx.ints(p.inputs[1], "REDUCE_ANY axis")[-1] % 3 != 2 or \
            len(ctx.shape(ne.inputs[0])) != 3:
        raise Unsupported(f"{op.label}: the loop's mask is not any(x != value, axis=-1) of a "
                          f"[batch, time, features] graph input, so edgeseq cannot check that "
                          f"it is a right padding (the only mask it maps to sequence lengths)")
    return ctx.value(ne.inputs[0]), float(np.asarray(ctx.real(ne.inputs[1])).reshape(-1)[0])


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


def _maps(ctx: Context, cand: loops.Candidate, name: str, lead: int, to_last: bool = False,
          out: str | None = None) -> str:
    """A ConvLSTM's feature map between the loop's channels-last and the node's channels-first
    layout (other cells: `name` itself, or copied to `out`)."""
    if cand.op != Op.CONV_LSTM:
        if out is not None:
            ctx.emit(Op.IDENTITY, [name], [out])
        return out or name
    rank = lead + 1 + cand.weights["w_x"].ndim - 2      # w_x [4H, C, *K]
    t = out or ctx.tmp("maps")
    ctx.emit(Op.TRANSPOSE, [name], [t], perm=loops_conv.channels_perm(rank, lead, to_last))
    return t


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
        ctx.emit(Op.UNSQUEEZE, [_maps(ctx, cand, ctx.value(idx), 1)], [u], axes=(0,))
        inits[j] = u
    n_states = len(order)
    y, yh, yc = ctx.tmp("y"), ctx.tmp("y_h"), ctx.tmp("y_c")
    outs = [y, yh] + ([yc] if cand.op == Op.LSTM else [])
    lens = ""
    if c.mask is not None:
        x_in, mask_value = _mask_source(ctx, op, op.inputs[c.mask])
        lens = masks.emit_lengths(ctx.emit, ctx.tmp, ctx.value(op.inputs[c.mask]))
        if not hasattr(ctx, "input_checks"):
            ctx.input_checks = []
        ctx.input_checks.append((x_in, f"right_padded:{mask_value!r}@1"))
    ins = [_maps(ctx, cand, ctx.value(op.inputs[c.sequence]), 2), lens] + inits[:n_states]
    while ins[-1] == "":
        ins.pop()
    ctx.emit(cand.op, ins, outs, weights, **cand.attrs)
    for k in c.outputs:
        if ctx.shape(op.outputs[k])[0] == t_len and c.mask is not None:
            y_sq = ctx.tmp("y_seq")
            ctx.emit(Op.SQUEEZE, [y], [y_sq], axes=(1,))
            masks.emit_keras_outputs(ctx.emit, ctx.value(op.inputs[c.mask]), y_sq, yh,
                                     ctx.out(op.outputs[k]))
        elif ctx.shape(op.outputs[k])[0] == t_len and cand.op == Op.CONV_LSTM:
            y_sq = ctx.tmp("y_seq")
            ctx.emit(Op.SQUEEZE, [y], [y_sq], axes=(1,))
            _maps(ctx, cand, y_sq, 2, True, ctx.out(op.outputs[k]))
        elif ctx.shape(op.outputs[k])[0] == t_len:
            ctx.emit(Op.SQUEEZE, [y], [ctx.out(op.outputs[k])], axes=(1,))
        else:   # the last step only: y_h is that step's output, [1, N, H]
            _maps(ctx, cand, yh, 2, True, ctx.out(op.outputs[k]))
    from edgeseq.converters.tflite.convert import _ops
    read = {i for o in _ops(ctx.loaded, ctx.sub) if o.name != "ASSIGN_VARIABLE"
            for i in o.inputs}     # a variable write is the stream's carried state
    read |= {int(i) for i in (ctx.sub.outputs if ctx.sub.outputs is not None else [])}
    for k, j in (c.aliases or {}).items():   # the carried last output: h at the length
        if op.outputs[k] in read:
            ctx.emit(Op.SQUEEZE, [yh], [ctx.out(op.outputs[k])], axes=(0,))
    for k, src in zip(order, outs[1:]):
        # NOTE: only final states something reads: an unread Squeeze of y_h has no time axis
        # and would stop the graph from streaming
        if op.outputs[c.states[k]] in read and cand.op == Op.CONV_LSTM:
            s_sq = ctx.tmp("state")
            ctx.emit(Op.SQUEEZE, [src], [s_sq], axes=(0,))
            _maps(ctx, cand, s_sq, 1, True, ctx.out(op.outputs[c.states[k]]))
        elif op.outputs[c.states[k]] in read:
            ctx.emit(Op.SQUEEZE, [src], [ctx.out(op.outputs[c.states[k]])], axes=(0,))
    for k in c.passed + [c.sequence]:
        ctx.names[op.outputs[k]] = ctx.value(op.inputs[k]) if ctx.is_const(op.inputs[k]) or \
            op.inputs[k] in ctx.names else ctx.names.get(op.inputs[k], "")
    for k in c.counters:
        start = ctx.real(op.inputs[k]) if ctx.is_const(op.inputs[k]) else None
        if start is not None:
            ctx.fold(op.outputs[k], np.asarray(np.asarray(start) + t_len, np.int32))
