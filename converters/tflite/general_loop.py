"""TFLite WHILE loops whose body is no recurrent cell edgeseq lifts (a custom Keras cell, or
any Keras RNN loop with the cell patterns off) become one general Loop node
(edgeseq/loop_op.py) when the loop is a scan over time, as the loop of every Keras RNN layer is:

- the index arithmetic (the ops computed from counters and constants only) decides the
  condition and the counters. TFLite shapes are static, so it is run here: the loop takes L
  iterations and reads its sequences at step j in iteration j (GATHER at a counter);
- a buffer the body rewrites as buf[:j] ++ row ++ buf[j+1:] (how the TF converter lowers a
  TensorList write) is written at row j in iteration j, every row once (L is its length): it
  becomes a scan output, the rows stacked;
- the other operands the body rewrites are the carried state; the ones it passes through are
  constants (folded into the body) or captured run-time values.

The body's other operators are converted by the TFLite handlers in a child Context into the
Loop's body Graph [iteration, cond, states..., captured...] -> [cond, new states..., rows...]
with trip count L and no condition; the counters leave the loop as the constants the index
arithmetic reached. Such a Loop runs on the reference and the runtime and streams
(runtime/loop_stream.py). A loop that is no scan over time (a decoder that stops on a token,
a reversed read, a counter used as a position) is refused, naming why.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeseq.graph import Graph, Value
from edgeseq.limits import LIMITS
from edgeseq.ops import Op

from edgeseq.converters.tflite import body as tfl_body
from edgeseq.converters.tflite import reader
from edgeseq.converters.tflite.context import HANDLERS, Context, OpView, Unsupported, handler

_MAX_TRIPS = 1 << 16      # iterations the index arithmetic is run for at conversion
_FLOAT = {0: "float32", 1: "float32", 9: "float32", 7: "float32", 3: "float32"}
_INT = {2: "int32", 4: "int64", 6: "bool"}


@dataclass
class _Write:
    """A buffer rewritten as buf[:j] ++ row ++ buf[j+1:] (axis 0)."""
    concat: OpView
    prefix: OpView
    suffix: OpView
    row: int                  # body tensor of the row ([1, ...])


@dataclass
class _Roles:
    states: list[int] = field(default_factory=list)      # operand indices
    captured: list[int] = field(default_factory=list)
    consts: dict = field(default_factory=dict)           # operand -> constant value
    counters: list[int] = field(default_factory=list)
    writes: dict = field(default_factory=dict)           # operand -> _Write
    reads: list = field(default_factory=list)            # GATHER ops reading a step
    control: set = field(default_factory=set)            # body tensors of index arithmetic


class _Sub:
    """One subgraph's operators, with its constants evaluated on request (index arithmetic
    runs on the body interpreter's kernels, converters/tflite/body.py)."""

    def __init__(self, ctx: Context, index: int):
        # NOTE: lazy import: convert.py imports the handlers' modules
        from edgeseq.converters.tflite.convert import _ops
        self.loaded = ctx.loaded
        self.sub = ctx.loaded.model.subgraphs[index]
        self.ops = _ops(ctx.loaded, self.sub)
        self.inputs = [int(i) for i in self.sub.inputs]
        self.outputs = [int(i) for i in self.sub.outputs]
        self.producer = {o: op for op in self.ops for o in op.outputs}

    def const(self, idx: int):
        t = self.sub.tensors[idx]
        if t.isVariable:
            return None
        return reader.real_array(self.loaded, t) if reader.buffer_bytes(self.loaded, t) \
            is not None else None

    def closure(self, sources: set) -> set:
        """Tensors computed from `sources` and constants only."""
        c = set(sources)
        for op in self.ops:
            if all(i < 0 or i in c or self.const(i) is not None for i in op.inputs):
                c.update(op.outputs)
        return c

    def run(self, env: dict, control: set) -> dict:
        """Evaluate the index arithmetic (ops whose outputs are all in `control`)."""
        env = dict(env)
        for op in self.ops:
            if not all(o in control for o in op.outputs):
                continue
            kernel = tfl_body.KERNELS.get(op.name)
            if kernel is None:
                raise Unsupported(f"its index arithmetic uses {op.name} (operator #{op.index}), "
                                  f"which the loop checker does not run")
            args = []
            for i in op.inputs:
                args.append(None if i < 0 else env[i] if i in env else self.const(i))
            while args and args[-1] is None:
                args.pop()
            for o, v in zip(op.outputs, kernel(op, *args)):
                env[o] = np.asarray(v)
        return env


