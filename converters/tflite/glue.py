"""Handlers for the ops around fused LSTMs in converted Keras models."""
from __future__ import annotations

import numpy as np

from edgeseq.ops import Op

from edgeseq.converters.unit_axes import UNIT_OPS, unit_axes_change, unit_move_perm
from edgeseq.converters.tflite.context import Context, OpView, Unsupported, handler

BIG = 2 ** 62   # "to the end" in Slice bounds (ONNX clamping)


def _rank(ctx: Context, idx: int) -> int:
    return len(ctx.shape(idx))


def _axis(axis: int, rank: int, what: str) -> int:
    if not -rank <= axis < rank:
        raise Unsupported(f"{what} {axis} out of range for rank {rank}")
    return axis % rank


@handler("FULLY_CONNECTED", max_version=13)
def fully_connected(ctx: Context, op: OpView) -> None:
    if op.option("weightsFormat", 0) != 0:
        raise Unsupported("only the DEFAULT weights format is supported (not SHUFFLED4x16INT8)")
    x_idx, w_idx, b_idx = op.input(0), op.input(1), op.input(2)
    w = ctx.real(w_idx)
    if w is None:
        raise Unsupported("FULLY_CONNECTED weights must be a constant")
    n_out, k = w.shape
    act = op.option("fusedActivationFunction", 0)
    keep = bool(op.option("keepNumDims", False))
    x = ctx.value(x_idx)
    rank = _rank(ctx, x_idx)
    dst = ctx.fused_target(act, op.outputs[0])
    w_name = ctx.constant(ctx.tname(w_idx), w.astype(np.float32))
    b_name = ctx.value(b_idx) if b_idx >= 0 else ""
    if rank == 2 or not keep:
        if rank != 2:
            flat = ctx.tmp("flat")
            ctx.emit(Op.RESHAPE, [x], [flat], shape=(-1, k))
            x = flat
        ins = [x, w_name] + ([b_name] if b_name else [])
        ctx.emit(Op.GEMM, ins, [dst], trans_b=True)
    else:
        wt = ctx.constant(ctx.tname(w_idx) + "_t", np.ascontiguousarray(w.T.astype(np.float32)))
        if b_name:
            mm = ctx.tmp("matmul")
            ctx.emit(Op.MATMUL, [x, wt], [mm])
            ctx.emit(Op.ADD, [mm, b_name], [dst])
        else:
            ctx.emit(Op.MATMUL, [x, wt], [dst])
    ctx.finish_fused(dst, act, op.outputs[0])


def _binary(ctx: Context, op: OpView, ir_op: Op) -> None:
    act = op.option("fusedActivationFunction", 0)
    dst = ctx.fused_target(act, op.outputs[0])
    ctx.emit(ir_op, [ctx.value(op.input(0)), ctx.value(op.input(1))], [dst])
    ctx.finish_fused(dst, act, op.outputs[0])


@handler("ADD", max_version=5)
def add(ctx: Context, op: OpView) -> None:
    _binary(ctx, op, Op.ADD)


@handler("MUL", max_version=7)
def mul(ctx: Context, op: OpView) -> None:
    _binary(ctx, op, Op.MUL)


@handler("LOGISTIC", max_version=3)
def logistic(ctx: Context, op: OpView) -> None:
    ctx.emit(Op.SIGMOID, [ctx.value(op.input(0))], [ctx.out(op.outputs[0])])


@handler("TANH", max_version=3)
def tanh(ctx: Context, op: OpView) -> None:
    ctx.emit(Op.TANH, [ctx.value(op.input(0))], [ctx.out(op.outputs[0])])


@handler("SOFTMAX", max_version=3)
def softmax(ctx: Context, op: OpView) -> None:
    beta = float(op.option("beta", 1.0))
    x = ctx.value(op.input(0))
    if beta != 1.0:
        scaled = ctx.tmp("scaled")
        ctx.emit(Op.MUL, [x, ctx.constant(ctx.tmp("beta"), np.array(beta, np.float32))], [scaled])
        x = scaled
    ctx.emit(Op.SOFTMAX, [x], [ctx.out(op.outputs[0])], axis=-1)


@handler("L2_NORMALIZATION", max_version=2)
def l2_normalization(ctx: Context, op: OpView) -> None:
    # NOTE: TFLite's float kernel divides by max(||x||, 1e-6) over the last axis, and its
    # prepare step refuses any fused activation
    if op.option("fusedActivationFunction", 0) != 0:
        raise Unsupported("L2_NORMALIZATION with a fused activation (TFLite refuses it too)")
    ctx.emit(Op.LP_NORMALIZATION, [ctx.value(op.input(0))], [ctx.out(op.outputs[0])], axis=-1,
             p=2, epsilon=1e-6)


