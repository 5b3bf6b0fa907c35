"""Emitters of the glue ops: elementwise chains fused into one loop nest, Gemm/MatMul heads
and Conv1d through the panel kernels, Softmax/Reduce over one axis, layout ops as free
reshapes or one copy loop, Pad and Gather as one loop. Semantics follow edgeseq.reference."""
from __future__ import annotations

import math

import numpy as np

from edgeseq.graph import Node
from edgeseq.ops import Op
from edgeseq.runtime.codegen.context import Lowering, Unsupported, emitter
from edgeseq.runtime.kernels.panels import to_panels


def _lit(v: float) -> str:
    if math.isinf(v):
        return "np.float32(np.inf)" if v > 0 else "np.float32(-np.inf)"
    return f"np.float32({float(v)!r})"


def _flag(v: bool) -> str:
    """A bool argument of a helper. NOTE: a bare True/False is a literal type to Numba, so
    the helper would be compiled once per value (a second Conv1d specialisation cost ~2 s
    of a cold start)."""
    return f"np.bool_({bool(v)})"


def _axis(axis: int, rank: int) -> int:
    return axis % rank if rank else 0


# ---- elementwise: one loop nest per chain ---------------------------------------------------
# op -> scalar expression of the operand expressions (a, b)
SCALAR = {
    Op.ADD: lambda n, a, b: f"({a} + {b})",
    Op.SUB: lambda n, a, b: f"({a} - {b})",
    Op.MUL: lambda n, a, b: f"({a} * {b})",
    Op.DIV: lambda n, a, b: f"({a} / {b})",
    Op.POW: lambda n, a, b: f"({a} * {a})" if b == _lit(2.0) else
    (f"np.sqrt({a})" if b == _lit(0.5) else f"({a} ** {b})"),
    Op.RELU: lambda n, a: f"max({a}, np.float32(0.0))",
    Op.SIGMOID: lambda n, a: f"(np.float32(1.0) / (np.float32(1.0) + np.exp(-{a})))",
    Op.TANH: lambda n, a: f"np.tanh({a})",
    Op.SQRT: lambda n, a: f"np.sqrt({a})",
    Op.EXP: lambda n, a: f"np.exp({a})",
    Op.LOG: lambda n, a: f"np.log({a})",
    Op.NEG: lambda n, a: f"(-{a})",
    Op.ABS: lambda n, a: f"abs({a})",
    Op.IDENTITY: lambda n, a: a,
    Op.CAST: lambda n, a: a,
    Op.CLIP: lambda n, a: f"min(max({a}, {_lit(n.attrs['min'])}), {_lit(n.attrs['max'])})",
    Op.LEAKY_RELU: lambda n, a: f"({a} if {a} >= 0 else {_lit(n.attrs['alpha'])} * {a})",
}


def _fusable(lw: Lowering, node: Node) -> bool:
    if node.op not in SCALAR:
        return False
    if node.op is Op.CAST and node.attrs["to"] not in ("float32", "float64"):
        return False
    return all(not n or lw.graph.value(n).dtype == "float32" or
               (lw.is_const(n) and lw.graph.constants[n].dtype.kind == "f")
               for n in node.inputs)


def _reader(lw: Lowering, name: str) -> Node | None:
    """The single node reading a value that is not a graph output, or None."""
    if lw.readers.get(name, 0) != 1 or name in lw.graph_outputs:
        return None
    for n in lw.graph.nodes:
        if name in n.inputs:
            return n
    return None


