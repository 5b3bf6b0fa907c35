"""Operators Keras loop bodies (and tf.while_loop bodies) use that the main-graph handlers did
not map: a GATHER at a run-time index, RELU, MINIMUM/MAXIMUM against a constant scalar (the
hard sigmoid), the comparisons and LOGICAL_AND of a condition, ABS and SUM. Registered for
every graph (converters/tflite/general_loop.py imports this module)."""
from __future__ import annotations

import numpy as np

from edgeseq.ops import Op

from edgeseq.converters.tflite.context import Context, OpView, Unsupported, handler

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


@handler("LESS", "GREATER", max_version=3)
def compare(ctx: Context, op: OpView) -> None:
    ctx.emit(Op.LESS if op.name == "LESS" else Op.GREATER,
             [ctx.value(op.input(0)), ctx.value(op.input(1))], [ctx.out(op.outputs[0])])


@handler("LOGICAL_AND", max_version=1)
def logical_and(ctx: Context, op: OpView) -> None:
    """a and b = Where(a, b, a) (the IR has no boolean And)."""
    a = ctx.value(op.input(0))
    ctx.emit(Op.WHERE, [a, ctx.value(op.input(1)), a], [ctx.out(op.outputs[0])])


@handler("ABS", max_version=5)
def abs_(ctx: Context, op: OpView) -> None:
    ctx.emit(Op.ABS, [ctx.value(op.input(0))], [ctx.out(op.outputs[0])])


@handler("SUM", max_version=2)
def reduce_sum(ctx: Context, op: OpView) -> None:
    rank = len(ctx.shape(op.input(0)))
    axes = tuple(sorted({a % rank for a in ctx.ints(op.input(1), "SUM axes")})) if rank else ()
    ctx.emit(Op.REDUCE_SUM, [ctx.value(op.input(0))], [ctx.out(op.outputs[0])], axes=axes,
             keepdims=bool(op.option("keepDims", False)))
