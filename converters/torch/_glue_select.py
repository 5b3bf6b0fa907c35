"""Handlers for aten comparison, selection and repetition ops: eq/ne/gt/lt/ge/le, logical_not,
where/masked_fill, argmax/argmin, unbind, repeat/tile/expand/repeat_interleave, erf and
division with a rounding mode. Imported by `_glue` (handlers register themselves).
"""
from __future__ import annotations

import numpy as np

from edgeseq.errors import UnsupportedModelError
from edgeseq.ops import Op
from edgeseq.converters.torch._glue import _axis, _like, out_shape
from edgeseq.converters.torch._lowering import V, handles


def _bool(cx, op: Op, inputs: list, base: str, shape) -> V:
    return cx.emit(op, inputs, base, [shape], dtype="bool")[0]


# ---- comparison -------------------------------------------------------------------------------
# ne, ge and le are the negations of eq, lt and gt (exact for every non-NaN operand; a NaN
# compares unequal, so ne(NaN, x) = not eq = True as in PyTorch, but ge/le of NaN differ)
_COMPARE = {"eq": (Op.EQUAL, False), "ne": (Op.EQUAL, True), "gt": (Op.GREATER, False),
            "lt": (Op.LESS, False), "ge": (Op.LESS, True), "le": (Op.GREATER, True)}


def _compare(name: str):
    op, negate = _COMPARE[name]

    def fn(cx, node, a, b):
        a, b = _like(a, b)
        shp = out_shape(node)
        if not negate:
            return _bool(cx, op, [a, b], node.name, shp)
        return _bool(cx, Op.NOT, [_bool(cx, op, [a, b], node.name + "_pos", shp)], node.name, shp)
    return fn


for _name in _COMPARE:
    handles(f"aten.{_name}.Tensor", f"aten.{_name}.Scalar")(_compare(_name))


@handles("aten.logical_not.default", "aten.bitwise_not.default")
def _not(cx, node, x):
    if x.dtype != "bool":
        raise UnsupportedModelError(f"{node.target} of a {x.dtype} tensor (only bool maps to Not)")
    return _bool(cx, Op.NOT, [x], node.name, out_shape(node))


# and / or of bool tensors as a Where (as the ONNX And/Or handlers compose them)
_LOGIC = {"and": False, "or": True}


def _logic(name: str):
    def fn(cx, node, a, b):
        a, b = _like(a, b)
        if any(isinstance(x, V) and x.dtype != "bool" for x in (a, b)):
            raise UnsupportedModelError(f"{node.target} of non-bool tensors (only bool maps "
                                        f"to Where)")
        a, b = (x if isinstance(x, V) else np.asarray(x, np.bool_).reshape(np.shape(x) or (1,))
                for x in (a, b))
        const = np.array([_LOGIC[name]], np.bool_)
        ins = [a, const, b] if _LOGIC[name] else [a, b, const]
        return cx.emit(Op.WHERE, ins, node.name, [out_shape(node)], dtype="bool")[0]
    return fn


for _name in _LOGIC:
    handles(f"aten.__{_name}__.Tensor", f"aten.bitwise_{_name}.Tensor",
            f"aten.logical_{_name}.default")(_logic(_name))


# ---- selection --------------------------------------------------------------------------------
@handles("aten.zeros_like.default", "aten.ones_like.default", "aten.full_like.default",
         "aten.empty_like.default")
def _filled_like(cx, node, x, *args, **kwargs):
    # NOTE: as new_zeros: a constant of the traced shape and result dtype (x lends only those;
    # a size that follows the sequence length shows up as a difference between two traces)
    kind = str(node.target).split(".")[1]
    fill = {"zeros_like": 0, "ones_like": 1, "empty_like": 0}.get(kind)
    if fill is None:
        fill = args[0] if args else kwargs["fill_value"]
    val = node.meta["val"]
    dtype = np.dtype(str(val.dtype).replace("torch.", ""))
    return np.full([int(d) for d in val.shape], fill, dtype)