@emitter(*SCALAR)
def _elementwise(lw: Lowering, node: Node) -> None:
    if node.name in lw.fused:
        return
    if node.op is Op.CAST and not _fusable(lw, node):
        _cast(lw, node)
        return
    if not _fusable(lw, node):
        raise Unsupported(f"{node.op.value} on non-float32 data")
    out = node.outputs[0]
    nxt = _reader(lw, out)
    if nxt is not None and _fusable(lw, nxt) and nxt.name not in lw.fused:
        lw.pending[out] = node          # folded into the reader's loop
        return
    lw.comment(node)
    oshape = lw.shape(out)
    rank = len(oshape)
    if rank == 0:
        raise Unsupported("rank-0 result")
    leaves: dict[str, tuple] = {}       # value name -> (var, static shape)
    body: list[str] = []

    def operand(name: str) -> str:
        if name in lw.pending:
            return build(lw.pending[name])
        if lw.is_const(name) and lw.graph.constants[name].size == 1:
            return _lit(float(np.asarray(lw.graph.constants[name]).ravel()[0]))
        if name not in leaves:
            leaves[name] = (lw.value(name), lw.shape(name))
        var, shape = leaves[name]
        r = len(shape)
        if r == 0:
            return f"{var}_s"
        idx = []
        for k in range(r):
            kk = k + rank - r
            if shape[k] == 1 and oshape[kk] != 1:
                idx.append("0")
            elif shape[k] == oshape[kk]:
                idx.append(f"i{kk}")
            else:
                idx.append(f"i{kk} * {var}_b{k}")
        return f"{var}[{', '.join(idx)}]"

    def build(n: Node) -> str:
        args = [operand(x) for x in n.inputs if x]
        t = lw.fresh("t")
        body.append(f"{t} = {SCALAR[n.op](n, *args)}")
        return t

    res = build(node)
    y = lw.fresh()
    dims, dsrc = [], []
    for kk in range(rank):
        src = [f"{v}.shape[{kk - rank + len(s)}]" for v, s in leaves.values()
               if kk - rank + len(s) >= 0 and s[kk - rank + len(s)] == oshape[kk]]
        if not src:
            src = [f"{v}.shape[{kk - rank + len(s)}]" for v, s in leaves.values()
                   if kk - rank + len(s) >= 0]
            if len(src) > 1:
                src = [f"max({', '.join(src)})"]
        d = src[0] if src else str(oshape[kk])
        lw.emit(f"{y}_d{kk} = {d}")
        dims.append(f"{y}_d{kk}")
        dsrc.append(d)
    for var, shape in leaves.values():
        r = len(shape)
        if r == 0:
            lw.emit(f"{var}_s = {var}.ravel()[0]")
        for k in range(r):
            kk = k + rank - r
            # NOTE: the operand the dim was read from needs no check (fewer lines to compile)
            if f"{var}.shape[{k}]" != dsrc[kk]:
                lw.emit(f"if {var}.shape[{k}] != 1 and {var}.shape[{k}] != {dims[kk]}:")
                lw.emit(f"    raise ValueError(\"node '{_esc(node.name)}': operand shapes do "
                        f"not broadcast\")")
            if not (shape[k] == 1 and oshape[kk] != 1) and shape[k] != oshape[kk]:
                lw.emit(f"{var}_b{k} = 1 if {var}.shape[{k}] != 1 else 0")
    lw.emit(f"{y} = {lw.empty(dims)}")
    lw.loop_nest(dims, body + [f"{y}[{', '.join(f'i{k}' for k in range(rank))}] = {res}"])
    lw.bind(out, y)


# Cast targets the generated code represents (integers are carried as int64)
_CAST_TO = {"int32": "np.int64", "int64": "np.int64", "float32": "np.float32",
            "float64": "np.float32"}


def _cast(lw: Lowering, node: Node) -> None:
    """A Cast that changes the kind (integer <-> float, integer widths): one astype."""
    to = node.attrs["to"]
    src = lw.graph.value(node.inputs[0]).dtype if not lw.is_const(node.inputs[0]) else \
        str(lw.graph.constants[node.inputs[0]].dtype)
    if to not in _CAST_TO or (to.startswith("int") and src.startswith("float")):
        raise Unsupported(f"Cast from {src} to {to}")
    lw.comment(node)
    y = lw.fresh()
    lw.emit(f"{y} = {lw.value(node.inputs[0])}.astype({_CAST_TO[to]})")
    lw.bind(node.outputs[0], y)


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', "'")


# ---- linear -------------------------------------------------------------------------------
def _bias_vector(lw: Lowering, name: str, n_out: int, scale: float) -> np.ndarray:
    c = lw.const_f32(name)
    if c.size == 1:
        return np.full(n_out, float(c.ravel()[0]) * scale, np.float32)
    if c.size == n_out and (c.ndim == 1 or c.shape[0] == 1):
        return c.ravel() * np.float32(scale)
    raise Unsupported(f"bias of shape {c.shape} (only [N] or [1, N] constants are emitted)")


