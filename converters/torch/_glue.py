"""Handlers for the non-recurrent aten ops: linear algebra, conv, elementwise, softmax, layout.

Each handler gets the lowering context, the fx node and its arguments with fx nodes replaced
by IR values (`V`) or numpy constants; it emits IR nodes and returns what the aten op returns.
Output shapes come from the exported program's example metadata (`node.meta["val"]`).
"""
from __future__ import annotations

import numpy as np

from edgeseq.errors import UnsupportedModelError
from edgeseq.ops import Op
from edgeseq.converters.torch._lowering import BIG, V, handles


def out_shape(node) -> tuple[int, ...]:
    return tuple(int(d) for d in node.meta["val"].shape)


def _axis(dim: int, rank: int) -> int:
    return dim % rank if rank else 0


def _t(x, base, cx):
    """Transpose of the last two axes; folded for constants."""
    if isinstance(x, V):
        perm = list(range(x.rank))
        perm[-2:] = perm[-2:][::-1]
        shp = tuple(x.shape[p] for p in perm)
        return cx.emit1(Op.TRANSPOSE, [x], base, shp, perm=perm)
    entry = cx._params.get(id(x))
    t = np.ascontiguousarray(np.swapaxes(np.asarray(x), -1, -2))
    if entry is not None and entry[0] is x:
        cx.name_param(t, entry[1] + ".T")
    return t


# ---- linear algebra ---------------------------------------------------------------------------
@handles("aten.linear.default")
def _linear(cx, node, x, w, b=None):
    shp = out_shape(node)
    y = cx.emit1(Op.MATMUL, [x, _t(w, node.name + "_wT", cx)], node.name, shp)
    if b is not None:
        y = cx.emit1(Op.ADD, [y, b], node.name + "_bias", shp)
    return y


@handles("aten.addmm.default")
def _addmm(cx, node, bias, a, b, *, beta=1.0, alpha=1.0):
    return cx.emit1(Op.GEMM, [a, b, bias], node.name, out_shape(node), alpha=alpha, beta=beta)


@handles("aten.mm.default", "aten.matmul.default", "aten.bmm.default")
def _matmul(cx, node, a, b):
    return cx.emit1(Op.MATMUL, [a, b], node.name, out_shape(node))


@handles("aten.t.default")
def _transpose2(cx, node, x):
    return _t(x, node.name, cx)


