"""ONNX `Loop` nodes whose body is a recurrent cell (what tf2onnx writes for Keras 3 LSTM/GRU
and for tf-keras GRU(reset_after=False) and SimpleRNN) become one LSTM/GRU/RNN node; a
`ReverseSequence` over whole sequences (Keras' backward layers) becomes a reversing Slice.

Carried values are classified by what the body does with them (see tflite/loops.py): a scalar
it increments is a counter, [N, S] values it rewrites are states, values it passes through
must be constants; the input sequence is an outer-scope value the body Gathers at a counter,
and the per-step output is a scan output. The body is run by onnx's reference evaluator on a
float64 copy, and the cell is matched and verified by `edgeseq.converters.loops`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeseq.ops import Op

from edgeseq.converters import loops, loops_conv, masks
from edgeseq.converters.onnx.context import Context, Unsupported
from edgeseq.converters.onnx.registry import handler

_MAX_EXTRA_TRIPS = 2

# ONNX op -> the normalised kind the cell patterns read (TFLite spelling)
_KINDS = {"Add": "ADD", "Mul": "MUL", "Sub": "SUB", "Split": "SPLIT", "Sigmoid": "LOGISTIC",
          "Tanh": "TANH", "Relu": "RELU", "Reshape": "RESHAPE", "Identity": "IDENTITY",
          "Gather": "GATHER", "MatMul": "MATMUL", "Gemm": "GEMM", "Squeeze": "RESHAPE",
          "Unsqueeze": "RESHAPE"}


@dataclass
class Carried:
    """Loop operands by role: indices k into the carried values (Loop input 2 + k)."""
    counters: list[int]
    states: list[int]
    passed: list[int]
    sequence: str                # outer-scope name of the input sequence
    index_key: str               # body value the sequence is gathered at
    scans: list[int]             # indices of the body's scan outputs
    mask: str | None = None      # outer-scope [T, N, 1] bool sequence (Keras Masking)
    aliases: dict | None = None  # masked loops: state -> the state it copies (the last output)


def _as_float64(g: onnx.GraphProto) -> onnx.GraphProto:
    """A copy of the body computing in float64 (the probe must not see float32 rounding)."""
    g = onnx.GraphProto.FromString(g.SerializeToString())
    for t in g.initializer:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64),
                                               t.name))
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(
                    np.float64), a.t.name))
            if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.DOUBLE
    for vi in list(g.input) + list(g.output):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    del g.value_info[:]
    return g


class _Body:
    """The body as a standalone float64 model (outer-scope values become inputs), run by
    onnx.reference; an override turns the overridden value into an input."""

    def __init__(self, ctx: Context, node: onnx.NodeProto, graph: onnx.GraphProto):
        self.graph = _as_float64(graph)
        self.opset = ctx.opsets.get("", 13)
        defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
        defined |= {o for n in graph.node for o in n.output}
        used = {i for n in graph.node for i in n.input if i}
        used |= {o.name for o in graph.output}
        self.outer = sorted(used - defined)
        self.inputs = [i.name for i in graph.input]
        self.outputs = [o.name for o in graph.output]
        self.ops = [loops.BodyOp(_KINDS.get(n.op_type, n.op_type.upper()), _operands(n),
                                 tuple(n.output), _conv_attrs(n)) for n in graph.node]
        self._sessions: dict = {}

    def _session(self, over: frozenset):
        if over not in self._sessions:
            from onnx.reference import ReferenceEvaluator
            g = onnx.GraphProto.FromString(self.graph.SerializeToString())
            for n in g.node:
                for k, o in enumerate(n.output):
                    if o in over:
                        n.output[k] = o + "__overridden"
            ins = [helper.make_tensor_value_info(n, TensorProto.UNDEFINED, None)
                   for n in self.outer + sorted(over)]
            g.input.extend(ins)
            model = helper.make_model(g, opset_imports=[helper.make_opsetid("", self.opset)])
            self._sessions[over] = ReferenceEvaluator(model)
        return self._sessions[over]

    def run(self, feeds: dict, overrides: dict | None = None) -> dict:
        overrides = overrides or {}
        sess = self._session(frozenset(overrides))
        env = sess.run(None, {**feeds, **overrides}, intermediate=True)
        env = dict(env)
        env.update(feeds)
        env.update(overrides)
        return env


def _conv_attrs(n: onnx.NodeProto) -> dict:
    """A Conv's geometry for the ConvLSTM cell pattern (converters/loops_conv.py)."""
    if n.op_type != "Conv":
        return {}
    a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    out = {"layout": "OI...", "strides": tuple(a.get("strides", ())),
           "dilations": tuple(a.get("dilations", ())), "group": int(a.get("group", 1))}
    if auto in ("SAME_UPPER", "SAME_LOWER", "VALID"):
        out["padding"] = "SAME" if auto == "SAME_UPPER" else auto
    else:
        out["pads"] = tuple(a.get("pads", ()))
    return out