def _linear(lw: Lowering, node: Node, x2: str, rows: np.ndarray, bias: np.ndarray | None,
            alpha: float) -> str:
    lw.emit(f"if {x2}.ndim != 2 or {x2}.shape[1] != {rows.shape[1]}:")
    lw.emit(f"    raise ValueError(\"node '{_esc(node.name)}' ({node.op.value}): input has the "
            f"wrong number of features (expected {rows.shape[1]})\")")
    wp = lw.pack("wf", to_panels(np.ascontiguousarray(rows, np.float32)))
    b = lw.pack("wf", bias if bias is not None else np.zeros(1, np.float32))
    y = lw.fresh()
    lw.emit(f"{y} = " + lw.call("linear_ws", x2, wp, f"np.int64({rows.shape[0]})", b,
                                _flag(bias is not None), repr(float(alpha)), "ws", "wsp"))
    return y


@emitter(Op.GEMM)
def _gemm(lw: Lowering, node: Node) -> None:
    a_name, b_name = node.inputs[0], node.inputs[1]
    at = node.attrs
    if not lw.is_const(b_name) or lw.is_const(a_name):
        raise Unsupported("Gemm with a computed B (only constant weights are emitted)")
    lw.comment(node)
    b = lw.const_f32(b_name)
    rows = b if at["trans_b"] else b.T
    c = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    if c is not None and not lw.is_const(c):
        raise Unsupported("Gemm with a computed C")
    bias = _bias_vector(lw, c, rows.shape[0], at["beta"]) if c else None
    a = lw.value(a_name)
    if at["trans_a"]:
        t = lw.fresh()
        dims = [f"{a}.shape[1]", f"{a}.shape[0]"]
        lw.emit(f"{t} = {lw.empty(dims)}")
        lw.loop_nest(dims, [f"{t}[i0, i1] = {a}[i1, i0]"])
        a = t
    lw.bind(node.outputs[0], _linear(lw, node, a, rows, bias, at["alpha"]))


@emitter(Op.MATMUL)
def _matmul(lw: Lowering, node: Node) -> None:
    a_name, b_name = node.inputs
    if not lw.is_const(b_name) or lw.is_const(a_name):
        raise Unsupported("MatMul with a computed right operand")
    b = lw.const_f32(b_name)
    r = lw.rank(a_name)
    if b.ndim != 2 or r < 2:
        raise Unsupported("MatMul other than [..., M, K] x [K, N]")
    lw.comment(node)
    a = lw.value(a_name)
    dims = lw.dims(a, r)
    x2 = lw.fresh()
    lw.emit(f"if {a}.shape[{r - 1}] != {b.shape[0]}:")
    lw.emit(f"    raise ValueError(\"node '{_esc(node.name)}' (MatMul): inner dimensions "
            f"differ (expected {b.shape[0]})\")")
    lw.emit(f"{x2} = {a}.reshape(({lw.prod(dims[:-1])}, {b.shape[0]}))")
    y = _linear(lw, node, x2, b.T, None, 1.0)
    out = lw.fresh()
    lw.emit(f"{out} = {y}.reshape({lw.tup(dims[:-1] + [str(b.shape[1])])})")
    lw.bind(node.outputs[0], out)


POST = {Op.RELU: 1, Op.SIGMOID: 2}


@emitter(Op.CONV1D)
def _conv(lw: Lowering, node: Node) -> None:
    at = node.attrs
    w_name = node.inputs[1]
    b_name = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    if not lw.is_const(w_name) or (b_name and not lw.is_const(b_name)):
        raise Unsupported("Conv1d with computed weights")
    if at["group"] != 1:
        raise Unsupported(f"grouped convolution (group {at['group']})")
    lw.comment(node)
    w = lw.const_f32(w_name)
    o, c, k = w.shape
    wp = lw.pack("wf", to_panels(np.ascontiguousarray(w.reshape(o, c * k))))
    b = lw.pack("wf", lw.const_f32(b_name) if b_name
                else np.zeros(1, np.float32))
    out = node.outputs[0]
    post = 0
    nxt = _reader(lw, out)
    if nxt is not None and nxt.op in POST:
        post = POST[nxt.op]
        lw.fused.add(nxt.name)
        out = nxt.outputs[0]
    x = lw.value(node.inputs[0])
    lw.emit(f"if {x}.shape[1] != {c}:")
    lw.emit(f"    raise ValueError(\"node '{_esc(node.name)}' (Conv1d): input has the wrong "
            f"number of channels (expected {c})\")")
    p0, p1 = at["pads"]
    y = lw.fresh()
    lw.emit(f"{y}_n = ({x}.shape[2] + {p0 + p1 - at['dilation'] * (k - 1) - 1}) "
            f"// {at['stride']} + 1")
    lw.emit(f"if {y}_n < 1:")
    lw.emit(f"    raise ValueError(\"node '{_esc(node.name)}': input shorter than the kernel\")")
    ints = [f"np.int64({v})" for v in (o, k, at["stride"], at["dilation"], p0)]
    lw.emit(f"{y} = " + lw.call("conv1d_ws", x, wp, b, _flag(b_name is not None), *ints,
                                f"{y}_n", f"np.int64({post})", "ws", "wsp"))
    lw.bind(out, y)


