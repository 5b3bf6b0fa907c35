"""The main-graph ops of a Keras `Masking` layer: mask = any(x != mask_value, axis=-1), the
masked input (x * mask or select(mask, x, 0)); the loop that reads the mask is lifted by
`loops.py` with `sequence_lens` (`edgeseq.converters.masks`)."""
from __future__ import annotations

import numpy as np

from edgeseq.ops import Op

from edgeseq.converters.tflite.context import Context, OpView, Unsupported, handler
from edgeseq.converters.tflite.norms import _axes


@handler("NOT_EQUAL", max_version=3)
def not_equal(ctx: Context, op: OpView) -> None:
    eq = ctx.tmp("eq")
    ctx.emit(Op.EQUAL, [ctx.value(op.input(0)), ctx.value(op.input(1))], [eq])
    ctx.emit(Op.NOT, [eq], [ctx.out(op.outputs[0])])


@handler("REDUCE_ANY", max_version=1)
def reduce_any(ctx: Context, op: OpView) -> None:
    # NOTE: the IR has no boolean reduction: count the true entries and compare with zero
    axes = _axes(ctx, op.input(1), len(ctx.shape(op.input(0))), "REDUCE_ANY axis")
    as_float, count = ctx.tmp("any_f"), ctx.tmp("any_n")
    ctx.emit(Op.CAST, [ctx.value(op.input(0))], [as_float], to="float32")
    ctx.emit(Op.REDUCE_SUM, [as_float], [count], axes=axes,
             keepdims=bool(op.option("keepDims", False)))
    zero = ctx.constant(ctx.tmp("zero"), np.zeros((), np.float32))
    ctx.emit(Op.GREATER, [count, zero], [ctx.out(op.outputs[0])])


_CAST_TO = {0: "float32", 2: "int32", 4: "int64", 6: "bool"}


@handler("CAST", max_version=1)
def cast(ctx: Context, op: OpView) -> None:
    to = _CAST_TO.get(ctx.sub.tensors[op.outputs[0]].type)
    if to is None:
        raise Unsupported("CAST to a type other than float32/int32/int64/bool")
    ctx.emit(Op.CAST, [ctx.value(op.input(0))], [ctx.out(op.outputs[0])], to=to)


@handler("SELECT_V2", max_version=2)
def select_v2(ctx: Context, op: OpView) -> None:
    ctx.emit(Op.WHERE, [ctx.value(op.input(i)) for i in range(3)], [ctx.out(op.outputs[0])])
