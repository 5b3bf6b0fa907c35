"""ONNX normalisation and the elementwise ops written around it: LayerNormalization
(opset 17), BatchNormalization (inference; constant or computed statistics), GlobalAveragePool,
ReduceSumSquare, Reciprocal, Erf. Each becomes existing IR ops (ReduceMean, Sub, Mul, Sqrt,
Div, Add)."""
from __future__ import annotations

import numpy as np

from edgeseq.ops import Op
from edgeseq.converters.onnx.context import Context, Unsupported
from edgeseq.converters.onnx.registry import handler


def _scalar(ctx: Context, like: str, value: float, base: str) -> str:
    dt = ctx.dtype(like) or "float32"
    return ctx.add_const(base, np.full((1,), value, dtype=dt))


def _rank(ctx: Context, name: str) -> int:
    shp = ctx.shape(name)
    if shp is None:
        raise Unsupported(f"the rank of '{name}' is unknown; give its shape with --shape")
    return len(shp)


def layer_norm(ctx: Context, x: str, y: str, axes: tuple, eps: float, scale: str | None,
               bias: str | None) -> None:
    """y = (x - mean) / sqrt(var + eps) * scale + bias over `axes` (IR ops only)."""
    t = lambda s: ctx.tmp(f"{y}/{s}")
    mean, d, sq, var, ve, std = t("mean"), t("centered"), t("sq"), t("var"), t("var_eps"), t("std")
    ctx.emit(Op.REDUCE_MEAN, [x], [mean], {"axes": axes, "keepdims": True}, suffix="_mean")
    ctx.emit(Op.SUB, [x, mean], [d], suffix="_center")
    ctx.emit(Op.MUL, [d, d], [sq], suffix="_sq")
    ctx.emit(Op.REDUCE_MEAN, [sq], [var], {"axes": axes, "keepdims": True}, suffix="_var")
    ctx.emit(Op.ADD, [var, _scalar(ctx, x, eps, f"{y}/eps")], [ve], suffix="_eps")
    ctx.emit(Op.SQRT, [ve], [std], suffix="_std")
    steps = [(Op.DIV, std)] + [(op, v) for op, v in ((Op.MUL, scale), (Op.ADD, bias)) if v]
    cur = d
    for k, (op, v) in enumerate(steps):
        out = y if k == len(steps) - 1 else t(f"step{k}")
        ctx.emit(op, [cur, v], [out], suffix=f"_{op.value.lower()}")
        cur = out


@handler("LayerNormalization", since=17)
def layer_normalization(ctx: Context, node) -> None:
    a = ctx.attrs(node, {"axis", "epsilon", "stash_type"})
    if any(o for o in node.output[1:]):
        raise Unsupported("LayerNormalization's Mean / InvStdDev outputs are not supported")
    x = ctx.inp(node, 0)
    r = _rank(ctx, node.input[0])
    axis = int(a.get("axis", -1)) % r
    layer_norm(ctx, x, node.output[0], tuple(range(axis, r)), float(a.get("epsilon", 1e-5)),
               ctx.inp(node, 1), ctx.inp(node, 2) or None)


@handler("BatchNormalization", since=1)
def batch_normalization(ctx: Context, node) -> None:
    # NOTE: inference form: a per-channel affine map, folded into one Mul and one Add
    a = ctx.attrs(node, {"epsilon", "momentum", "training_mode", "spatial", "is_test",
                         "consumed_inputs"})
    if a.get("training_mode", 0) or any(o for o in node.output[1:]):
        raise Unsupported("BatchNormalization in training mode (running statistics as outputs)")
    r = _rank(ctx, node.input[0])
    eps = float(a.get("epsilon", 1e-5))
    if len(node.input) < 5 or not all(node.input[:5]):
        raise Unsupported("BatchNormalization needs X, scale, B, input_mean and input_var")
    if any(ctx.const(node.input[k]) is None for k in range(1, 5)):
        _batch_norm_computed(ctx, node, r, eps)
        return
    c = ctx.need_consts(node, {1: "scale", 2: "B", 3: "input_mean", 4: "input_var"})
    scale, b, mean, var = (np.asarray(c[k], np.float64) for k in (1, 2, 3, 4))
    mul = scale / np.sqrt(var + eps)
    add = b - mean * mul
    bshape = (-1,) + (1,) * (r - 2)
    dt = ctx.dtype(node.input[0]) or "float32"
    y, tmp = node.output[0], ctx.tmp(node.output[0] + "/scaled")
    ctx.emit(Op.MUL, [ctx.inp(node, 0), ctx.add_const(f"{y}/mul", mul.reshape(bshape).astype(dt))],
             [tmp], suffix="_scale")
    ctx.emit(Op.ADD, [tmp, ctx.add_const(f"{y}/add", add.reshape(bshape).astype(dt))], [y])


