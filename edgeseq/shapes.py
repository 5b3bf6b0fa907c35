"""Shape and dtype inference, one small function per op, registered by op.

Dims are ints or symbols (str). Where a dim depends on a symbol through arithmetic the result
is a fresh symbol "<node>:<k>"; inference never guesses a concrete size.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from edgeseq.errors import ShapeError
from edgeseq.ir import Node, Shape, Value, scale_name
from edgeseq.ops import BINARY, Op, WEIGHT_DTYPES, conv_lstm_geometry, num_directions

_INFER: dict[Op, Callable] = {}
FLOATS = ("float32", "float16", "float64")


def infers(*ops: Op):
    def deco(fn):
        for op in ops:
            if op in _INFER:
                raise AssertionError(f"duplicate shape rule for {op}")
            _INFER[op] = fn
        return fn
    return deco


def infer_node(graph, node: Node, ins: list[Value | None]) -> list[Value]:
    """Output Values of `node` given its input Values (None for absent optional inputs).
    `graph` is the Graph being validated: rules read its constants and weight slots (it is not
    imported here, so that the graph can call this module)."""
    return _INFER[node.op](graph, node, ins)


def _sym(node: Node, k: int) -> str:
    return f"{node.name}:{k}"


def _fmt(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _dims_equal(a, b) -> bool:
    return a == b or isinstance(a, str) or isinstance(b, str)


def _expect(cond: bool, msg: str) -> None:
    if not cond:
        raise ShapeError(msg)


def _const(graph, name: str) -> np.ndarray | None:
    return graph.constants.get(name) if name else None


# ---- recurrent ------------------------------------------------------------------------------
def _check_weight(graph, node: Node, slot: str, expected: Shape) -> None:
    w = graph.weight(node, slot)
    if w is None:
        return
    _expect(str(w.dtype) in WEIGHT_DTYPES if slot.startswith("w_") else str(w.dtype) == "float32",
            f"weight '{slot}': dtype {w.dtype} not allowed "
            f"(weights: {WEIGHT_DTYPES}; biases and gains: float32)")
    _expect(len(w.shape) == len(expected) and all(_dims_equal(a, b) for a, b in zip(w.shape, expected)),
            f"weight '{slot}': expected shape {_fmt(expected)}, got {_fmt(w.shape)}")
    if w.dtype == np.int8:
        sc = graph.scale(node, slot)
        rows = tuple(w.shape[:-1])
        _expect(sc is not None,
                f"weight '{slot}' is int8 but has no '{scale_name(node.weights[slot])}'")
        _expect(tuple(sc.shape) == rows and sc.dtype == np.float32,
                f"scale of weight '{slot}': expected {_fmt(rows)} float32, got "
                f"{_fmt(sc.shape)} {sc.dtype}")


def _check_run_inputs(ins, n, states: tuple) -> None:
    """A recurrent node's initial states ((input index, expected shape), ...) and its
    sequence_lens ([n] integers), where given."""
    for k, want in states:
        if k < len(ins) and ins[k] is not None:
            got = ins[k]
            _expect(len(got.shape) == len(want) and
                    all(_dims_equal(u, w) for u, w in zip(got.shape, want)),
                    f"initial state '{got.name}': expected {_fmt(want)}, got {_fmt(got.shape)}")
    if len(ins) > 1 and ins[1] is not None:
        sl = ins[1]
        _expect(sl.dtype in ("int32", "int64"), f"sequence_lens: expected int32/int64, got {sl.dtype}")
        _expect(len(sl.shape) == 1 and _dims_equal(sl.shape[0], n),
                f"sequence_lens: expected ({n},), got {_fmt(sl.shape)}")


@infers(Op.LSTM, Op.GRU, Op.RNN)
def _recurrent(graph, node: Node, ins):
    a = node.attrs
    x = ins[0]
    _expect(len(x.shape) == 3, f"input x: expected rank 3, got {_fmt(x.shape)}")
    _expect(x.dtype in FLOATS, f"input x: expected a float dtype, got {x.dtype}")
    d = num_directions(a)
    h = a["hidden_size"]
    _expect(h > 0, f"hidden_size must be positive, got {h}")
    n_gates = {Op.LSTM: 4, Op.GRU: 3, Op.RNN: 1}[node.op]
    p = a.get("proj_size", 0) or h
    if a["batch_first"]:
        n, t, i = x.shape
    else:
        t, n, i = x.shape
    w_x = graph.weight(node, "w_x")
    _expect(w_x is not None and w_x.ndim == 3, "weight 'w_x' must be rank 3 [D, G*H, I]")
    _check_weight(graph, node, "w_x", (d, n_gates * h, i))
    factored = "w_h_u" in node.weights or "w_h_v" in node.weights
    _expect(factored != ("w_h" in node.weights),
            "exactly one of 'w_h' or the factor pair 'w_h_u'/'w_h_v' must be given")
    if factored:
        u, v = graph.weight(node, "w_h_u"), graph.weight(node, "w_h_v")
        _expect(u is not None and v is not None, "factored recurrent weight needs both w_h_u and w_h_v")
        r = u.shape[-1]
        _check_weight(graph, node, "w_h_u", (d, n_gates * h, r))
        _check_weight(graph, node, "w_h_v", (d, r, p))
    else:
        _check_weight(graph, node, "w_h", (d, n_gates * h, p))
    if node.op is Op.LSTM:
        _check_weight(graph, node, "b", (d, 4 * h))
        _check_weight(graph, node, "peephole", (d, 3, h))
        _check_weight(graph, node, "layer_norm", (d, 4, h))
        has_proj = "w_proj" in node.weights
        _expect(has_proj == (a["proj_size"] > 0),
                f"proj_size={a['proj_size']} but w_proj is {'present' if has_proj else 'absent'}")
        _expect("b_proj" not in node.weights or has_proj, "b_proj given without w_proj")
        _check_weight(graph, node, "w_proj", (d, p, h))
        _check_weight(graph, node, "b_proj", (d, p))
        _expect(a["cell_clip"] >= 0 and a["proj_clip"] >= 0, "cell_clip and proj_clip must be >= 0")
    elif node.op is Op.GRU:
        _check_weight(graph, node, "b_x", (d, 3 * h))
        _check_weight(graph, node, "b_h", (d, 3 * h))
    else:
        _check_weight(graph, node, "b", (d, h))
    _expect(a["gate_clip"] >= 0, "gate_clip must be >= 0")
    state = (n, d, p) if a["batch_first"] else (d, n, p)
    cell = (n, d, h) if a["batch_first"] else (d, n, h)
    _check_run_inputs(ins, n, ((2, state), (3, cell)))
    y = (n, t, d, p) if a["batch_first"] else (t, d, n, p)
    outs = [Value("y", x.dtype, y), Value("y_h", x.dtype, state)]
    if node.op is Op.LSTM:
        outs.append(Value("y_c", x.dtype, cell))
    return outs


@infers(Op.CONV_LSTM)
def _conv_lstm(graph, node: Node, ins):
    a = node.attrs
    x = ins[0]
    w_x, w_h = graph.weight(node, "w_x"), graph.weight(node, "w_h")
    _expect(w_x is not None and w_x.ndim in (4, 5) and w_h is not None and w_h.ndim == w_x.ndim,
            "weights 'w_x' and 'w_h' must both be rank 4 [D, 4H, C, K] (1-D) or rank 5 "
            "[D, 4H, C, K1, K2] (2-D convolutions)")
    s = w_x.ndim - 3
    _expect(len(x.shape) == 3 + s, f"input x: expected rank {3 + s} (time, batch, channels, "
                                   f"{s} spatial axes), got {_fmt(x.shape)}")
    _expect(x.dtype in FLOATS, f"input x: expected a float dtype, got {x.dtype}")
    d, h = num_directions(a), a["hidden_size"]
    _expect(h > 0, f"hidden_size must be positive, got {h}")
    _expect(a["gate_clip"] == 0, "gate_clip is not defined for ConvLSTM (must be 0)")
    try:
        begin, end, dil = conv_lstm_geometry(a, s)
    except ValueError as e:
        raise ShapeError(str(e)) from None
    n, t, c = (x.shape[:3] if a["batch_first"] else (x.shape[1], x.shape[0], x.shape[2]))
    k_x, k_h = w_x.shape[3:], w_h.shape[3:]
    _check_weight(graph, node, "w_x", (d, 4 * h, c) + k_x)
    _check_weight(graph, node, "w_h", (d, 4 * h, h) + k_h)
    _check_weight(graph, node, "b", (d, 4 * h))
    out = []
    for length, k, p0, p1, dk in zip(x.shape[3:], k_x, begin, end, dil):
        if isinstance(length, int):
            out.append(length + p0 + p1 - dk * (k - 1))
            _expect(out[-1] > 0, f"output size {out[-1]} <= 0 along a spatial axis")
        else:
            _expect(p0 + p1 == dk * (k - 1), "a symbolic spatial size needs 'same' input "
                                             "padding (pads sum to dilation * (K_x - 1))")
            out.append(length)
    out = tuple(out)
    _check_weight(graph, node, "peephole", (d, 3, h) + out)
    state = (n, d, h) + out if a["batch_first"] else (d, n, h) + out
    _check_run_inputs(ins, n, ((2, state), (3, state)))
    y = (n, t, d, h) + out if a["batch_first"] else (t, d, n, h) + out
    return [Value("y", x.dtype, y), Value("y_h", x.dtype, state), Value("y_c", x.dtype, state)]


@infers(Op.SRU)
def _sru(graph, node: Node, ins):
    a = node.attrs
    x = ins[0]
    _expect(len(x.shape) == 3, f"input x: expected rank 3, got {_fmt(x.shape)}")
    _expect(x.dtype in FLOATS, f"input x: expected a float dtype, got {x.dtype}")
    d, h = num_directions(a), a["hidden_size"]
    _expect(h > 0, f"hidden_size must be positive, got {h}")
    _expect(a["gate_clip"] == 0, "gate_clip is not defined for SRU (must be 0)")
    n, t, i = x.shape if a["batch_first"] else (x.shape[1], x.shape[0], x.shape[2])
    w_x, proj = graph.weight(node, "w_x"), graph.weight(node, "w_x_proj")
    _expect(w_x is not None and w_x.ndim == 3, "weight 'w_x' must be rank 3 [D, G*H, I]")
    _expect(proj is None or proj.ndim == 3, "weight 'w_x_proj' must be rank 3 [1, I', I]")
    i_gemm = i if proj is None else proj.shape[1]
    _check_weight(graph, node, "w_x_proj", (1, i_gemm, i))
    gates = 4 if a["skip"] == "projected" else 3
    _check_weight(graph, node, "w_x", (d, gates * h, i_gemm))
    _check_weight(graph, node, "v", (d, 2, h))
    _check_weight(graph, node, "b", (d, 2, h))
    if a["skip"] == "input":
        _expect(_dims_equal(i, d * h), f"skip 'input' adds x to the output: input size {i} "
                                       f"must equal directions x hidden_size = {d * h}")
    feat = {"before": i, "after": d * h}.get(a["layer_norm"])
    _expect((feat is None) == ("ln_gain" not in node.weights) and
            ("ln_bias" not in node.weights or feat is not None),
            f"layer_norm='{a['layer_norm']}' but ln_gain is "
            f"{'present' if 'ln_gain' in node.weights else 'absent'}")
    if feat is not None:
        _check_weight(graph, node, "ln_gain", (feat,))
        _check_weight(graph, node, "ln_bias", (feat,))
    state = (n, d, h) if a["batch_first"] else (d, n, h)
    _check_run_inputs(ins, n, ((2, state),))
    y = (n, t, d * h) if a["batch_first"] else (t, n, d * h)
    return [Value("y", x.dtype, y), Value("y_c", x.dtype, state)]


# ---- glue -----------------------------------------------------------------------------------
def broadcast(a: Shape, b: Shape, node: Node | None = None) -> Shape:
    out = []
    for k, (u, v) in enumerate(zip(((1,) * (len(b) - len(a)) + tuple(a)),
                                   ((1,) * (len(a) - len(b)) + tuple(b)))):
        if u == v:
            out.append(u)
        elif u == 1:
            out.append(v)
        elif v == 1:
            out.append(u)
        elif isinstance(u, str) and isinstance(v, int):
            out.append(v)
        elif isinstance(v, str) and isinstance(u, int):
            out.append(u)
        elif isinstance(u, str) and isinstance(v, str):
            out.append(u)
        else:
            raise ShapeError(f"shapes {_fmt(a)} and {_fmt(b)} do not broadcast")
    return tuple(out)


@infers(*BINARY)
def _binary(graph, node, ins):
    a, b = ins
    _expect(a.dtype == b.dtype, f"operand dtypes differ: {a.dtype} vs {b.dtype}")
    return [Value("y", a.dtype, broadcast(a.shape, b.shape, node))]


@infers(Op.RELU, Op.SIGMOID, Op.TANH, Op.SQRT, Op.EXP, Op.LOG, Op.NEG, Op.ABS, Op.IDENTITY,
        Op.CLIP, Op.LEAKY_RELU, Op.SOFTMAX, Op.LOG_SOFTMAX, Op.LP_NORMALIZATION)
def _same(graph, node, ins):
    x = ins[0]
    if node.op in (Op.SOFTMAX, Op.LOG_SOFTMAX, Op.LP_NORMALIZATION):
        _axis(node.attrs["axis"], len(x.shape))
    return [Value("y", x.dtype, x.shape)]


@infers(Op.CAST)
def _cast(graph, node, ins):
    return [Value("y", node.attrs["to"], ins[0].shape)]


def _axis(axis: int, rank: int) -> int:
    _expect(-rank <= axis < rank, f"axis {axis} out of range for rank {rank}")
    return axis % rank


@infers(Op.MATMUL)
def _matmul(graph, node, ins):
    a, b = ins
    _expect(len(a.shape) >= 1 and len(b.shape) >= 1, "MatMul operands must have rank >= 1")
    sa = a.shape if len(a.shape) > 1 else (1,) + tuple(a.shape)
    sb = b.shape if len(b.shape) > 1 else tuple(b.shape) + (1,)
    _expect(_dims_equal(sa[-1], sb[-2]),
            f"inner dims differ: a {_fmt(a.shape)} @ b {_fmt(b.shape)}")
    batch = broadcast(sa[:-2], sb[:-2])
    out = batch + (sa[-2], sb[-1])
    if len(a.shape) == 1:
        out = out[:-2] + out[-1:]
    if len(b.shape) == 1:
        out = out[:-1]
    return [Value("y", a.dtype, out)]


@infers(Op.GEMM)
def _gemm(graph, node, ins):
    a, b = ins[0], ins[1]
    _expect(len(a.shape) == 2 and len(b.shape) == 2, "Gemm operands must be rank 2")
    m, k = (a.shape[::-1] if node.attrs["trans_a"] else a.shape)
    k2, n = (b.shape[::-1] if node.attrs["trans_b"] else b.shape)
    _expect(_dims_equal(k, k2), f"inner dims differ: {k} vs {k2}")
    if len(ins) > 2 and ins[2] is not None:
        broadcast(ins[2].shape, (m, n))
    return [Value("y", a.dtype, (m, n))]


@infers(Op.CONV1D)
def _conv1d(graph, node, ins):
    x, w = ins[0], ins[1]
    a = node.attrs
    _expect(len(x.shape) == 3, f"x: expected (N, C, L), got {_fmt(x.shape)}")
    _expect(len(w.shape) == 3, f"w: expected (O, C/group, K), got {_fmt(w.shape)}")
    n, c, length = x.shape
    o, cg, k = w.shape
    _expect(a["stride"] >= 1 and a["dilation"] >= 1 and a["group"] >= 1,
            f"stride, dilation and group must be >= 1, got {a['stride']}, {a['dilation']}, "
            f"{a['group']}")
    _expect(len(a["pads"]) == 2, f"pads: expected 2 values (begin, end), got {list(a['pads'])}")
    _expect(_dims_equal(c, cg * a["group"]),
            f"channels: x has {c}, w expects {cg} x group {a['group']}")
    if w.dtype == "int8":       # quant int8: w ≈ scale[..., None] * q, per output channel
        sc = graph.constant_scale(node.inputs[1])   # (or (1, 1): one scale for the tensor)
        _expect(sc is not None and sc.dtype == np.float32
                and tuple(sc.shape) in ((o, 1), (o, cg), (1, 1)),
                f"w is int8: expected '{scale_name(node.inputs[1])}' float32 of shape "
                f"{_fmt((o, 1))}, {_fmt((o, cg))} or (1, 1), got "
                f"{'none' if sc is None else _fmt(sc.shape) + ' ' + str(sc.dtype)}")
    if len(ins) > 2 and ins[2] is not None:
        _expect(tuple(ins[2].shape) == (o,), f"bias: expected ({o},), got {_fmt(ins[2].shape)}")
    if isinstance(length, int):
        span = a["dilation"] * (k - 1) + 1
        out_len = (length + a["pads"][0] + a["pads"][1] - span) // a["stride"] + 1
        _expect(out_len > 0, f"output length {out_len} <= 0")
    else:
        out_len = _sym(node, 2)
    return [Value("y", x.dtype, (n, o, out_len))]


@infers(Op.REDUCE_MEAN, Op.REDUCE_SUM)
def _reduce(graph, node, ins):
    x = ins[0]
    r = len(x.shape)
    axes = {_axis(ax, r) for ax in node.attrs["axes"]} if node.attrs["axes"] else set(range(r))
    if node.attrs["keepdims"]:
        out = tuple(1 if k in axes else d for k, d in enumerate(x.shape))
    else:
        out = tuple(d for k, d in enumerate(x.shape) if k not in axes)
    return [Value("y", x.dtype, out)]


@infers(Op.CONCAT)
def _concat(graph, node, ins):
    _expect(all(v is not None for v in ins), "Concat inputs must all be present")
    r = len(ins[0].shape)
    ax = _axis(node.attrs["axis"], r)
    total: int | str = 0
    for v in ins:
        _expect(len(v.shape) == r, f"input ranks differ: {[_fmt(u.shape) for u in ins]}")
        _expect(v.dtype == ins[0].dtype, "Concat input dtypes differ")
        for k in range(r):
            if k != ax:
                _expect(_dims_equal(v.shape[k], ins[0].shape[k]),
                        f"dim {k} differs: {[_fmt(u.shape) for u in ins]}")
        d = v.shape[ax]
        total = total + d if isinstance(total, int) and isinstance(d, int) else _sym(node, ax)
    out = list(ins[0].shape)
    out[ax] = total
    return [Value("y", ins[0].dtype, tuple(out))]


@infers(Op.SPLIT)
def _split(graph, node, ins):
    x = ins[0]
    ax = _axis(node.attrs["axis"], len(x.shape))
    sizes = node.attrs["split"]
    _expect(len(sizes) == len(node.outputs),
            f"split has {len(sizes)} sizes but {len(node.outputs)} outputs")
    if isinstance(x.shape[ax], int):
        _expect(sum(sizes) == x.shape[ax], f"split sizes {list(sizes)} do not sum to {x.shape[ax]}")
    outs = []
    for s in sizes:
        sh = list(x.shape)
        sh[ax] = s
        outs.append(Value("y", x.dtype, tuple(sh)))
    return outs


def slice_bounds(dim: int, start: int, end: int, step: int) -> tuple[int, int, int]:
    """ONNX Slice clamping, as Python slice indices."""
    _expect(step != 0, "Slice step must not be 0")
    s = slice(start, end, step).indices(dim)
    return s


@infers(Op.SLICE)
def _slice(graph, node, ins):
    x = ins[0]
    a = node.attrs
    r = len(x.shape)
    _expect(len(a["starts"]) == len(a["ends"]) == len(a["axes"]) == len(a["steps"]),
            "starts, ends, axes and steps must have the same length")
    out = list(x.shape)
    for st, en, ax, sp in zip(a["starts"], a["ends"], a["axes"], a["steps"]):
        k = _axis(ax, r)
        if isinstance(out[k], int):
            out[k] = len(range(*slice_bounds(out[k], st, en, sp)))
        else:
            big = 2 ** 62
            if st == 0 and sp == 1 and en >= big // 2:
                continue
            out[k] = _sym(node, k)
    return [Value("y", x.dtype, tuple(out))]


@infers(Op.TRANSPOSE)
def _transpose(graph, node, ins):
    x = ins[0]
    perm = node.attrs["perm"] or tuple(reversed(range(len(x.shape))))
    _expect(sorted(perm) == list(range(len(x.shape))),
            f"perm {list(perm)} is not a permutation of rank {len(x.shape)}")
    node.attrs["perm"] = tuple(perm)
    return [Value("y", x.dtype, tuple(x.shape[p] for p in perm))]


@infers(Op.RESHAPE)
def _reshape(graph, node, ins):
    x = ins[0]
    target = list(node.attrs["shape"])
    _expect(target.count(-1) <= 1, f"shape {target} has more than one -1")
    out: list = []
    for k, d in enumerate(target):
        if d == 0:
            _expect(k < len(x.shape), f"shape {target}: 0 at position {k} beyond input rank")
            out.append(x.shape[k])
        else:
            out.append(d)
    if -1 in out:
        known = [d for d in out if d != -1]
        if all(isinstance(d, int) for d in x.shape) and all(isinstance(d, int) for d in known):
            total = int(np.prod(x.shape))
            rest = int(np.prod(known)) if known else 1
            _expect(rest > 0 and total % rest == 0, f"cannot reshape {_fmt(x.shape)} to {target}")
            out[out.index(-1)] = total // rest
        else:
            # cancel symbols that appear on both sides; what is left decides the -1
            sym_in = [d for d in x.shape if isinstance(d, str)]
            for d in known:
                if isinstance(d, str) and d in sym_in:
                    sym_in.remove(d)
            sym_out = [d for d in known if isinstance(d, str) and d not in x.shape]
            kn_in = int(np.prod([d for d in x.shape if isinstance(d, int)] or [1]))
            kn_out = int(np.prod([d for d in known if isinstance(d, int)] or [1]))
            k = out.index(-1)
            if not sym_in and not sym_out and kn_out and kn_in % kn_out == 0:
                out[k] = kn_in // kn_out
            elif len(sym_in) == 1 and not sym_out and kn_in == kn_out:
                out[k] = sym_in[0]
            else:
                out[k] = _sym(node, k)
    elif all(isinstance(d, int) for d in x.shape) and all(isinstance(d, int) for d in out):
        _expect(int(np.prod(x.shape)) == int(np.prod(out)),
                f"cannot reshape {_fmt(x.shape)} to {_fmt(out)}")
    return [Value("y", x.dtype, tuple(out))]


@infers(Op.SQUEEZE)
def _squeeze(graph, node, ins):
    x = ins[0]
    r = len(x.shape)
    axes = {_axis(a, r) for a in node.attrs["axes"]} if node.attrs["axes"] else \
        {k for k, d in enumerate(x.shape) if d == 1}
    for k in axes:
        _expect(x.shape[k] == 1 or isinstance(x.shape[k], str),
                f"cannot squeeze axis {k} of size {x.shape[k]}")
    return [Value("y", x.dtype, tuple(d for k, d in enumerate(x.shape) if k not in axes))]


@infers(Op.UNSQUEEZE)
def _unsqueeze(graph, node, ins):
    x = ins[0]
    r = len(x.shape) + len(node.attrs["axes"])
    axes = sorted(_axis(a, r) for a in node.attrs["axes"])
    out = list(x.shape)
    for k in axes:
        out.insert(k, 1)
    return [Value("y", x.dtype, tuple(out))]


@infers(Op.PAD)
def _pad(graph, node, ins):
    x = ins[0]
    pads = node.attrs["pads"]
    r = len(x.shape)
    _expect(len(pads) == 2 * r, f"pads: expected {2 * r} values, got {len(pads)}")
    out = tuple(d + pads[k] + pads[k + r] if isinstance(d, int) else
                (d if pads[k] == pads[k + r] == 0 else _sym(node, k))
                for k, d in enumerate(x.shape))
    return [Value("y", x.dtype, out)]


@infers(Op.GATHER)
def _gather(graph, node, ins):
    x, idx = ins
    _expect(idx.dtype in ("int32", "int64"), f"indices: expected int32/int64, got {idx.dtype}")
    ax = _axis(node.attrs["axis"], len(x.shape))
    out = tuple(x.shape[:ax]) + tuple(idx.shape) + tuple(x.shape[ax + 1:])
    return [Value("y", x.dtype, out)]


# ---- spatial, selection, comparison ---------------------------------------------------------
def pool_params(attrs: dict) -> tuple:
    """(kernel, strides, dilations, pads) of a MaxPool node with the defaults filled."""
    kernel = tuple(attrs["kernel_shape"])
    k = len(kernel)
    return (kernel, tuple(attrs["strides"]) or (1,) * k, tuple(attrs["dilations"]) or (1,) * k,
            tuple(attrs["pads"]) or (0,) * (2 * k))


def window_count(size: int, k: int, stride: int, dil: int, pad_begin: int, pad_end: int,
                 ceil_mode: bool = False) -> int:
    """Windows along one axis (ONNX/PyTorch; with ceil_mode a last partial window counts
    when it starts inside the input or the begin padding)."""
    span = dil * (k - 1) + 1
    room = size + pad_begin + pad_end - span
    if not ceil_mode:
        return room // stride + 1
    n = -(-room // stride) + 1
    return n - 1 if (n - 1) * stride >= size + pad_begin else n


def _window_out(node: Node, size, k: int, stride: int, dil: int, pads: tuple, axis: int,
                ceil_mode: bool = False):
    """Output size along one axis (a fresh symbol for a symbolic size)."""
    _expect(stride >= 1 and dil >= 1, f"strides and dilations must be >= 1, got {stride}, {dil}")
    if not isinstance(size, int):
        return _sym(node, axis)
    n = window_count(size, k, stride, dil, pads[0], pads[1], ceil_mode)
    _expect(n > 0, f"axis {axis}: window {dil * (k - 1) + 1} larger than the padded size "
                   f"{size + pads[0] + pads[1]}")
    return n


@infers(Op.CONV2D)
def _conv2d(graph, node, ins):
    x, w = ins[0], ins[1]
    a = node.attrs
    _expect(len(x.shape) == 4, f"x: expected (N, C, H, W), got {_fmt(x.shape)}")
    _expect(len(w.shape) == 4, f"w: expected (O, C/group, kH, kW), got {_fmt(w.shape)}")
    _expect(len(a["strides"]) == 2 and len(a["dilations"]) == 2 and len(a["pads"]) == 4,
            "strides and dilations need 2 values, pads 4 (top, left, bottom, right)")
    _expect(a["group"] >= 1 and isinstance(w.shape[0], int) and w.shape[0] % a["group"] == 0,
            f"group {a['group']} must divide the {w.shape[0]} output channels")
    _expect(_dims_equal(x.shape[1], w.shape[1] * a["group"]),
            f"channels: x has {x.shape[1]}, w expects {w.shape[1]} x group {a['group']}")
    if len(ins) > 2 and ins[2] is not None:
        _expect(tuple(ins[2].shape) == (w.shape[0],),
                f"bias: expected ({w.shape[0]},), got {_fmt(ins[2].shape)}")
    out = [_window_out(node, x.shape[2 + j], w.shape[2 + j], a["strides"][j], a["dilations"][j],
                       (a["pads"][j], a["pads"][j + 2]), 2 + j) for j in range(2)]
    return [Value("y", x.dtype, (x.shape[0], w.shape[0], *out))]


@infers(Op.MAX_POOL)
def _max_pool(graph, node, ins):
    x = ins[0]
    kernel, strides, dil, pads = pool_params(node.attrs)
    k = len(kernel)
    _expect(1 <= k <= len(x.shape), f"kernel_shape {list(kernel)} does not fit rank {len(x.shape)}")
    _expect(len(strides) == k and len(dil) == k and len(pads) == 2 * k,
            f"strides, dilations ({k} values) and pads ({2 * k}) must match kernel_shape")
    _expect(all(p >= 0 for p in pads) and all(pads[j] < kernel[j] * dil[j] for j in range(k))
            and all(pads[j + k] < kernel[j] * dil[j] for j in range(k)),
            f"pads {list(pads)} must be >= 0 and smaller than the window")
    lead = len(x.shape) - k
    out = [_window_out(node, x.shape[lead + j], kernel[j], strides[j], dil[j],
                       (pads[j], pads[j + k]), lead + j, node.attrs["ceil_mode"]) for j in range(k)]
    return [Value("y", x.dtype, tuple(x.shape[:lead]) + tuple(out))]


@infers(Op.ARG_MAX, Op.ARG_MIN)
def _arg_extremum(graph, node, ins):
    x = ins[0]
    ax = _axis(node.attrs["axis"], len(x.shape))
    out = tuple(1 if k == ax else d for k, d in enumerate(x.shape)) if node.attrs["keepdims"] \
        else tuple(d for k, d in enumerate(x.shape) if k != ax)
    return [Value("y", "int64", out)]


@infers(Op.EQUAL, Op.GREATER, Op.LESS)
def _compare(graph, node, ins):
    a, b = ins
    _expect(a.dtype == b.dtype, f"operand dtypes differ: {a.dtype} vs {b.dtype}")
    return [Value("y", "bool", broadcast(a.shape, b.shape, node))]


@infers(Op.NOT)
def _not(graph, node, ins):
    _expect(ins[0].dtype == "bool", f"x: expected bool, got {ins[0].dtype}")
    return [Value("y", "bool", ins[0].shape)]


@infers(Op.ERF)
def _erf(graph, node, ins):
    _expect(ins[0].dtype in FLOATS, f"x: expected a float dtype, got {ins[0].dtype}")
    return [Value("y", ins[0].dtype, ins[0].shape)]


@infers(Op.WHERE)
def _where(graph, node, ins):
    c, a, b = ins
    _expect(c.dtype == "bool", f"condition: expected bool, got {c.dtype}")
    _expect(a.dtype == b.dtype, f"operand dtypes differ: {a.dtype} vs {b.dtype}")
    return [Value("y", a.dtype, broadcast(broadcast(c.shape, a.shape, node), b.shape, node))]


@infers(Op.TILE)
def _tile(graph, node, ins):
    x, reps = ins[0], node.attrs["repeats"]
    _expect(len(reps) == len(x.shape) and all(r >= 1 for r in reps),
            f"repeats {list(reps)}: expected {len(x.shape)} values >= 1")
    out = tuple(d * r if isinstance(d, int) else (d if r == 1 else _sym(node, k))
                for k, (d, r) in enumerate(zip(x.shape, reps)))
    return [Value("y", x.dtype, out)]


@infers(Op.LOOP)
def _loop(graph, node, ins):
    from edgeseq.loop_op import infer    # validates the body, a Graph (not imported here)
    return infer(graph, node, ins)