@handles("aten.gather.default")
def _gather(cx, node, x, dim, index, *, sparse_grad=False):
    """torch.gather with one index per row (`logp.gather(1, token[:, None])`, the score of a
    greedy decoder's choice): ReduceSum(Where(Equal(iota, index), x, 0)) along `dim`, as the
    ONNX GatherElements handler composes it."""
    ax = _axis(dim, x.rank)
    ishape = tuple(index.shape) if isinstance(index, V) else np.shape(index)
    size = x.shape[ax]
    if len(ishape) != x.rank or ishape[ax] != 1 or not isinstance(size, int) or any(
            i != d for k, (i, d) in enumerate(zip(ishape, x.shape)) if k != ax):
        raise UnsupportedModelError(f"gather is supported with one index per row (index of "
                                    f"size 1 along dim {ax}, other dims as the input's); got "
                                    f"input {tuple(x.shape)}, index {tuple(ishape)}")
    iota = np.arange(size, dtype=np.int64).reshape([size if k == ax else 1
                                                    for k in range(x.rank)])
    if not isinstance(index, V):
        index = np.asarray(index, np.int64)
    elif index.dtype != "int64":
        index = cx.emit1(Op.CAST, [index], node.name + "_idx64", index.shape, to="int64")
    hit = _bool(cx, Op.EQUAL, [iota, index], node.name + "_hit", x.shape)
    picked = cx.emit(Op.WHERE, [hit, x, np.zeros(1, np.dtype(x.dtype))], node.name + "_pick",
                     [x.shape], dtype=x.dtype)[0]
    return cx.emit(Op.REDUCE_SUM, [picked], node.name, [out_shape(node)],
                   {"axes": (ax,), "keepdims": True}, dtype=x.dtype)[0]


def _value_like(x, v):
    """A fill value as a constant of the tensor's dtype (an IR value stays as it is)."""
    return v if isinstance(v, V) else np.asarray(v, dtype=np.dtype(x.dtype)).reshape(1)


@handles("aten.where.self", "aten.where.ScalarSelf", "aten.where.ScalarOther",
         "aten.where.Scalar")
def _where(cx, node, cond, a, b):
    ref = a if isinstance(a, V) else b if isinstance(b, V) else None
    dt = ref.dtype if ref is not None else "float32"
    a, b = (x if isinstance(x, V) else np.asarray(x, dtype=dt).reshape(np.shape(x) or (1,))
            for x in (a, b))
    return cx.emit(Op.WHERE, [cond, a, b], node.name, [out_shape(node)], dtype=dt)[0]


@handles("aten.masked_fill.Scalar", "aten.masked_fill.Tensor")
def _masked_fill(cx, node, x, mask, value):
    if isinstance(value, V) and value.rank:
        raise UnsupportedModelError("masked_fill with a non-scalar value tensor")
    return cx.emit(Op.WHERE, [mask, _value_like(x, value), x], node.name, [out_shape(node)],
                   dtype=x.dtype)[0]


def _arg(op: Op):
    def fn(cx, node, x, dim=None, keepdim=False):
        if dim is None:       # over the flattened tensor
            x = cx.emit1(Op.RESHAPE, [x], node.name + "_flat", (int(np.prod(x.shape)),),
                         shape=[-1])
            dim, keepdim = 0, False
        return cx.emit(op, [x], node.name, [out_shape(node)],
                       {"axis": _axis(dim, x.rank), "keepdims": bool(keepdim)}, dtype="int64")[0]
    return fn


handles("aten.argmax.default")(_arg(Op.ARG_MAX))
handles("aten.argmin.default")(_arg(Op.ARG_MIN))


@handles("aten.unbind.int")
def _unbind(cx, node, x, dim=0):
    ax = _axis(dim, x.rank)
    n = x.shape[ax]
    one = x.shape[:ax] + (1,) + x.shape[ax + 1:]
    rest = x.shape[:ax] + x.shape[ax + 1:]
    parts = cx.emit(Op.SPLIT, [x], node.name + "_split", [one] * n, {"axis": ax, "split": [1] * n})
    return [cx.emit1(Op.SQUEEZE, [p], f"{node.name}_{k}", rest, axes=[ax])
            for k, p in enumerate(parts)]