# ---- normalising / reducing ---------------------------------------------------------------
def _three(lw: Lowering, x: str, rank: int, a0: int, a1: int) -> str:
    """x viewed as [prod(dims < a0), prod(dims a0..a1), prod(dims > a1)]."""
    d = lw.dims(x, rank)
    v = lw.fresh()
    lw.emit(f"{v} = {x}.reshape(({lw.prod(d[:a0])}, {lw.prod(d[a0:a1 + 1])}, "
            f"{lw.prod(d[a1 + 1:])}))")
    return v


@emitter(Op.SOFTMAX, Op.LOG_SOFTMAX)
def _softmax(lw: Lowering, node: Node) -> None:
    r = lw.rank(node.inputs[0])
    lw.comment(node)
    x = lw.value(node.inputs[0])
    ax = _axis(node.attrs["axis"], r)
    x3 = _three(lw, x, r, ax, ax)
    y = lw.fresh()
    lw.emit(f"{y} = " + lw.call("softmax_ws", x3, _flag(node.op is Op.LOG_SOFTMAX), "ws", "wsp")
            + f".reshape({x}.shape)")
    lw.bind(node.outputs[0], y)


@emitter(Op.REDUCE_MEAN, Op.REDUCE_SUM)
def _reduce(lw: Lowering, node: Node) -> None:
    r = lw.rank(node.inputs[0])
    axes = sorted({a % r for a in node.attrs["axes"]}) if node.attrs["axes"] else list(range(r))
    if axes != list(range(axes[0], axes[-1] + 1)):
        raise Unsupported(f"reduction over non-adjacent axes {axes}")
    keep = node.attrs["keepdims"]
    if not keep and len(axes) == r:
        raise Unsupported("rank-0 result")
    lw.comment(node)
    x = lw.value(node.inputs[0])
    x3 = _three(lw, x, r, axes[0], axes[-1])
    d = lw.dims(x, r)
    shape = [("1" if keep else None) if k in axes else d[k] for k in range(r)]
    y = lw.fresh()
    lw.emit(f"{y} = " + lw.call("reduce_ws", x3, _flag(node.op is Op.REDUCE_MEAN), "ws", "wsp")
            + f".reshape({lw.tup([s for s in shape if s is not None])})")
    lw.bind(node.outputs[0], y)


# ---- layout -------------------------------------------------------------------------------
@emitter(Op.CONCAT)
def _concat(lw: Lowering, node: Node) -> None:
    names = [n for n in node.inputs if n]
    r = lw.rank(names[0])
    ax = _axis(node.attrs["axis"], r)
    lw.comment(node)
    xs = [lw.value(n) for n in names]
    d = lw.dims(xs[0], r)
    total = " + ".join(f"{x}.shape[{ax}]" for x in xs)
    y = lw.fresh()
    lw.emit(f"{y} = {lw.empty(d[:ax] + [f'({total})'] + d[ax + 1:])}")
    y3 = _three(lw, y, r, ax, ax)
    lw.emit(f"{y}_o = 0")
    for x in xs:
        x3 = _three(lw, x, r, ax, ax)
        lw.emit(f"if not {lw.call('put_axis1', y3, x3, f'{y}_o')}:")
        lw.emit(f"    raise ValueError(\"node '{_esc(node.name)}' (Concat): input shapes "
                f"do not match\")")
        lw.emit(f"{y}_o += {x}.shape[{ax}]")
    lw.bind(node.outputs[0], y)