def _operands(n: onnx.NodeProto) -> tuple:
    """Operands in the TFLite order the cell patterns read (SPLIT: axis, then data)."""
    if n.op_type == "Split":
        return ("<axis>", n.input[0])
    return tuple(i for i in n.input if i)


def _shape(ctx: Context, vi: onnx.ValueInfoProto) -> tuple | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)


def _classify(ctx: Context, node: onnx.NodeProto, body: _Body, graph) -> Carried:
    n_carried = len(node.input) - 2
    producer = {o: n for n in graph.node for o in n.output}
    counters, states, passed = [], [], []
    for k in range(n_carried):
        bi, bo = body.inputs[2 + k], body.outputs[1 + k]
        p = producer.get(bo)
        val = ctx.const(node.input[2 + k])
        shape = np.shape(val) if val is not None else ctx.shape(node.input[2 + k])
        if bo == bi:
            passed.append(k)
        elif p is not None and p.op_type == "Add" and bi in p.input and (
                shape is None or len(shape) == 0 or tuple(shape) == (1,)):
            counters.append(k)
        elif shape is not None and len(shape) >= 2:    # [N, S], or a feature map [N, *L, F]
            states.append(k)
        else:
            raise Unsupported(f"Loop carried value {k} '{node.input[2 + k]}' (shape {shape}) is "
                              f"neither a counter, a constant nor a [batch, units] state")
    for k in passed:
        if ctx.const(node.input[2 + k]) is None:
            raise Unsupported(f"Loop carried value {k} '{node.input[2 + k]}' is a run-time "
                              f"value the body only reads (only the input sequence may be)")
    counter_keys = {body.inputs[0]} | {body.inputs[2 + k] for k in counters}
    seq = mask = None
    for n in graph.node:
        if n.op_type == "Gather" and n.input[0] in body.outer and n.input[1] in counter_keys:
            if ctx.dtype(n.input[0]) == "bool" and mask in (None, n.input[0]):
                shape = ctx.shape(n.input[0])
                if shape is None or len(shape) != 3 or shape[2] != 1:
                    raise Unsupported(f"the Loop body reads a boolean sequence "
                                      f"'{n.input[0]}' of shape {shape} (a Keras mask is "
                                      f"[T, N, 1])")
                mask = n.input[0]
                continue
            if seq is not None and seq[0] != n.input[0]:
                raise Unsupported("the Loop body reads more than one sequence per step (a mask? "
                                  "masked loops are not lifted yet)")
            seq = (n.input[0], n.input[1], n.output[0])
    if seq is None:
        raise Unsupported("the Loop body reads no input sequence at its step counter")
    scans = list(range(1 + n_carried, len(body.outputs)))
    if len(scans) > 1:
        raise Unsupported(f"the Loop writes {len(scans)} sequences (one expected)")
    c = Carried(counters, states, passed, seq[0], seq[1], scans, mask)
    c.gather_out = seq[2]
    return c


