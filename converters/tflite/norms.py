"""TFLite ops that Keras writes for LayerNormalization (MEAN, SQUARED_DIFFERENCE, RSQRT, SUB,
NEG), for Conv1D (EXPAND_DIMS, CONV_2D over a unit axis, SQUEEZE) and for greedy decoding (ARG_MAX).
Each becomes existing IR ops; CONV_2D over NHWC becomes a Conv1d or Conv2d between Transposes.
"""
from __future__ import annotations

import numpy as np

from edgeseq.ops import Op

from edgeseq.converters.tflite.context import Context, OpView, Unsupported, handler


def _axes(ctx: Context, idx: int, rank: int, what: str) -> tuple[int, ...]:
    axes = ctx.ints(idx, what)
    if any(not -rank <= a < rank for a in axes):
        raise Unsupported(f"{what} {axes} out of range for rank {rank}")
    return tuple(sorted({a % rank for a in axes}))


@handler("SUB", max_version=3)
def sub(ctx: Context, op: OpView) -> None:
    act = op.option("fusedActivationFunction", 0)
    dst = ctx.fused_target(act, op.outputs[0])
    ctx.emit(Op.SUB, [ctx.value(op.input(0)), ctx.value(op.input(1))], [dst])
    ctx.finish_fused(dst, act, op.outputs[0])


@handler("NEG", max_version=2)
def neg(ctx: Context, op: OpView) -> None:
    ctx.emit(Op.NEG, [ctx.value(op.input(0))], [ctx.out(op.outputs[0])])


@handler("SQUARED_DIFFERENCE", max_version=2)
def squared_difference(ctx: Context, op: OpView) -> None:
    d = ctx.tmp("diff")
    ctx.emit(Op.SUB, [ctx.value(op.input(0)), ctx.value(op.input(1))], [d])
    ctx.emit(Op.MUL, [d, d], [ctx.out(op.outputs[0])])


@handler("RSQRT", max_version=2)
def rsqrt(ctx: Context, op: OpView) -> None:
    r = ctx.tmp("sqrt")
    ctx.emit(Op.SQRT, [ctx.value(op.input(0))], [r])
    one = ctx.constant(ctx.tmp("one"), np.ones(1, np.float32))
    ctx.emit(Op.DIV, [one, r], [ctx.out(op.outputs[0])])


@handler("MEAN", max_version=2)
def mean(ctx: Context, op: OpView) -> None:
    rank = len(ctx.shape(op.input(0)))
    axes = _axes(ctx, op.input(1), rank, "MEAN axis")
    ctx.emit(Op.REDUCE_MEAN, [ctx.value(op.input(0))], [ctx.out(op.outputs[0])], axes=axes,
             keepdims=bool(op.option("keepDims", False)))


@handler("ARG_MAX", max_version=3)
def arg_max(ctx: Context, op: OpView) -> None:
    rank = len(ctx.shape(op.input(0)))
    (axis,) = _axes(ctx, op.input(1), rank, "ARG_MAX axis")
    y = ctx.out(op.outputs[0])
    if int(ctx.tensor(op.outputs[0]).type) == 2:     # TensorType.INT32; IR ArgMax is int64
        i64 = ctx.tmp("int64")
        ctx.emit(Op.ARG_MAX, [ctx.value(op.input(0))], [i64], axis=axis, keepdims=False)
        ctx.emit(Op.CAST, [i64], [y], to="int32")
        return
    ctx.emit(Op.ARG_MAX, [ctx.value(op.input(0))], [y], axis=axis, keepdims=False)


@handler("EXPAND_DIMS", max_version=1)
def expand_dims(ctx: Context, op: OpView) -> None:
    rank = len(ctx.shape(op.input(0))) + 1
    (axis,) = _axes(ctx, op.input(1), rank, "EXPAND_DIMS axis")
    ctx.emit(Op.UNSQUEEZE, [ctx.value(op.input(0))], [ctx.out(op.outputs[0])], axes=(axis,))


@handler("SQUEEZE", max_version=1)
def squeeze(ctx: Context, op: OpView) -> None:
    shape = ctx.shape(op.input(0))
    dims = [int(d) for d in (op.option("squeezeDims") or [])]
    axes = tuple(sorted(d % len(shape) for d in dims)) or \
        tuple(k for k, d in enumerate(shape) if d == 1)
    ctx.emit(Op.SQUEEZE, [ctx.value(op.input(0))], [ctx.out(op.outputs[0])], axes=axes)


def _same_pads(size: int, k: int, stride: int, dil: int) -> tuple[int, int]:
    """TFLite SAME padding: the odd extra pad goes to the end."""
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + dil * (k - 1) + 1 - size)
    return total // 2, total - total // 2


@handler("CONV_2D", max_version=5)
def conv_2d(ctx: Context, op: OpView) -> None:
    # NOTE: TFLite is NHWC with OHWI weights; the IR is NCHW / OIHW, so the input is
    # transposed in and the result out (a unit H or W axis makes it a Conv1d)
    w = ctx.real(op.input(1))
    if w is None:
        raise Unsupported("CONV_2D weights must be a constant")
    n, h, wd, c = ctx.shape(op.input(0))
    o, kh, kw, ci = w.shape
    if c % ci:
        raise Unsupported(f"CONV_2D: {c} input channels do not divide into groups of {ci}")
    strides = (int(op.option("strideH", 1)), int(op.option("strideW", 1)))
    dil = (int(op.option("dilationHFactor", 1)), int(op.option("dilationWFactor", 1)))
    if int(op.option("padding", 1)) == 0:      # Padding.SAME
        (t, b), (l, r) = (_same_pads(s, k, st, d)
                          for s, k, st, d in zip((h, wd), (kh, kw), strides, dil))
    else:
        t = b = l = r = 0
    act = op.option("fusedActivationFunction", 0)
    x = ctx.tmp("nchw")
    ctx.emit(Op.TRANSPOSE, [ctx.value(op.input(0))], [x], perm=(0, 3, 1, 2))
    bias = [ctx.value(op.input(2))] if op.input(2) >= 0 else []
    y = ctx.tmp("conv")
    w_oihw = np.ascontiguousarray(w.transpose(0, 3, 1, 2).astype(np.float32))
    unit = 2 if h == 1 and kh == 1 and t == b == 0 else 3 if wd == 1 and kw == 1 and l == r == 0 \
        else None
    if unit is None:
        wn = ctx.constant(ctx.tname(op.input(1)) + "_oihw", w_oihw)
        ctx.emit(Op.CONV2D, [x, wn] + bias, [y], strides=strides, pads=(t, l, b, r),
                 dilations=dil, group=c // ci)
    else:
        j = 1 if unit == 2 else 0          # the spatial axis the kernel moves along
        pads = (l, r) if unit == 2 else (t, b)
        wn = ctx.constant(ctx.tname(op.input(1)) + "_oik", np.squeeze(w_oihw, axis=unit))
        xs, ys = ctx.tmp("1d"), ctx.tmp("conv1d")
        ctx.emit(Op.SQUEEZE, [x], [xs], axes=(unit,))
        ctx.emit(Op.CONV1D, [xs, wn] + bias, [ys], stride=strides[j], pads=pads,
                 dilation=dil[j], group=c // ci)
        ctx.emit(Op.UNSQUEEZE, [ys], [y], axes=(unit,))
    dst = ctx.fused_target(act, op.outputs[0])
    ctx.emit(Op.TRANSPOSE, [y], [dst], perm=(0, 2, 3, 1))
    ctx.finish_fused(dst, act, op.outputs[0])
