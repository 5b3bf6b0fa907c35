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
(runtime/loop_stream.py). Any other loop (a condition computed from the data, a reversed
read, a counter used as a position) runs as it is, with its own condition (`_emit_as_is`);
it does not stream. Operators bodies use beyond the main graph's are in loop_body_ops.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeseq.graph import Graph, Value
from edgeseq.limits import LIMITS
from edgeseq.ops import Op

from edgeseq.converters.tflite import body as tfl_body
from edgeseq.converters.tflite import loop_body_ops  # noqa: F401  (registers their handlers)
from edgeseq.converters.tflite import reader, variables
from edgeseq.converters.tflite.context import HANDLERS, Context, OpView, Unsupported

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
    counting: set = field(default_factory=set)           # ... that depend on a counter


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
    counting = r.counting = _tainted(body, control, {body.inputs[k] for k in counters})
    for b in body.ops:
        if id(b) in glue or all(o in counting for o in b.outputs):
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


def _write(body: _Sub, k: int, users: dict, control: set | None) -> _Write | None:
    """Operand k's buffer rewritten as buf[:j] ++ row ++ buf[j+1:], or None (control: the
    index arithmetic the bounds must come from; None: checked by the caller)."""
    cat = body.producer.get(body.outputs[k])
    if cat is None or cat.name != "CONCATENATION" or len(cat.inputs) != 3 or \
            int(cat.option("axis", 0)) != 0 or cat.option("fusedActivationFunction", 0):
        return None
    pre, suf = (body.producer.get(cat.inputs[0]), body.producer.get(cat.inputs[2]))
    buf = body.inputs[k]
    for s in (pre, suf):
        if s is None or s.name != "SLICE" or s.inputs[0] != buf or control is not None and \
                not all(i in control or body.const(i) is not None for i in s.inputs[1:]):
            return None
    if {id(b) for b, _ in users.get(buf, [])} != {id(pre), id(suf)}:
        return None           # the body reads the buffer otherwise
    if control is not None and cat.inputs[1] in control:
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


def _note_variable_states(ctx: Context, op: OpView, r: _Roles) -> None:
    """A stateful layer's states read from variables: the Loop's final states may be assigned
    back (variables.py checks each ASSIGN_VARIABLE against this); a Stream carries them."""
    st = variables.state(ctx)
    for k, idx in enumerate(op.inputs):
        var = st["reads"].get(idx)
        if var is None:
            continue
        if k not in r.states:
            raise Unsupported(f"WHILE operand {k} reads variable '{var}' but is not a state")
        st["finals"][op.outputs[k]] = var


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
    """Emit the WHILE `op` as a general Loop node; `why`: why no cell was lifted. A scan
    over time becomes a Loop with a trip count and stacked rows (it streams); any other loop
    whose operators all convert runs as it is (`_emit_as_is`)."""
    cond, body = _Sub(ctx, cond_i), _Sub(ctx, body_i)
    try:
        r = _roles(ctx, op, cond, body)
        trips, finals = _simulate(ctx, op, cond, body, r)
    except Unsupported as e:
        saved = (len(ctx.nodes), dict(ctx.constants))
        try:
            _emit_as_is(ctx, op, cond, body)
        except Unsupported as e2:
            del ctx.nodes[saved[0]:]
            ctx.constants = saved[1]
            raise Unsupported(f"no cell was lifted ({why}); it is no scan over time ({e}), and "
                              f"it cannot run as it is: {e2}") from None
        ctx.notes.append(f"{op.label}: runs as a general Loop with its own condition (not a "
                         f"scan over time: {e}; no cell was lifted: {why})")
        return
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
    for b in body.ops:    # (constant expressions are converted: the data may read them)
        if id(b) in glue or all(o in r.counting for o in b.outputs):
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
    _note_variable_states(ctx, op, r)
    ctx.notes.append(f"{op.label}: runs as a general Loop ({trips} iterations; no cell was "
                     f"lifted: {why})")