class _Loop:
    def __init__(self, ctx: Context, node: onnx.NodeProto, body: _Body, c: Carried):
        self.body, self.c = body, c
        n_carried = len(node.input) - 2
        self.start = [ctx.const(node.input[2 + k]) for k in range(n_carried)]
        self.trip = ctx.const(node.input[0]) if node.input[0] else None
        self.cond0 = ctx.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
        self.outer = {n: ctx.const(n) for n in body.outer if n not in (c.sequence, c.mask)}
        missing = [n for n, v in self.outer.items() if v is None]
        if missing:
            raise Unsupported(f"the Loop body reads run-time values {missing} other than the "
                              f"input sequence")

    maps = None     # (x_t shape, state shapes) when they are feature maps (see _lift)

    def _feeds(self, xs, states, k_iter, cond, vals, mask=None):
        feeds = {self.body.inputs[0]: np.asarray(k_iter, np.int64),
                 self.body.inputs[1]: np.asarray(cond, np.bool_)}
        for k, v in enumerate(vals):
            feeds[self.body.inputs[2 + k]] = np.asarray(v, np.float64) \
                if np.asarray(v).dtype.kind == "f" else np.asarray(v)
        feeds.update({n: np.asarray(v, np.float64) if np.asarray(v).dtype.kind == "f" else v
                      for n, v in self.outer.items()})
        feeds[self.c.sequence] = xs if self.maps is None else \
            xs.reshape(xs.shape[:1] + self.maps[0])
        if self.c.mask is not None:   # the cell is matched with every step unmasked
            feeds[self.c.mask] = np.ones(xs.shape[:2] + (1,), bool) if mask is None else mask
        return feeds

    def _start(self, states):
        vals = list(self.start)
        for j, (k, s) in enumerate(zip(self.c.states, states)):
            vals[k] = s if self.maps is None else s.reshape(self.maps[1][j])
        for k, j in (self.c.aliases or {}).items():   # Keras starts the carry at zeros
            vals[k] = self.start[k] if self.start[k] is not None else vals[j]
        return vals

    def drop_output_carry(self, n_batch: int, n_input: int, sizes: list[int]) -> list[int]:
        """Set the loop's last-output carry apart from the cell's states (masks.py); returns
        the sizes of the states left."""
        rng = np.random.default_rng(1)
        init = [rng.standard_normal((n_batch, s)) for s in sizes]
        vals = self._start(init)
        for k in self.c.counters:
            vals[k] = np.zeros_like(np.asarray(vals[k]))
        xs = rng.standard_normal((1, n_batch, n_input))
        env = self.body.run(self._feeds(xs, init, 0, True, vals))
        b = self.body
        self.c.aliases = masks.output_carries(
            {k: env[b.outputs[1 + k]] for k in self.c.states},
            {k: {op.kind for op in b.ops if b.inputs[2 + k] in op.inputs}
             for k in self.c.states})
        keep = [j for j, k in enumerate(self.c.states) if k not in self.c.aliases]
        self.c.states = [self.c.states[j] for j in keep]
        return [sizes[j] for j in keep]

    def __call__(self, xs, states, mask=None):
        vals = self._start(states)
        cond = True if self.cond0 is None else bool(np.ravel(self.cond0)[0])
        trip = xs.shape[0] + _MAX_EXTRA_TRIPS if self.trip is None else int(np.ravel(self.trip)[0])
        ys = []
        k = 0
        while cond and k < trip:
            if k > xs.shape[0] + _MAX_EXTRA_TRIPS:
                raise loops.NoMatch("the loop did not stop after the sequence length")
            env = self.body.run(self._feeds(xs, states, k, cond, vals, mask))
            cond = bool(np.ravel(env[self.body.outputs[0]])[0])
            vals = [env[self.body.outputs[1 + j]] for j in range(len(vals))]
            for s in self.c.scans:
                ys.append(env[self.body.outputs[s]])
            k += 1
        y = np.stack(ys) if ys else None
        if self.maps is not None:
            y = None if y is None else y.reshape(y.shape[:2] + (-1,))
            return y, [vals[k].reshape(vals[k].shape[0], -1) for k in self.c.states]
        return y, [vals[k] for k in self.c.states]

    def step(self, n_batch: int, n_input: int, sizes: list[int]) -> loops.Step:
        def run(x, states, overrides):
            vals = self._start(states)
            for k in self.c.counters:
                vals[k] = np.zeros_like(np.asarray(vals[k]))
            return self.body.run(self._feeds(x[None], states, 0, True, vals), overrides)
        b = self.body
        return loops.Step(run, b.ops, self.c.gather_out, [b.inputs[2 + k] for k in self.c.states],
                          [b.outputs[1 + k] for k in self.c.states], None, n_batch, n_input,
                          sizes, *(self.maps or (None, None)))