def _batch_norm_computed(ctx: Context, node, r: int, eps: float) -> None:
    """(x - mean) / sqrt(var + eps) * scale + B with statistics computed at run time (tf2onnx
    writes Keras' LayerNormalization so); the [C] operands are unsqueezed to [C, 1, ...]."""
    y = node.output[0]
    per_channel = []
    for k in range(1, 5):
        shp = ctx.shape(node.input[k])
        if shp is not None and len(shp) != 1:
            raise Unsupported(f"BatchNormalization input {k} has shape {shp}, not [C]")
        v = ctx.inp(node, k)
        if r > 2:
            u = ctx.tmp(f"{y}/in{k}")
            ctx.emit(Op.UNSQUEEZE, [v], [u], {"axes": tuple(range(1, r - 1))}, suffix=f"_in{k}")
            v = u
        per_channel.append(v)
    scale, b, mean, var = per_channel
    t = lambda s: ctx.tmp(f"{y}/{s}")
    d, ve, std, nrm, sc = t("centered"), t("var_eps"), t("std"), t("normed"), t("scaled")
    ctx.emit(Op.SUB, [ctx.inp(node, 0), mean], [d], suffix="_center")
    ctx.emit(Op.ADD, [var, _scalar(ctx, node.input[0], eps, f"{y}/eps")], [ve], suffix="_eps")
    ctx.emit(Op.SQRT, [ve], [std], suffix="_std")
    ctx.emit(Op.DIV, [d, std], [nrm], suffix="_div")
    ctx.emit(Op.MUL, [nrm, scale], [sc], suffix="_scale")
    ctx.emit(Op.ADD, [sc, b], [y])


@handler("GlobalAveragePool", since=1)
def global_average_pool(ctx: Context, node) -> None:
    ctx.attrs(node)
    r = _rank(ctx, node.input[0])
    ctx.emit(Op.REDUCE_MEAN, [ctx.inp(node, 0)], [node.output[0]],
             {"axes": tuple(range(2, r)), "keepdims": True})


def _reduce_sum_square(axes_as_input: bool):
    def convert(ctx: Context, node) -> None:
        a = ctx.attrs(node, {"keepdims", "noop_with_empty_axes"} |
                      (set() if axes_as_input else {"axes"}))
        if axes_as_input:
            axes = ctx.opt_const(node, 1, "axes")
            axes = [] if axes is None else [int(x) for x in np.ravel(axes)]
            if not axes and a.get("noop_with_empty_axes", 0):
                raise Unsupported("ReduceSumSquare with noop_with_empty_axes and no axes")
        else:
            axes = list(a.get("axes", []))
        x, sq = ctx.inp(node, 0), ctx.tmp(node.output[0] + "/sq")
        ctx.emit(Op.MUL, [x, x], [sq], suffix="_sq")
        ctx.emit(Op.REDUCE_SUM, [sq], [node.output[0]],
                 {"axes": tuple(axes), "keepdims": bool(a.get("keepdims", 1))})
    return convert


handler("ReduceSumSquare", since=1)(_reduce_sum_square(False))
handler("ReduceSumSquare", since=18)(_reduce_sum_square(True))


@handler("Reciprocal", since=6)
def reciprocal(ctx: Context, node) -> None:
    ctx.attrs(node)
    x = ctx.inp(node, 0)
    ctx.emit(Op.DIV, [_scalar(ctx, x, 1.0, f"{node.output[0]}/one"), x], [node.output[0]])


@handler("Erf", since=9)
def erf(ctx: Context, node) -> None:
    ctx.attrs(node)
    ctx.emit(Op.ERF, [ctx.inp(node, 0)], [node.output[0]])