# ---- any other loop: run as it is -------------------------------------------------------------
class _ScalarContext(Context):
    """A loop's body or condition: scalar constants stay 0-d (Context keeps constants at
    least 1-d), so that a scalar counter plus a constant stays a scalar and keeps its rank."""

    def value(self, idx: int) -> str:
        if idx not in self.names and self.is_const(idx):
            arr = np.asarray(self.real(idx))
            if arr.ndim == 0:
                self.names[idx] = self.fresh(self.tname(idx))
                self.constants[self.names[idx]] = arr.copy()
        return super().value(idx)


def _convert_ops(child: Context, ops, skip=frozenset()) -> None:
    problems = []
    for b in ops:
        if id(b) in skip:
            continue
        child.current = b
        try:
            if b.name not in HANDLERS:
                raise Unsupported("no edgeseq mapping")
            HANDLERS[b.name].fn(child, b)
        except Unsupported as e:
            problems.append(f"{b.label}: {e}")
    child.current = None
    if problems:
        raise Unsupported("; ".join(problems))


def _cond_value(parent: Context, cond: _Sub, bound: dict, consts: dict) -> str:
    """The condition subgraph converted into `parent`'s nodes, its operands bound to IR
    names (`bound`) or constants; returns the IR name of its result."""
    c = _ScalarContext(parent.loaded, cond.sub)
    c.used, c.notes, c.nodes, c.constants = parent.used, parent.notes, parent.nodes, \
        parent.constants
    for k, name in bound.items():
        c.names[cond.inputs[k]] = name
    for k, v in consts.items():
        c.fold(cond.inputs[k], v)
    try:
        _convert_ops(c, cond.ops)
    except Unsupported as e:
        raise Unsupported(f"its condition: {e}") from None
    return c.value(cond.outputs[0])


def _index_write(body: _Sub, k: int, users: dict) -> tuple | None:
    """(write, index tensor j) when operand k's buffer is rewritten as buf[:j] ++ row ++
    buf[j+1:] with j a run-time scalar (size [j, -1...] and begin [j + 1, 0...] built by
    RESHAPE and CONCATENATION as the TF converter writes them), else None."""
    w = _write(body, k, users, None)
    if w is None:
        return None

    def lead(vec: int) -> tuple | None:     # CONCATENATION(RESHAPE(s, [1]), const) -> (s, rest)
        cat = body.producer.get(vec)
        if cat is None or cat.name != "CONCATENATION" or len(cat.inputs) != 2:
            return None
        rs = body.producer.get(cat.inputs[0])
        rest = body.const(cat.inputs[1])
        if rs is None or rs.name != "RESHAPE" or rest is None:
            return None
        return rs.inputs[0], np.asarray(rest).reshape(-1)
    size, begin = lead(w.prefix.inputs[2]), lead(w.suffix.inputs[1])
    b0, s1 = body.const(w.prefix.inputs[1]), body.const(w.suffix.inputs[2])
    if size is None or begin is None or b0 is None or s1 is None or \
            np.any(np.asarray(b0) != 0) or np.any(np.asarray(s1) != -1) or \
            np.any(size[1] != -1) or np.any(begin[1] != 0):
        return None
    j, j1 = size[0], begin[0]
    inc = body.producer.get(j1)
    if inc is None or inc.name != "ADD" or j not in inc.inputs or inc.option(
            "fusedActivationFunction", 0):
        return None
    one = body.const(next(i for i in inc.inputs if i != j) if inc.inputs.count(j) == 1 else j)
    if one is None or np.size(one) != 1 or int(np.asarray(one).reshape(-1)[0]) != 1:
        return None
    return w, j


def _operand(ctx: Context, op: OpView, body: _Sub, k: int) -> str:
    """Operand k's IR name; a constant held with another shape of the same size than the
    body declares (a scalar counter's start: Context keeps constants at least 1-d) is
    reshaped."""
    name = ctx.value(op.inputs[k])
    want = tuple(int(d) for d in body.sub.tensors[body.inputs[k]].shape)
    arr = ctx.constants.get(name)
    if arr is not None and arr.shape != want and arr.size == int(np.prod(want)):
        name = ctx.fresh(f"{name}_as{list(want)}")
        ctx.constants[name] = np.asarray(arr).reshape(want)
    return name