def _index_like(sub, idx: int) -> bool:
    t = sub.tensors[idx]
    shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
    return t.type in (2, 4) and len(shape) <= 1 and all(d == 1 for d in shape)


def _roles(ctx: Context, op: OpView, cond: _Sub, body: _Sub) -> _Roles:
    n = len(op.inputs)
    if len(body.inputs) != n or len(body.outputs) != n or len(cond.inputs) != n:
        raise Unsupported(f"the WHILE has {n} operands, its body takes {len(body.inputs)} and "
                          f"returns {len(body.outputs)}, its condition takes {len(cond.inputs)}")
    r = _Roles()
    passed = [k for k in range(n) if body.outputs[k] == body.inputs[k]]
    for k in passed:
        if ctx.is_const(op.inputs[k]):
            r.consts[k] = np.asarray(ctx.real(op.inputs[k]))
        else:
            r.captured.append(k)
    rewritten = [k for k in range(n) if k not in passed]
    counters = [k for k in rewritten if _index_like(body.sub, body.inputs[k])]
    while True:
        control = body.closure({body.inputs[k] for k in list(r.consts) + counters})
        keep = [k for k in counters if body.outputs[k] in control]
        if keep == counters:
            break
        counters = keep
    r.counters, r.control = counters, control
    c_control = cond.closure({cond.inputs[k] for k in list(r.consts) + counters})
    if cond.outputs[0] not in c_control:
        raise Unsupported("its condition depends on the data (a loop that stops on a value it "
                          "computes, as a decoder stops at an end token)")
    for k in counters:
        if not ctx.is_const(op.inputs[k]):
            raise Unsupported(f"its counter (operand {k}) starts at a run-time value")
    users: dict[int, list] = {}
    for b in body.ops:
        for pos, i in enumerate(b.inputs):
            users.setdefault(i, []).append((b, pos))
    for k in rewritten:
        if k in counters:
            continue
        w = _write(body, k, users, control)
        if w is not None:
            r.writes[k] = w
        else:
            r.states.append(k)
    glue = {id(w.concat) for w in r.writes.values()} | {id(w.prefix) for w in r.writes.values()} \
        | {id(w.suffix) for w in r.writes.values()}
    counting = _tainted(body, control, {body.inputs[k] for k in counters})
    for b in body.ops:
        if id(b) in glue or all(o in control for o in b.outputs):
            continue
        for pos, i in enumerate(b.inputs):
            if i in counting:
                if b.name == "GATHER" and pos == 1 and b.inputs[0] in body.inputs:
                    r.reads.append(b)
                    continue
                raise Unsupported(f"body operator #{b.index} {b.name} computes with the loop "
                                  f"counter (only a GATHER of a step may read it)")
    return r


def _tainted(body: _Sub, control: set, sources: set) -> set:
    t = set(sources)
    for b in body.ops:
        if any(i in t for i in b.inputs) and all(o in control for o in b.outputs):
            t.update(b.outputs)
    return t


def _write(body: _Sub, k: int, users: dict, control: set) -> _Write | None:
    """Operand k's buffer rewritten as buf[:j] ++ row ++ buf[j+1:], or None."""
    cat = body.producer.get(body.outputs[k])
    if cat is None or cat.name != "CONCATENATION" or len(cat.inputs) != 3 or \
            int(cat.option("axis", 0)) != 0 or cat.option("fusedActivationFunction", 0):
        return None
    pre, suf = (body.producer.get(cat.inputs[0]), body.producer.get(cat.inputs[2]))
    buf = body.inputs[k]
    for s in (pre, suf):
        if s is None or s.name != "SLICE" or s.inputs[0] != buf or \
                not all(i in control or body.const(i) is not None for i in s.inputs[1:]):
            return None
    if {id(b) for b, _ in users.get(buf, [])} != {id(pre), id(suf)}:
        return None           # the body reads the buffer otherwise
    if cat.inputs[1] in control:
        return None
    return _Write(cat, pre, suf, cat.inputs[1])