def _conv1d(cx, node, x, w, b, stride, padding, dilation, groups):
    if x.rank != 3:
        raise UnsupportedModelError(f"Conv1d input must be batched (N, C, L), got {x.shape}")
    k = np.shape(w)[-1]
    (stride,), (dilation,) = tuple(stride), tuple(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            pads = (0, 0)
        else:   # 'same' (stride 1): PyTorch puts the odd extra pad on the right
            total = dilation * (k - 1)
            pads = (total // 2, total - total // 2)
    else:
        (p,) = tuple(padding)
        pads = (p, p)
    return cx.emit1(Op.CONV1D, [x, w, b], node.name, out_shape(node), stride=stride, pads=pads,
                    dilation=dilation, group=groups)


@handles("aten.conv1d.default", "aten.conv1d.padding")
def _conv1d_op(cx, node, x, w, b=None, stride=(1,), padding=(0,), dilation=(1,), groups=1):
    return _conv1d(cx, node, x, w, b, stride, padding, dilation, groups)


@handles("aten.max_pool1d.default")
def _max_pool1d(cx, node, x, kernel_size, stride=(), padding=(0,), dilation=(1,), ceil_mode=False):
    # NOTE: the IR has no pooling op; max over a window of k is k strided Slices folded by
    # max(a, b) = (a + b + |a - b|) / 2, exact up to one rounding of a + b.
    (k,) = tuple(kernel_size)
    s = tuple(stride)[0] if len(stride) else k
    if tuple(padding) not in ((0,), ()) or tuple(dilation) not in ((1,), ()) or ceil_mode:
        raise UnsupportedModelError("max_pool1d: only padding 0, dilation 1, ceil_mode False")
    shp = out_shape(node)
    n_out = shp[-1]
    parts = [cx.emit1(Op.SLICE, [x], f"{node.name}_tap{j}", shp, starts=[j],
                      ends=[j + s * (n_out - 1) + 1], axes=[-1], steps=[s]) for j in range(k)]
    acc = parts[0]
    for j, p in enumerate(parts[1:], 1):
        acc = _extremum(cx, acc, p, f"{node.name}_max{j}", shp, Op.ADD)
    return acc


def _extremum(cx, a, b, base: str, shp, sign: Op):
    """max(a, b) = (a + b + |a - b|) / 2 (sign ADD), min with SUB; the IR has no Max/Min."""
    total = cx.emit1(Op.ADD, [a, b], base + "_sum", shp)
    mag = cx.emit1(Op.ABS, [cx.emit1(Op.SUB, [a, b], base + "_diff", shp)], base + "_abs", shp)
    both = cx.emit1(sign, [total, mag], base + "_twice", shp)
    return cx.emit1(Op.MUL, [both, np.float32(0.5)], base, shp)


@handles("aten.maximum.default", "aten.minimum.default")
def _max_min(cx, node, a, b):
    a, b = _like(a, b)
    sign = Op.ADD if "maximum" in str(node.target) else Op.SUB
    return _extremum(cx, a, b, node.name, out_shape(node), sign)


# ---- normalisation ----------------------------------------------------------------------------
@handles("aten.batch_norm.default")
def _batch_norm(cx, node, x, w, b, mean, var, training, momentum, eps, *_):
    # NOTE: eval-mode batch norm is a per-channel affine map; folded into one Mul and one Add
    if training or any(isinstance(t, V) for t in (w, b, mean, var)) or mean is None:
        raise UnsupportedModelError("batch_norm in training mode or with computed statistics")
    c = x.shape[1]
    scale = (np.ones(c) if w is None else np.asarray(w, np.float64)) / np.sqrt(
        np.asarray(var, np.float64) + eps)
    shift = (np.zeros(c) if b is None else np.asarray(b, np.float64)) - np.asarray(mean) * scale
    bshape = (c,) + (1,) * (x.rank - 2)
    y = cx.emit1(Op.MUL, [x, scale.reshape(bshape).astype(np.float32)], node.name + "_scale", x.shape)
    return cx.emit1(Op.ADD, [y, shift.reshape(bshape).astype(np.float32)], node.name, x.shape)


@handles("aten.layer_norm.default")
def _layer_norm(cx, node, x, normalized_shape, w=None, b=None, eps=1e-5, *_):
    axes = list(range(x.rank - len(normalized_shape), x.rank))
    red = tuple(1 if k in axes else d for k, d in enumerate(x.shape))
    n = node.name
    mean = cx.emit1(Op.REDUCE_MEAN, [x], n + "_mean", red, axes=axes, keepdims=True)
    d = cx.emit1(Op.SUB, [x, mean], n + "_centered", x.shape)
    var = cx.emit1(Op.REDUCE_MEAN, [cx.emit1(Op.MUL, [d, d], n + "_sq", x.shape)], n + "_var",
                   red, axes=axes, keepdims=True)
    std = cx.emit1(Op.SQRT, [cx.emit1(Op.ADD, [var, np.float32(eps)], n + "_var_eps", red)],
                   n + "_std", red)
    y = cx.emit1(Op.DIV, [d, std], n + "_normalized", x.shape)
    if w is not None:
        y = cx.emit1(Op.MUL, [y, _f32(w)], n + "_gain", x.shape)
    if b is not None:
        y = cx.emit1(Op.ADD, [y, _f32(b)], n, x.shape)
    return y


# ---- more activations ---------------------------------------------------------------------------
@handles("aten.gelu.default")
def _gelu(cx, node, x, *, approximate="none"):
    n, shp = node.name, x.shape
    if approximate != "tanh":      # exact: x/2 (1 + erf(x / sqrt 2))
        e = cx.emit1(Op.ERF, [cx.emit1(Op.MUL, [x, np.float32(1 / np.sqrt(2))], n + "_s", shp)],
                     n + "_erf", shp)
        half = cx.emit1(Op.MUL, [x, np.float32(0.5)], n + "_half", shp)
        return cx.emit1(Op.MUL, [half, cx.emit1(Op.ADD, [e, np.float32(1.0)], n + "_1p", shp)],
                        n, shp)
    cube = cx.emit1(Op.MUL, [cx.emit1(Op.MUL, [x, x], n + "_x2", shp), x], n + "_x3", shp)
    inner = cx.emit1(Op.ADD, [x, cx.emit1(Op.MUL, [cube, np.float32(0.044715)], n + "_c3", shp)],
                     n + "_inner", shp)
    t = cx.emit1(Op.TANH, [cx.emit1(Op.MUL, [inner, np.float32(np.sqrt(2 / np.pi))], n + "_s", shp)],
                 n + "_tanh", shp)
    half = cx.emit1(Op.MUL, [x, np.float32(0.5)], n + "_half", shp)
    return cx.emit1(Op.MUL, [half, cx.emit1(Op.ADD, [t, np.float32(1.0)], n + "_1p", shp)], n, shp)


@handles("aten.hardsigmoid.default")
def _hardsigmoid(cx, node, x):
    y = cx.emit1(Op.ADD, [cx.emit1(Op.MUL, [x, np.float32(1 / 6)], node.name + "_s", x.shape),
                          np.float32(0.5)], node.name + "_b", x.shape)
    return cx.emit1(Op.CLIP, [y], node.name, x.shape, min=0.0, max=1.0)


@handles("aten.embedding.default")
def _embedding(cx, node, weight, indices, *_):
    if isinstance(weight, V):
        raise UnsupportedModelError("embedding table must be a constant (parameter)")
    return cx.emit(Op.GATHER, [weight, indices], node.name, [out_shape(node)], {"axis": 0},
                   dtype="float32")[0]


# ---- elementwise ------------------------------------------------------------------------------
def _binary(op: Op):
    def fn(cx, node, a, b, *, alpha=1):
        a, b = _like(a, b)
        if alpha != 1:
            b = cx.emit1(Op.MUL, [b, _like(b, alpha)[1]], node.name + "_alpha", b.shape) \
                if isinstance(b, V) else b * alpha
        return cx.emit1(op, [a, b], node.name, out_shape(node))
    return fn


def _f32(x):
    return x if isinstance(x, V) else np.asarray(x, dtype=np.float32)


def _like(a, b):
    """Constant operands take the dtype of the IR operand (int lengths stay int)."""
    ref = a if isinstance(a, V) else b if isinstance(b, V) else None
    dt = np.dtype(ref.dtype) if ref is not None else np.dtype(np.float32)
    conv = lambda x: x if isinstance(x, V) else np.asarray(x, dtype=dt)
    return conv(a), conv(b)


handles("aten.add.Tensor", "aten.add.Scalar")(_binary(Op.ADD))
handles("aten.sub.Tensor", "aten.sub.Scalar")(_binary(Op.SUB))
handles("aten.mul.Tensor", "aten.mul.Scalar")(_binary(Op.MUL))


@handles("aten.div.Tensor", "aten.div.Scalar")
def _div(cx, node, a, b):
    if any(isinstance(x, V) and x.dtype != "float32" for x in (a, b)):
        raise UnsupportedModelError("integer division (torch true-divides integers to float)")
    return cx.emit1(Op.DIV, [_f32(a), _f32(b)], node.name, out_shape(node))


@handles("aten.rsub.Scalar", "aten.rsub.Tensor")
def _rsub(cx, node, a, b, alpha=1):
    return _binary(Op.SUB)(cx, node, b, a, alpha=alpha)


@handles("aten.pow.Tensor_Scalar")
def _pow(cx, node, a, e):
    return cx.emit1(Op.POW, [a, np.float32(e)], node.name, out_shape(node))


_UNARY = {"relu": Op.RELU, "sigmoid": Op.SIGMOID, "tanh": Op.TANH, "exp": Op.EXP, "log": Op.LOG,
          "neg": Op.NEG, "abs": Op.ABS, "sqrt": Op.SQRT}


def _unary(op: Op):
    def fn(cx, node, x):
        return cx.emit1(op, [x], node.name, out_shape(node))
    return fn


for _name, _op in _UNARY.items():
    handles(f"aten.{_name}.default")(_unary(_op))


@handles("aten.rsqrt.default")
def _rsqrt(cx, node, x):
    r = cx.emit1(Op.SQRT, [x], node.name + "_sqrt", out_shape(node))
    return cx.emit1(Op.DIV, [np.float32(1.0), r], node.name, out_shape(node))


@handles("aten.silu.default")
def _silu(cx, node, x):
    s = cx.emit1(Op.SIGMOID, [x], node.name + "_sigmoid", out_shape(node))
    return cx.emit1(Op.MUL, [x, s], node.name, out_shape(node))


@handles("aten.hardtanh.default", "aten.clamp.default")
def _clip(cx, node, x, lo=None, hi=None):
    lo = float("-inf") if lo is None else float(lo)
    hi = float("inf") if hi is None else float(hi)
    return cx.emit1(Op.CLIP, [x], node.name, out_shape(node), min=lo, max=hi)


@handles("aten.leaky_relu.default")
def _leaky_relu(cx, node, x, slope=0.01):
    return cx.emit1(Op.LEAKY_RELU, [x], node.name, out_shape(node), alpha=slope)


@handles("aten.softmax.int", "aten._softmax.default")
def _softmax(cx, node, x, dim, *_):
    return cx.emit1(Op.SOFTMAX, [x], node.name, out_shape(node), axis=_axis(dim, x.rank))


@handles("aten.log_softmax.int", "aten._log_softmax.default")
def _log_softmax(cx, node, x, dim, *_):
    return cx.emit1(Op.LOG_SOFTMAX, [x], node.name, out_shape(node), axis=_axis(dim, x.rank))


@handles("aten.linalg_vector_norm.default")
def _vector_norm(cx, node, x, ord=2.0, dim=None, keepdim=False, *, dtype=None):
    if ord not in (1, 2) or dim is None or len(dim) != 1:
        raise UnsupportedModelError(f"vector norm with ord={ord}, dim={dim}: only p=1 or 2 "
                                    f"over one dim")
    axis = _axis(dim[0], x.rank)
    tail = _normalize_tail(node)
    if tail is not None and keepdim:
        # F.normalize: x / norm(x).clamp_min(eps).expand_as(x) -> one LpNormalization
        clamp, expand, div = tail
        y = cx.emit1(Op.LP_NORMALIZATION, [x], div.name, out_shape(div), axis=axis, p=int(ord),
                     epsilon=float(clamp.args[1]))
        cx.claimed.update({clamp: y, expand: y, div: y})
        return y
    # a bare norm: sum of |x| or sqrt of the sum of squares
    shp = out_shape(node)
    if ord == 1:
        a = cx.emit1(Op.ABS, [x], node.name + "_abs", x.shape)
        return cx.emit1(Op.REDUCE_SUM, [a], node.name, shp, axes=[axis], keepdims=keepdim)
    sq = cx.emit1(Op.MUL, [x, x], node.name + "_sq", x.shape)
    s = cx.emit1(Op.REDUCE_SUM, [sq], node.name + "_sum", shp, axes=[axis], keepdims=keepdim)
    return cx.emit1(Op.SQRT, [s], node.name, shp)


def _normalize_tail(node):
    """(clamp_min, expand_as, div) when `node` is the norm inside F.normalize, else None."""
    def only_user(n, target):
        users = list(n.users)
        return users[0] if len(users) == 1 and str(users[0].target) == target else None
    clamp = only_user(node, "aten.clamp_min.default")
    expand = clamp and only_user(clamp, "aten.expand_as.default")
    div = expand and only_user(expand, "aten.div.Tensor")
    if div is None or div.args[0] is not node.args[0] or div.args[1] is not expand:
        return None
    return clamp, expand, div


def _reduce(op: Op):
    def fn(cx, node, x, dims=None, keepdim=False, *, dtype=None):
        axes = [_axis(d, x.rank) for d in (dims or range(x.rank))]
        return cx.emit1(op, [x], node.name, out_shape(node), axes=axes, keepdims=keepdim)
    return fn


handles("aten.mean.dim")(_reduce(Op.REDUCE_MEAN))
handles("aten.sum.dim_IntList")(_reduce(Op.REDUCE_SUM))


@handles("aten.dropout.default", "aten.alias.default", "aten.clone.default",
         "aten.contiguous.default", "aten.detach.default", "aten.lift_fresh_copy.default",
         "aten.type_as.default")
def _passthrough(cx, node, x, *args, **kwargs):
    if str(node.target).startswith("aten.dropout") and len(args) > 1 and args[1]:
        raise UnsupportedModelError("dropout in training mode; call module.eval() first")
    return x


@handles("aten._to_copy.default", "aten.to.dtype", "aten.to.device", "aten.to.dtype_layout")
def _to(cx, node, x, *args, **kwargs):
    # NOTE: float casts are identities (the IR computes in float32 throughout); a cast between
    # float and integer becomes a Cast node
    want = _ir_dtype(node.meta["val"].dtype)
    if not isinstance(x, V) or (want == "float32") == (x.dtype == "float32"):
        return x
    return cx.emit1(Op.CAST, [x], node.name, x.shape, to=want)


def _ir_dtype(tdtype) -> str:
    s = str(tdtype).replace("torch.", "")
    return "float32" if s in ("float32", "float64", "float16", "bfloat16") else s


@handles("aten.new_zeros.default", "aten.new_ones.default", "aten.new_full.default",
         "aten.new_empty.default")
def _new_filled(cx, node, x, size, *args, **kwargs):
    # NOTE: `x` lends only its dtype: the result is a constant of the traced size (a size that
    # follows the sequence length shows up as a difference between the two traces)
    kind = str(node.target).split(".")[1]
    fill = {"new_zeros": 0, "new_ones": 1, "new_empty": 0}.get(kind)
    if fill is None:
        fill = args[0] if args else kwargs["fill_value"]
    dtype = np.dtype(str(node.meta["val"].dtype).replace("torch.", ""))
    return np.full([int(d) for d in size], fill, dtype)


@handles("aten._assert_tensor_metadata.default")
def _assert_metadata(cx, node, *args, **kwargs):
    return None     # a trace-time check of dtype/device; nothing to compute


# ---- layout -----------------------------------------------------------------------------------
@handles("aten.view.default", "aten.reshape.default", "aten._unsafe_view.default")
def _reshape(cx, node, x, shape):
    return cx.emit1(Op.RESHAPE, [x], node.name, out_shape(node), shape=[int(d) for d in shape])


@handles("aten.flatten.using_ints")
def _flatten(cx, node, x, start=0, end=-1):
    shp = out_shape(node)
    return cx.emit1(Op.RESHAPE, [x], node.name, shp, shape=list(shp))


@handles("aten.permute.default")
def _permute(cx, node, x, dims):
    perm = [_axis(d, x.rank) for d in dims]
    return cx.emit1(Op.TRANSPOSE, [x], node.name, out_shape(node), perm=perm)


@handles("aten.transpose.int")
def _transpose(cx, node, x, a, b):
    perm = list(range(x.rank))
    a, b = _axis(a, x.rank), _axis(b, x.rank)
    perm[a], perm[b] = perm[b], perm[a]
    return cx.emit1(Op.TRANSPOSE, [x], node.name, out_shape(node), perm=perm)


@handles("aten.cat.default")
def _cat(cx, node, xs, dim=0):
    rank = len(out_shape(node))
    # torch.cat skips legacy empty 1-D tensors of any other rank (Emformer's `mems` without
    # memory is torch.empty(0)); ONNX Concat would reject the rank mismatch
    xs = [x for x in xs if not (rank > 1 and tuple(x.shape) == (0,))] or xs
    return cx.emit1(Op.CONCAT, [_f32(x) for x in xs], node.name, out_shape(node),
                    axis=_axis(dim, rank))


@handles("aten.stack.default")
def _stack(cx, node, xs, dim=0):
    shp = out_shape(node)
    ax = _axis(dim, len(shp))
    one = shp[:ax] + (1,) + shp[ax + 1:]
    parts = [cx.emit1(Op.UNSQUEEZE, [_f32(x)], f"{node.name}_{k}", one, axes=[ax])
             for k, x in enumerate(xs)]
    return cx.emit1(Op.CONCAT, parts, node.name, shp, axis=ax)


@handles("aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default")
def _squeeze(cx, node, x, dims=None):
    if dims is None:
        axes = [k for k, d in enumerate(x.shape) if d == 1]
    else:
        dims = [dims] if isinstance(dims, int) else dims
        # torch leaves a non-1 dim alone where ONNX would fail: keep only true size-1 axes
        axes = [_axis(d, x.rank) for d in dims if x.shape[_axis(d, x.rank)] == 1]
    if not axes:
        return x
    return cx.emit1(Op.SQUEEZE, [x], node.name, out_shape(node), axes=axes)


@handles("aten.unsqueeze.default")
def _unsqueeze(cx, node, x, dim):
    return cx.emit1(Op.UNSQUEEZE, [x], node.name, out_shape(node), axes=[_axis(dim, x.rank + 1)])


@handles("aten.select.int")
def _select(cx, node, x, dim, index):
    ax = _axis(dim, x.rank)
    idx = index % x.shape[ax]
    shp = list(x.shape)
    shp[ax] = 1
    s = cx.emit1(Op.SLICE, [x], node.name + "_slice", tuple(shp), starts=[idx], ends=[idx + 1],
                 axes=[ax], steps=[1])
    return cx.emit1(Op.SQUEEZE, [s], node.name, out_shape(node), axes=[ax])


@handles("aten.slice.Tensor")
def _slice(cx, node, x, dim=0, start=None, end=None, step=1):
    ax = _axis(dim, x.rank)
    n = x.shape[ax]
    start = 0 if start is None else int(start)
    end = BIG if end is None or end >= n else int(end)
    if start == 0 and end == BIG and step == 1:
        return x
    return cx.emit1(Op.SLICE, [x], node.name, out_shape(node), starts=[start], ends=[end],
                    axes=[ax], steps=[step])


def _split(cx, node, x, sizes, dim):
    ax = _axis(dim, x.rank)
    shapes = [tuple(int(d) for d in v.shape) for v in node.meta["val"]]
    return cx.emit(Op.SPLIT, [x], node.name, shapes, {"axis": ax, "split": [s[ax] for s in shapes]})


@handles("aten.split.Tensor", "aten.split_with_sizes.default", "aten.chunk.default")
def _split_op(cx, node, x, sizes, dim=0):
    return _split(cx, node, x, sizes, dim)


@handles("aten.constant_pad_nd.default")
def _pad(cx, node, x, pad, value=0.0):
    # torch lists (begin, end) pairs from the last axis backwards; ONNX wants all begins first
    begins, ends = [0] * x.rank, [0] * x.rank
    for k in range(len(pad) // 2):
        ax = x.rank - 1 - k
        begins[ax], ends[ax] = int(pad[2 * k]), int(pad[2 * k + 1])
    return cx.emit1(Op.PAD, [x], node.name, out_shape(node), pads=begins + ends,
                    mode="constant", value=float(value))