@handler("RESHAPE", max_version=2)
def reshape(ctx: Context, op: OpView) -> None:
    if op.input(1) >= 0 and ctx.is_const(op.input(1)):
        shape = ctx.ints(op.input(1), "RESHAPE shape")
    elif op.option("newShape") is not None:
        shape = [int(v) for v in op.option("newShape")]
    elif op.input(1) >= 0:
        raise Unsupported("RESHAPE with a shape computed at run time is not supported")
    else:
        shape = list(ctx.shape(op.outputs[0]))
    if 0 in shape:
        raise Unsupported(f"RESHAPE to a shape with a zero dim {shape}")
    perm = unit_move_perm(ctx.shape(op.input(0)), shape)
    if perm is not None:   # only size-1 axes move: a Transpose, which streams
        ctx.emit(Op.TRANSPOSE, [ctx.value(op.input(0))], [ctx.out(op.outputs[0])], perm=perm)
        return
    unit = unit_axes_change(ctx.shape(op.input(0)), shape)
    if unit is not None:   # only size-1 axes come or go: exact at any length, streams
        ctx.emit(UNIT_OPS[unit[0]], [ctx.value(op.input(0))], [ctx.out(op.outputs[0])],
                 axes=unit[1])
        return
    ctx.emit(Op.RESHAPE, [ctx.value(op.input(0))], [ctx.out(op.outputs[0])], shape=tuple(shape))


@handler("TRANSPOSE", max_version=6)
def transpose(ctx: Context, op: OpView) -> None:
    perm = ctx.ints(op.input(1), "TRANSPOSE perm")
    ctx.emit(Op.TRANSPOSE, [ctx.value(op.input(0))], [ctx.out(op.outputs[0])], perm=tuple(perm))


@handler("CONCATENATION", max_version=4)
def concatenation(ctx: Context, op: OpView) -> None:
    act = op.option("fusedActivationFunction", 0)
    axis = _axis(int(op.option("axis", 0)), _rank(ctx, op.input(0)), "axis")
    dst = ctx.fused_target(act, op.outputs[0])
    ctx.emit(Op.CONCAT, [ctx.value(i) for i in op.inputs], [dst], axis=axis)
    ctx.finish_fused(dst, act, op.outputs[0])


@handler("REVERSE_V2", max_version=3)
def reverse_v2(ctx: Context, op: OpView) -> None:
    rank = _rank(ctx, op.input(0))
    axes = [_axis(a, rank, "REVERSE_V2 axis") for a in ctx.ints(op.input(1), "REVERSE_V2 axis")]
    n = len(axes)
    # NOTE: a reversal is a Slice with step -1 from the last element to before the first
    ctx.emit(Op.SLICE, [ctx.value(op.input(0))], [ctx.out(op.outputs[0])], starts=(-1,) * n,
             ends=(-BIG,) * n, axes=tuple(axes), steps=(-1,) * n)


@handler("STRIDED_SLICE", max_version=8)
def strided_slice(ctx: Context, op: OpView) -> None:
    for opt in ("ellipsisMask", "newAxisMask"):
        if op.option(opt, 0):
            raise Unsupported(f"STRIDED_SLICE with {opt}={op.option(opt)} is not supported")
    begin = ctx.ints(op.input(1), "STRIDED_SLICE begin")
    end = ctx.ints(op.input(2), "STRIDED_SLICE end")
    strides = ctx.ints(op.input(3), "STRIDED_SLICE strides") if op.input(3) >= 0 else [1] * len(begin)
    bmask, emask = int(op.option("beginMask", 0)), int(op.option("endMask", 0))
    shrink = int(op.option("shrinkAxisMask", 0))
    offset = bool(op.option("offset", False))
    starts, ends, axes, steps, squeeze = [], [], [], [], []
    for k, (b, e, s) in enumerate(zip(begin, end, strides)):
        if s == 0:
            raise Unsupported(f"STRIDED_SLICE stride 0 on axis {k}")
        if offset:
            e = b + e
        if bmask >> k & 1:
            b = 0 if s > 0 else BIG
        if emask >> k & 1:
            e = BIG if s > 0 else -BIG
        if shrink >> k & 1:
            # one element at `begin`; the masks do not apply to a shrunk axis
            b = begin[k]
            e, s = (b + 1 if b != -1 else BIG), 1
            squeeze.append(k)
        if (b, e, s) == (0, BIG, 1):
            continue
        starts.append(b), ends.append(e), axes.append(k), steps.append(s)
    x = ctx.value(op.input(0))
    dst = ctx.out(op.outputs[0]) if not squeeze else ctx.tmp("sliced")
    if axes:
        ctx.emit(Op.SLICE, [x], [dst], starts=tuple(starts), ends=tuple(ends), axes=tuple(axes),
                 steps=tuple(steps))
    else:
        ctx.emit(Op.IDENTITY, [x], [dst])
    if squeeze:
        ctx.emit(Op.SQUEEZE, [dst], [ctx.out(op.outputs[0])], axes=tuple(squeeze))