@handler("Loop", since=1)
def loop(ctx: Context, node: onnx.NodeProto) -> None:
    n_before = len(ctx.nodes)
    try:
        _lift(ctx, node)
    except Unsupported as e:     # no known cell: the body runs as it is (general_loop.py)
        from edgeseq.converters.onnx.general_loop import emit_general_loop
        del ctx.nodes[n_before:]
        emit_general_loop(ctx, node, str(e))


def _lift(ctx: Context, node: onnx.NodeProto) -> None:
    graph = next(a.g for a in node.attribute if a.name == "body")
    body = _Body(ctx, node, graph)
    c = _classify(ctx, node, body, graph)
    seq_shape = ctx.shape(c.sequence)
    if seq_shape is None or len(seq_shape) < 3 or not all(isinstance(d, int) for d in seq_shape):
        raise Unsupported(f"the Loop's input sequence '{c.sequence}' needs a known [T, N, I] "
                          f"shape, got {seq_shape}; fix the input dims with --shape NAME=DIMS")
    t_len, n_batch, n_input = seq_shape[0], seq_shape[1], int(np.prod(seq_shape[2:]))
    sizes, shapes = [], []
    for k in c.states:
        v = ctx.const(node.input[2 + k])
        shp = np.shape(v) if v is not None else ctx.shape(node.input[2 + k])
        if shp is None or len(shp) != len(seq_shape) - 1 or not all(isinstance(d, int) for d in shp):
            raise Unsupported(f"Loop carried value {k} '{node.input[2 + k]}' (shape {shp}) is "
                              f"not a state of the sequence's batch (shape {seq_shape})")
        sizes.append(int(np.prod(shp[1:])))
        shapes.append(tuple(int(d) for d in shp))
    lp = _Loop(ctx, node, body, c)
    # feature maps ([T, N, *L, C] sequences, [N, *L, F] states: ConvLSTM) travel flattened
    lp.maps = (tuple(seq_shape[1:]), shapes) if len(seq_shape) > 3 else None
    if c.mask is not None:
        sizes = lp.drop_output_carry(n_batch, n_input, sizes)
    try:
        lifted = loops.lift(lp.step(n_batch, n_input, sizes), lp, t_len)
        err = masks.verify(lifted.candidate, lp, t_len, (n_batch, n_input), sizes) \
            if c.mask is not None else 0.0
    except loops.NoMatch as e:
        raise Unsupported(f"the Loop body is not a recurrent cell edgeseq recognises ({e})") \
            from None
    if err > loops.TOLERANCE:
        raise Unsupported(f"the masked Loop is not reproduced by {lifted.candidate.label} with "
                          f"sequence lengths on a right-padded probe ({err:.2g} off)")
    _emit(ctx, node, c, lifted.candidate, t_len)