# ---- repetition -------------------------------------------------------------------------------
def _tile(cx, x: V, repeats: list[int], base: str) -> V:
    """x repeated `repeats` times per axis (torch.Tensor.repeat: extra leading axes allowed)."""
    extra = len(repeats) - x.rank
    if extra < 0:
        raise UnsupportedModelError(f"repeat: {len(repeats)} repeats for a rank-{x.rank} tensor")
    if extra:
        x = cx.emit1(Op.RESHAPE, [x], base + "_lead", (1,) * extra + x.shape,
                     shape=[1] * extra + list(x.shape))
    if all(r == 1 for r in repeats):
        return x
    shp = tuple(d * r for d, r in zip(x.shape, repeats))
    return cx.emit1(Op.TILE, [x], base, shp, repeats=[int(r) for r in repeats])


@handles("aten.repeat.default", "aten.tile.default")
def _repeat(cx, node, x, repeats):
    reps = [int(r) for r in repeats]
    if str(node.target).startswith("aten.tile") and len(reps) < x.rank:
        reps = [1] * (x.rank - len(reps)) + reps     # tile pads the repeats on the left
    return _tile(cx, x, reps, node.name)


@handles("aten.expand.default", "aten.expand_as.default")
def _expand(cx, node, x, size, *_):
    target = out_shape(node)
    extra = len(target) - x.rank
    reps = [int(t) for t in target[:extra]] + [
        1 if d == t else int(t) for d, t in zip(x.shape, target[extra:])]
    if any(d != 1 and d != t for d, t in zip(x.shape, target[extra:])):
        raise UnsupportedModelError(f"expand of {x.shape} to {target}")
    return _tile(cx, x, reps, node.name)


@handles("aten.repeat_interleave.self_int")
def _repeat_interleave(cx, node, x, repeats, dim=None, *, output_size=None):
    if isinstance(repeats, (V, np.ndarray)) and np.size(repeats) != 1:
        raise UnsupportedModelError("repeat_interleave with per-element repeats")
    r = int(np.asarray(repeats).reshape(-1)[0]) if not isinstance(repeats, int) else repeats
    if dim is None:
        x = cx.emit1(Op.RESHAPE, [x], node.name + "_flat", (int(np.prod(x.shape)),), shape=[-1])
        dim = 0
    ax = _axis(dim, x.rank)
    # x[..., i, ...] -> [..., i, r copies, ...] -> merge the two axes
    up = x.shape[:ax + 1] + (1,) + x.shape[ax + 1:]
    u = cx.emit1(Op.UNSQUEEZE, [x], node.name + "_u", up, axes=[ax + 1])
    t = _tile(cx, u, [r if k == ax + 1 else 1 for k in range(len(up))], node.name + "_tile")
    shp = out_shape(node)
    return cx.emit1(Op.RESHAPE, [t], node.name, shp, shape=[0] * ax + [-1] + list(shp[ax + 1:]))


# ---- arithmetic -------------------------------------------------------------------------------
@handles("aten.erf.default")
def _erf(cx, node, x):
    return cx.emit1(Op.ERF, [x], node.name, out_shape(node))


@handles("aten.div.Tensor_mode", "aten.div.Scalar_mode")
def _div_mode(cx, node, a, b, *, rounding_mode=None):
    a, b = _like(a, b)
    if rounding_mode is None:
        if any(isinstance(x, V) and x.dtype != "float32" for x in (a, b)):
            raise UnsupportedModelError("integer true division (torch divides integers to float)")
        rounding_mode = "none"
    return cx.emit1(Op.DIV, [a, b], node.name, out_shape(node), rounding=rounding_mode)


@handles("aten.floor_divide.default", "aten.floor_divide.Scalar")
def _floor_divide(cx, node, a, b):
    a, b = _like(a, b)
    return cx.emit1(Op.DIV, [a, b], node.name, out_shape(node), rounding="floor")