def _simulate(ctx: Context, op: OpView, cond: _Sub, body: _Sub, r: _Roles) -> tuple[int, dict]:
    """Run the index arithmetic: (iterations, final counter values); checks the reads and
    writes at every iteration."""
    start = {k: np.asarray(ctx.real(op.inputs[k])) for k in r.counters}
    vals = {**r.consts, **start}
    c_control = cond.closure({cond.inputs[k] for k in vals})
    shapes = {k: tuple(int(d) for d in body.sub.tensors[body.inputs[k]].shape)
              for k in r.writes}
    j = 0
    while True:
        env = cond.run({cond.inputs[k]: v for k, v in vals.items()}, c_control)
        if not bool(np.asarray(env[cond.outputs[0]]).reshape(-1)[0]):
            break
        if j >= min(_MAX_TRIPS, LIMITS.loop_iterations):
            raise Unsupported(f"its condition still holds after {j} iterations (the limit the "
                              f"loop checker runs)")
        env = body.run({body.inputs[k]: v for k, v in vals.items()}, r.control)
        for g in r.reads:
            v = np.asarray(env[g.inputs[1]])
            if v.size != 1 or int(v.reshape(-1)[0]) != j or int(g.option("axis", 0) or 0) != 0 \
                    or g.option("batchDims", 0):
                raise Unsupported(f"operator #{g.index} GATHER reads step "
                                  f"{v.reshape(-1).tolist()} at iteration {j} (a scan over "
                                  f"time reads step j at iteration j)")
        for k, w in r.writes.items():
            tag = np.arange(int(np.prod(shapes[k]))).reshape(shapes[k])
            pre = tfl_body.KERNELS["SLICE"](w.prefix, tag, *[_val(body, env, i)
                                                             for i in w.prefix.inputs[1:]])[0]
            suf = tfl_body.KERNELS["SLICE"](w.suffix, tag, *[_val(body, env, i)
                                                             for i in w.suffix.inputs[1:]])[0]
            if not (np.array_equal(pre, tag[:j]) and np.array_equal(suf, tag[j + 1:])):
                raise Unsupported(f"operand {k} is not written at row {j} in iteration {j}")
        vals.update({k: np.asarray(env[body.outputs[k]]) for k in r.counters})
        j += 1
    for k in r.writes:
        if shapes[k][0] != j:
            raise Unsupported(f"it writes {j} of the {shapes[k][0]} rows of operand {k}")
    return j, {k: vals[k] for k in r.counters}


def _val(body: _Sub, env: dict, i: int):
    return env[i] if i in env else body.const(i)


def _dtype(sub, idx: int) -> str:
    t = sub.tensors[idx].type
    if t in _INT:
        return _INT[t]
    if t in _FLOAT:
        return "float32"
    raise Unsupported(f"a carried tensor of type {reader.dtype_name(t)}")