def _emit(ctx: Context, node: onnx.NodeProto, c: Carried, cand: loops.Candidate,
          t_len: int) -> None:
    base = ctx.node_name
    weights = {slot: ctx.add_const(f"{base}/{slot}", np.asarray(w, np.float32)[None])
               for slot, w in cand.weights.items()}
    order = [cand.h_index] + ([cand.c_index] if cand.c_index is not None else [])
    inits = []
    for j, k in enumerate(order):
        name = node.input[2 + c.states[k]]
        val = ctx.const(name)
        if val is not None and not np.any(val):
            inits.append("")
            continue
        u = ctx.tmp(f"{base}/init{j}")
        ctx.emit(Op.UNSQUEEZE, [_maps(ctx, cand, ctx.inp(node, 2 + c.states[k]), 1)], [u],
                 {"axes": (0,)}, suffix=f"/init{j}")
        inits.append(u)
    y, yh, yc = (ctx.tmp(f"{base}/{s}") for s in ("y", "y_h", "y_c"))
    outs = [y, yh] + ([yc] if cand.op == Op.LSTM else [])
    lens = ""
    if c.mask is not None:
        x_in, mask_value = _mask_source(ctx, c.mask)
        lens = masks.emit_lengths(_emitter(ctx, "/lengths"), lambda b: ctx.tmp(f"{base}/{b}"),
                                  ctx.resolve(c.mask))
        if not hasattr(ctx, "input_checks"):
            ctx.input_checks = []
        ctx.input_checks.append((x_in, f"right_padded:{mask_value!r}@1"))
    ins = [_maps(ctx, cand, ctx.resolve(c.sequence), 2), lens] + inits
    while ins[-1] == "":
        ins.pop()
    ctx.emit(cand.op, ins, outs, cand.attrs, weights)
    n_carried = len(node.input) - 2
    for s in c.scans:
        out = node.output[s - 1] if s - 1 < len(node.output) else ""
        if out and c.mask is not None:
            y_seq = ctx.tmp(f"{base}/y_seq")
            ctx.emit(Op.SQUEEZE, [y], [y_seq], {"axes": (1,)}, suffix="/y")
            masks.emit_keras_outputs(_emitter(ctx, "/keras_y"), ctx.resolve(c.mask), y_seq, yh,
                                     out)
        elif out and cand.op == Op.CONV_LSTM:
            y_seq = ctx.tmp(f"{base}/y_seq")
            ctx.emit(Op.SQUEEZE, [y], [y_seq], {"axes": (1,)}, suffix="/y")
            _maps(ctx, cand, y_seq, 2, True, out)
        elif out:
            ctx.emit(Op.SQUEEZE, [y], [out], {"axes": (1,)}, suffix="/y")
    for k in (c.aliases or {}):   # the carried last output: h at the length
        out = node.output[k] if k < len(node.output) else ""
        if out and _read(ctx, out):
            ctx.emit(Op.SQUEEZE, [yh], [out], {"axes": (0,)}, suffix=f"/state{k}")
    for k, src in zip(order, outs[1:]):
        out = node.output[c.states[k]] if c.states[k] < len(node.output) else ""
        if out and _read(ctx, out) and cand.op == Op.CONV_LSTM:
            s_sq = ctx.tmp(f"{base}/state{k}")
            ctx.emit(Op.SQUEEZE, [src], [s_sq], {"axes": (0,)}, suffix=f"/state{k}")
            _maps(ctx, cand, s_sq, 1, True, out)
        elif out and _read(ctx, out):
            ctx.emit(Op.SQUEEZE, [src], [out], {"axes": (0,)}, suffix=f"/state{k}")
    for k in c.passed:
        if k < len(node.output) and node.output[k]:
            ctx.consts[node.output[k]] = ctx.const(node.input[2 + k])
    for k in c.counters:
        if k < len(node.output) and node.output[k]:
            start = ctx.const(node.input[2 + k])
            if start is not None:
                ctx.consts[node.output[k]] = np.asarray(start) + t_len
    del n_carried