@emitter(Op.SPLIT)
def _split(lw: Lowering, node: Node) -> None:
    r = lw.rank(node.inputs[0])
    ax = _axis(node.attrs["axis"], r)
    lw.comment(node)
    x = lw.value(node.inputs[0])
    x3 = _three(lw, x, r, ax, ax)
    d = lw.dims(x, r)
    o = 0
    for name, s in zip(node.outputs, node.attrs["split"]):
        y = lw.fresh()
        dims = [f"{x3}.shape[0]", str(s), f"{x3}.shape[2]"]
        lw.emit(f"{y}3 = {lw.empty(dims)}")
        lw.loop_nest(dims, [f"{y}3[i0, i1, i2] = {x3}[i0, {o} + i1, i2]"])
        lw.emit(f"{y} = {y}3.reshape({lw.tup(d[:ax] + [str(s)] + d[ax + 1:])})")
        lw.bind(name, y)
        o += s


@emitter(Op.SLICE)
def _slice(lw: Lowering, node: Node) -> None:
    at = node.attrs
    r = lw.rank(node.inputs[0])
    axes = [a % r for a in at["axes"]]
    if len(set(axes)) != len(axes):
        raise Unsupported("an axis sliced twice")
    lw.comment(node)
    x = lw.value(node.inputs[0])
    y = lw.fresh()
    dims, src = lw.dims(x, r), [f"i{k}" for k in range(r)]
    big = 2 ** 62
    if r == 3 and len(axes) == 1:
        bounds = [max(min(v, big), -big) for v in (at["starts"][0], at["ends"][0])]
        lw.emit(f"{y} = " + lw.call("slice3_ws", x, f"np.int64({axes[0]})",
                                    *(f"np.int64({v})" for v in bounds),
                                    f"np.int64({at['steps'][0]})", "ws", "wsp"))
        lw.bind(node.outputs[0], y)
        return
    for st, en, ax, sp in zip(at["starts"], at["ends"], axes, at["steps"]):
        en = max(min(en, big), -big)
        st = max(min(st, big), -big)
        lw.emit(f"{y}_s{ax}, {y}_n{ax} = " + lw.call("slice_bounds", f"{x}.shape[{ax}]",
                                                     f"np.int64({st})", f"np.int64({en})",
                                                     f"np.int64({sp})"))
        dims[ax] = f"{y}_n{ax}"
        src[ax] = f"{y}_s{ax} + i{ax} * {sp}"
    lw.emit(f"{y} = {lw.empty(dims)}")
    lw.loop_nest(dims, [f"{y}[{', '.join(f'i{k}' for k in range(r))}] = {x}[{', '.join(src)}]"])
    lw.bind(node.outputs[0], y)


@emitter(Op.TRANSPOSE)
def _transpose(lw: Lowering, node: Node) -> None:
    r = lw.rank(node.inputs[0])
    perm = list(node.attrs["perm"] or reversed(range(r)))
    lw.comment(node)
    x = lw.value(node.inputs[0])
    if perm == list(range(r)):
        lw.bind(node.outputs[0], x)
        return
    y = lw.fresh()
    if r == 3:
        lw.emit(f"{y} = " + lw.call("permute3_ws", x, *(f"np.int64({p})" for p in perm),
                                    "ws", "wsp"))
        lw.bind(node.outputs[0], y)
        return
    d = lw.dims(x, r)
    dims = [d[p] for p in perm]
    src = [""] * r
    for j, p in enumerate(perm):
        src[p] = f"i{j}"
    lw.emit(f"{y} = {lw.empty(dims)}")
    lw.loop_nest(dims, [f"{y}[{', '.join(f'i{k}' for k in range(r))}] = {x}[{', '.join(src)}]"])
    lw.bind(node.outputs[0], y)


def _view(lw: Lowering, node: Node, dims: list[str]) -> None:
    x = lw.value(node.inputs[0])
    y = lw.fresh()
    lw.emit(f"{y} = {x}.reshape({lw.tup(dims)})")
    lw.bind(node.outputs[0], y)


@emitter(Op.RESHAPE)
def _reshape(lw: Lowering, node: Node) -> None:
    r = lw.rank(node.inputs[0])
    lw.comment(node)
    x = lw.value(node.inputs[0])
    d = lw.dims(x, r)
    target = list(node.attrs["shape"])
    dims = [d[k] if t == 0 else str(t) for k, t in enumerate(target)]
    if -1 in target:
        k = target.index(-1)
        known = [e for j, e in enumerate(dims) if j != k]
        dims[k] = f"({x}.size // max({lw.prod(known)}, 1))"
    _view(lw, node, dims)