def _emit_as_is(ctx: Context, op: OpView, cond: _Sub, body: _Sub) -> None:
    """TFLite WHILE semantics as an ONNX-style Loop: no trip count; the initial condition is
    the condition subgraph on the operands (converted into the enclosing graph), and the
    body returns the condition on its new values. Every operand the body rewrites is
    carried; a TensorList write at a run-time row j becomes Where(rows == j, row, buf)."""
    n = len(op.inputs)
    if len(body.inputs) != n or len(body.outputs) != n or len(cond.inputs) != n:
        raise Unsupported(f"the WHILE has {n} operands, its body takes {len(body.inputs)}")
    passed = [k for k in range(n) if body.outputs[k] == body.inputs[k]]
    consts = {k: np.asarray(ctx.real(op.inputs[k])) for k in passed if ctx.is_const(op.inputs[k])}
    captured = [k for k in passed if k not in consts]
    carried = [k for k in range(n) if k not in passed]
    outer = {k: _operand(ctx, op, body, k) for k in carried + captured}
    go0 = _cond_value(ctx, cond, outer, consts)
    base = ctx.tmp("loop")
    it, cn = ctx.fresh(f"{base}/iteration"), ctx.fresh(f"{base}/cond")
    child = _ScalarContext(ctx.loaded, body.sub)
    child.used, child.notes = ctx.used, ctx.notes
    declared = [Value(it, "int64", ()), Value(cn, "bool", ())]
    for k in carried + captured:
        idx = body.inputs[k]
        child.names[idx] = ctx.fresh(f"{base}/{child.tname(idx)}")
        declared.append(Value(child.names[idx], _dtype(body.sub, idx), child.shape(idx)))
    for k, v in consts.items():
        child.fold(body.inputs[k], v)
    users: dict[int, list] = {}
    for b in body.ops:
        for pos, i in enumerate(b.inputs):
            users.setdefault(i, []).append((b, pos))
    writes = {k: w for k in carried if (w := _index_write(body, k, users)) is not None}
    _convert_ops(child, body.ops, {id(x) for w, _ in writes.values()
                                   for x in (w.concat, w.prefix, w.suffix)})
    new = {k: child.value(body.outputs[k]) for k in carried if k not in writes}
    for k, (w, j) in writes.items():
        shape = child.shape(body.inputs[k])
        j_name = child.value(j)
        rows = child.constant(f"{base}/rows{k}", np.arange(shape[0]).astype(
            np.int64 if _dtype(body.sub, j) == "int64" else np.int32).reshape(
                (shape[0],) + (1,) * (len(shape) - 1)))
        hit, out = ctx.fresh(f"{base}/row{k}_at"), ctx.fresh(f"{base}/written{k}")
        child.emit(Op.EQUAL, [rows, j_name], [hit])
        child.emit(Op.WHERE, [hit, child.value(w.row), child.names[body.inputs[k]]], [out])
        new[k] = out
    bound = {k: new[k] for k in carried}
    bound.update({k: child.names[body.inputs[k]] for k in captured})
    go = _cond_value(child, cond, bound, consts)
    outs = [Value(go, "bool", ())] + [Value(new[k], "float32", ()) for k in carried]
    g = Graph(f"{base}/body", declared, outs, child.nodes, child.constants)
    try:
        g.validate()
    except Exception as e:     # noqa: BLE001 - an inconsistent body is refused, not raised
        raise Unsupported(f"the converted body is inconsistent: {e}") from None
    ctx.emit(Op.LOOP, ["", go0] + [outer[k] for k in carried + captured],
             [ctx.out(op.outputs[k]) for k in carried], body=g, num_carried=len(carried))
    for k in passed:
        ctx.names[op.outputs[k]] = ctx.value(op.inputs[k])