def _maps(ctx: Context, cand: loops.Candidate, name: str, lead: int, to_last: bool = False,
          out: str | None = None) -> str:
    """A ConvLSTM's feature map between the loop's channels-last and the node's channels-first
    layout (other cells: `name` itself)."""
    if cand.op != Op.CONV_LSTM:
        return name
    rank = lead + 1 + cand.weights["w_x"].ndim - 2      # w_x [4H, C, *K]
    t = out or ctx.tmp(f"{ctx.node_name}/maps")
    ctx.emit(Op.TRANSPOSE, [name], [t], {"perm": loops_conv.channels_perm(rank, lead, to_last)},
             suffix="/maps")
    return t


def _emitter(ctx: Context, suffix: str):
    return lambda op, ins, outs, **attrs: ctx.emit(op, ins, outs, attrs, suffix=suffix)


_LAYOUT = ("Reshape", "Transpose", "Unsqueeze", "Squeeze", "Identity")


def _mask_source(ctx: Context, mask: str) -> tuple[str, float]:
    """(graph input, mask value) of a Keras mask any(x != value, axis=-1) as tf2onnx writes it
    (Greater(ReduceSum(Cast(Not(Equal(x, value))), -1), 0)) reaching the loop through layout
    ops, or Unsupported: only then can the input be checked for right padding."""
    chain, n = [], ctx.producers.get(mask)
    while n is not None and n.op_type in _LAYOUT:
        n = ctx.producers.get(n.input[0])
    for op_type in ("Greater", "ReduceSum", "Cast", "Not", "Equal"):
        chain.append(n)
        if n is None or n.op_type != op_type:
            break
        n = ctx.producers.get(n.input[0]) if op_type != "Equal" else n
    else:
        greater, rsum, eq = chain[0], chain[1], chain[4]
        zero, value = ctx.const(greater.input[1]), ctx.const(eq.input[1])
        axes = ctx.const(rsum.input[1]) if len(rsum.input) > 1 else None
        x = eq.input[0]
        shape = ctx.shape(x)
        if x in ctx.graph_inputs and zero is not None and np.size(zero) == 1 and \
                not np.ravel(zero)[0] and value is not None and np.size(value) == 1 and \
                axes is not None and np.size(axes) == 1 and shape is not None and \
                len(shape) == 3 and int(np.ravel(axes)[0]) % 3 == 2:
            return x, float(np.ravel(value)[0])
    raise Unsupported(f"the Loop's mask '{mask}' is not any(x != value, axis=-1) of a [batch, "
                      f"time, features] graph input, so edgeseq cannot check that it is a "
                      f"right padding (the only mask it maps to sequence lengths)")


def _read(ctx: Context, name: str) -> bool:
    """Whether a graph output or a node reads `name` (an unread final state is not emitted:
    its Squeeze has no time axis and would stop the graph from streaming)."""
    outputs = getattr(ctx, "graph_outputs", None)
    if outputs is None or name in outputs:
        return True
    return any(name in n.input for n in ctx.producers.values())


@handler("ReverseSequence", since=10)
def reverse_sequence(ctx: Context, node: onnx.NodeProto) -> None:
    """Whole sequences reversed (every length is the full time length): a Slice with step -1
    along the time axis. Keras writes this for the backward layer of a Bidirectional."""
    a = ctx.attrs(node, {"batch_axis", "time_axis"})
    t_axis = int(a.get("time_axis", 0))
    lens = ctx.need_const(node, 1, "sequence_lens")
    shape = ctx.shape(node.input[0])
    if shape is None or not isinstance(shape[t_axis], int) or np.any(lens != shape[t_axis]):
        raise Unsupported(f"only whole-sequence reversal is supported (every sequence_lens "
                          f"equal to the time length); got lengths {np.ravel(lens).tolist()} "
                          f"for shape {shape}")
    ctx.emit(Op.SLICE, [ctx.inp(node, 0)], [node.output[0]],
             {"starts": (-1,), "ends": (-(shape[t_axis] + 1),), "axes": (t_axis,),
              "steps": (-1,)})