@emitter(Op.SQUEEZE)
def _squeeze(lw: Lowering, node: Node) -> None:
    shape = lw.shape(node.inputs[0])
    r = len(shape)
    axes = {a % r for a in node.attrs["axes"]} if node.attrs["axes"] else \
        {k for k, d in enumerate(shape) if d == 1}
    if not node.attrs["axes"] and any(isinstance(d, str) for d in shape):
        raise Unsupported("Squeeze without axes of an input with symbolic dims")
    lw.comment(node)
    d = lw.dims(lw.value(node.inputs[0]), r)
    _view(lw, node, [e for k, e in enumerate(d) if k not in axes])


@emitter(Op.UNSQUEEZE)
def _unsqueeze(lw: Lowering, node: Node) -> None:
    r_in = lw.rank(node.inputs[0])
    r = r_in + len(node.attrs["axes"])
    new = {a % r for a in node.attrs["axes"]}
    lw.comment(node)
    d = iter(lw.dims(lw.value(node.inputs[0]), r_in))
    _view(lw, node, ["1" if k in new else next(d) for k in range(r)])


@emitter(Op.PAD)
def _pad(lw: Lowering, node: Node) -> None:
    at = node.attrs
    r = lw.rank(node.inputs[0])
    pads = list(at["pads"])
    mode = at["mode"]
    if mode != "constant" and min(pads) < 0:
        raise Unsupported(f"negative pads in {mode} mode")
    lw.comment(node)
    x = lw.value(node.inputs[0])
    y = lw.fresh()
    d = lw.dims(x, r)
    dims, src, inside = [], [], []
    for k in range(r):
        b, e = pads[k], pads[k + r]
        dims.append(f"({d[k]} + {b + e})" if b + e else d[k])
        j = f"i{k} - {b}" if b else f"i{k}"
        if not (b or e):
            src.append(f"i{k}")
        elif mode == "reflect":
            src.append(f"G.reflect_index({j}, {d[k]})")
        elif mode == "edge":
            src.append(f"min(max({j}, 0), {d[k]} - 1)")
        else:
            inside.append(f"0 <= {j} < {d[k]}")
            src.append(f"{j}")
    for k in range(r):
        if pads[k] + pads[k + r] >= 0:
            continue        # cannot crop (a check costs the generated function's compile)
        lw.emit(f"if {dims[k]} < 0:")
        lw.emit(f"    raise ValueError(\"node '{_esc(node.name)}': pads crop more than the "
                f"input\")")
    lw.emit(f"{y} = {lw.empty(dims)}")
    idx = ", ".join(f"i{k}" for k in range(r))
    if inside:
        body = [f"if {' and '.join(inside)}:", f"    {y}[{idx}] = {x}[{', '.join(src)}]",
                "else:", f"    {y}[{idx}] = {_lit(at['value'])}"]
    else:
        body = [f"{y}[{idx}] = {x}[{', '.join(src)}]"]
    lw.loop_nest(dims, body)
    lw.bind(node.outputs[0], y)


@emitter(Op.GATHER)
def _gather(lw: Lowering, node: Node) -> None:
    x_name, i_name = node.inputs
    r = lw.rank(x_name)
    ax = _axis(node.attrs["axis"], r)
    i_val = lw.graph.value(i_name)
    if i_val.dtype not in ("int32", "int64"):
        raise Unsupported(f"indices of dtype {i_val.dtype}")
    if not lw.is_const(i_name) and i_name not in {v.name for v in lw.graph.inputs}:
        raise Unsupported("computed indices")
    lw.comment(node)
    x = lw.value(x_name)
    idx = lw.value(i_name)
    x3 = _three(lw, x, r, ax, ax)
    d = lw.dims(x, r)
    y = lw.fresh()
    lw.emit(f"{y}_i = {idx}.ravel()")
    lw.emit(f"{y}3, {y}_ok = " + lw.call("gather_ws", x3, f"{y}_i", "ws", "wsp"))
    lw.emit(f"if not {y}_ok:")
    lw.emit(f"    raise ValueError(\"node '{_esc(node.name)}' (Gather): indices out of range\")")
    i_dims = lw.dims(idx, len(i_val.shape))
    lw.emit(f"{y} = {y}3.reshape({lw.tup(d[:ax] + i_dims + d[ax + 1:])})")
    lw.bind(node.outputs[0], y)