def emit(ctx: Context, op: OpView, cond_i: int, body_i: int, why: str) -> None:
    """Emit the WHILE `op` as a general Loop node; `why`: why no cell was lifted."""
    try:
        cond, body = _Sub(ctx, cond_i), _Sub(ctx, body_i)
        r = _roles(ctx, op, cond, body)
        trips, finals = _simulate(ctx, op, cond, body, r)
    except Unsupported as e:
        raise Unsupported(f"no cell was lifted ({why}), and it is no scan over time edgeseq "
                          f"runs as a general loop: {e}") from None
    base = ctx.tmp("loop")
    it, cn = ctx.fresh(f"{base}/iteration"), ctx.fresh(f"{base}/cond")
    child = Context(ctx.loaded, body.sub)
    child.used = ctx.used                 # body names are unique in the whole model
    child.notes = ctx.notes
    declared = [Value(it, "int64", ()), Value(cn, "bool", ())]
    for k in r.states + r.captured:
        idx = body.inputs[k]
        name = ctx.fresh(f"{base}/{child.tname(idx)}")
        child.names[idx] = name
        declared.append(Value(name, _dtype(body.sub, idx), child.shape(idx)))
    for k, v in r.consts.items():
        child.fold(body.inputs[k], v)
    glue = {id(w.concat) for w in r.writes.values()} | {id(w.prefix) for w in r.writes.values()} \
        | {id(w.suffix) for w in r.writes.values()}
    reads = {id(g) for g in r.reads}
    problems = []
    for b in body.ops:
        if id(b) in glue or all(o in r.control for o in b.outputs):
            continue
        child.current = b
        try:
            if id(b) in reads:
                child.emit(Op.GATHER, [child.value(b.inputs[0]), it], [child.out(b.outputs[0])],
                           axis=0)
            elif b.name not in HANDLERS:
                raise Unsupported("no edgeseq mapping")
            else:
                HANDLERS[b.name].fn(child, b)
        except Unsupported as e:
            problems.append(f"{b.label}: {e}")
    if problems:
        raise Unsupported(f"no cell was lifted ({why}), and its body cannot run as a general "
                          f"loop: " + "; ".join(problems))
    child.current = None
    outs = [cn] + [child.value(body.outputs[k]) for k in r.states]
    for k, w in r.writes.items():
        if child.shape(w.row)[:1] != (1,):
            raise Unsupported(f"the row written into operand {k} has shape "
                              f"{child.shape(w.row)} (expected a leading 1)")
        row = ctx.fresh(f"{base}/row{k}")
        child.emit(Op.SQUEEZE, [child.value(w.row)], [row], axes=(0,))
        outs.append(row)
    g = Graph(f"{base}/body", declared, [Value(o, "float32", ()) for o in outs], child.nodes,
              child.constants)
    g.outputs[0] = Value(cn, "bool", ())
    try:
        g.validate()
    except Exception as e:     # noqa: BLE001 - an inconsistent body is refused, not raised
        raise Unsupported(f"no cell was lifted ({why}), and the converted body is "
                          f"inconsistent: {e}") from None
    trip = ctx.constant(f"{base}/trips", np.array(trips, np.int64))
    ins = [trip, ""] + [ctx.value(op.inputs[k]) for k in r.states + r.captured]
    loop_outs = [ctx.out(op.outputs[k]) for k in r.states] + \
        [ctx.out(op.outputs[k]) for k in r.writes]
    ctx.emit(Op.LOOP, ins, loop_outs, body=g, num_carried=len(r.states))
    for k in r.captured + list(r.consts):
        ctx.names[op.outputs[k]] = ctx.value(op.inputs[k])
    for k, v in finals.items():
        ctx.fold(op.outputs[k], np.asarray(v))
    ctx.notes.append(f"{op.label}: runs as a general Loop ({trips} iterations; no cell was "
                     f"lifted: {why})")


# ---- operators loop bodies use that the main graph handlers lacked ----------------------------
@handler("GATHER", max_version=6)
def gather(ctx: Context, op: OpView) -> None:
    if op.option("batchDims", 0):
        raise Unsupported(f"GATHER with batchDims {op.option('batchDims')}")
    rank = len(ctx.shape(op.input(0)))
    axis = int(op.option("axis", 0) or 0)
    if not -rank <= axis < rank:
        raise Unsupported(f"GATHER axis {axis} for a rank-{rank} operand")
    ctx.emit(Op.GATHER, [ctx.value(op.input(0)), ctx.value(op.input(1))],
             [ctx.out(op.outputs[0])], axis=axis % rank)


@handler("RELU", max_version=3)
def relu(ctx: Context, op: OpView) -> None:
    ctx.emit(Op.RELU, [ctx.value(op.input(0))], [ctx.out(op.outputs[0])])


@handler("MINIMUM", "MAXIMUM", max_version=4)
def min_max(ctx: Context, op: OpView) -> None:
    """min/max against a constant scalar (Keras' hard sigmoid) is a one-sided Clip."""
    a, b = op.input(0), op.input(1)
    if ctx.is_const(a) and not ctx.is_const(b):
        a, b = b, a
    c = ctx.real(b) if ctx.is_const(b) else None
    if c is None or np.size(c) != 1:
        raise Unsupported(f"{op.name} of two run-time values (only against a constant scalar)")
    c = float(np.asarray(c).reshape(-1)[0])
    bound = {"max": c} if op.name == "MINIMUM" else {"min": c}
    ctx.emit(Op.CLIP, [ctx.value(a)], [ctx.out(op.outputs[0])], **bound)