@handler("PACK", max_version=4)
def pack(ctx: Context, op: OpView) -> None:
    rank = _rank(ctx, op.outputs[0])
    axis = _axis(int(op.option("axis", 0)), rank, "PACK axis")
    parts = []
    for i in op.inputs:
        u = ctx.tmp("unsqueezed")
        ctx.emit(Op.UNSQUEEZE, [ctx.value(i)], [u], axes=(axis,))
        parts.append(u)
    ctx.emit(Op.CONCAT, parts, [ctx.out(op.outputs[0])], axis=axis)


@handler("UNPACK", max_version=4)
def unpack(ctx: Context, op: OpView) -> None:
    rank = _rank(ctx, op.input(0))
    axis = _axis(int(op.option("axis", 0)), rank, "UNPACK axis")
    num = len(op.outputs)
    parts = [ctx.tmp("part") for _ in range(num)]
    ctx.emit(Op.SPLIT, [ctx.value(op.input(0))], parts, axis=axis, split=(1,) * num)
    for part, out_idx in zip(parts, op.outputs):
        ctx.emit(Op.SQUEEZE, [part], [ctx.out(out_idx)], axes=(axis,))


def _split(ctx: Context, op: OpView, x_idx: int, axis_idx: int, sizes: list[int] | None) -> None:
    """SPLIT (sizes None: equal parts, one per output) and SPLIT_V (one size may be -1)."""
    axes = ctx.ints(axis_idx, f"{op.name} axis")
    if len(axes) != 1:
        raise Unsupported(f"{op.name} axis must be one integer, got {axes}")
    axis = _axis(axes[0], _rank(ctx, x_idx), f"{op.name} axis")
    dim, n = ctx.shape(x_idx)[axis], len(op.outputs)
    if sizes is None:
        if not n or dim % n:
            raise Unsupported(f"{op.name} of a dim of {dim} into {n} equal parts")
        sizes = [dim // n] * n
    if len(sizes) != n:
        raise Unsupported(f"{op.name} into {len(sizes)} parts with {n} outputs")
    if sizes.count(-1) == 1:
        sizes[sizes.index(-1)] = dim - (sum(sizes) + 1)
    if not sizes or any(s <= 0 for s in sizes) or sum(sizes) != dim:
        raise Unsupported(f"{op.name} of a dim of {dim} into {n} parts {sizes}")
    ctx.emit(Op.SPLIT, [ctx.value(x_idx)], [ctx.out(i) for i in op.outputs], axis=axis,
             split=tuple(sizes))


@handler("SPLIT", max_version=4)
def split(ctx: Context, op: OpView) -> None:
    # NOTE: operands are (axis, input); Keras unroll=True writes one per step for the gates
    if int(op.option("numSplits", len(op.outputs))) != len(op.outputs):
        raise Unsupported(f"SPLIT num_splits {op.option('numSplits')} with {len(op.outputs)} "
                          "outputs")
    _split(ctx, op, op.input(1), op.input(0), None)


@handler("SPLIT_V", max_version=2)
def split_v(ctx: Context, op: OpView) -> None:
    _split(ctx, op, op.input(0), op.input(2), ctx.ints(op.input(1), "SPLIT_V size_splits"))


@handler("DEQUANTIZE", "QUANTIZE", max_version=6)
def quantize_dequantize(ctx: Context, op: OpView) -> None:
    src = op.input(0)
    if ctx.is_const(src):
        # float16 or int8 weights behind DEQUANTIZE: fold into a float32 constant
        ctx.fold(op.outputs[0], ctx.real(src).astype(np.float32))
        return
    # activations are real-valued floats in edgeseq: a run-time (de)quantisation is the identity
    ctx.emit(Op.IDENTITY, [ctx.value(src)], [ctx.out(op.outputs[0])])
    ctx.notes.append(f"{op.label}: run-time {op.name} mapped to Identity (float activations)")
