"""ONNX boolean logic (And, Or, Xor) and GatherElements at one index per row, as greedy
decoders write them inside their Loop body (`done | (token == eos)`, the loop condition
`i < max_len and not all(done)`, the score of the argmax `logp.gather(1, token)`), composed
from existing IR ops: no new op, the same meaning on the reference and the runtime.

    a and b  = Where(a, b, false)        a or b = Where(a, true, b)
    a xor b  = Where(a, not b, b)
    GatherElements(x, idx, axis) with idx of size 1 along `axis`
             = ReduceSum(Where(Equal(iota, idx), x, 0), axis, keepdims)   (one term is kept)
"""
from __future__ import annotations

import numpy as np

from edgeseq.ops import Op
from edgeseq.converters.onnx.context import Context, Unsupported
from edgeseq.converters.onnx.registry import handler


def _bool_const(ctx: Context, value: bool) -> str:
    return ctx.add_const(f"{ctx.node_name}/{'true' if value else 'false'}",
                         np.array([value], np.bool_))


@handler("And", since=7)
def and_(ctx: Context, node) -> None:
    ctx.attrs(node)
    ctx.emit(Op.WHERE, [ctx.inp(node, 0), ctx.inp(node, 1), _bool_const(ctx, False)],
             [node.output[0]])


@handler("Or", since=7)
def or_(ctx: Context, node) -> None:
    ctx.attrs(node)
    ctx.emit(Op.WHERE, [ctx.inp(node, 0), _bool_const(ctx, True), ctx.inp(node, 1)],
             [node.output[0]])


@handler("Xor", since=7)
def xor(ctx: Context, node) -> None:
    ctx.attrs(node)
    b = ctx.inp(node, 1)
    not_b = ctx.tmp(f"{node.output[0]}/not_b")
    ctx.emit(Op.NOT, [b], [not_b], suffix="/not")
    ctx.emit(Op.WHERE, [ctx.inp(node, 0), not_b, b], [node.output[0]])


@handler("GatherElements", since=11)
def gather_elements(ctx: Context, node) -> None:
    a = ctx.attrs(node, {"axis"})
    x_shape, i_shape = ctx.shape(node.input[0]), ctx.shape(node.input[1])
    if x_shape is None or i_shape is None or len(x_shape) != len(i_shape):
        raise Unsupported(f"GatherElements needs data and indices of known, equal rank; got "
                          f"{x_shape} and {i_shape}")
    rank = len(x_shape)
    axis = int(a.get("axis", 0)) % rank
    size = x_shape[axis]
    same = all(k == axis or xd == idd or isinstance(xd, str) and isinstance(idd, str)
               for k, (xd, idd) in enumerate(zip(x_shape, i_shape)))
    if i_shape[axis] != 1 or not isinstance(size, int) or not same:
        raise Unsupported(f"GatherElements is supported with one index per row (indices of "
                          f"size 1 along axis {axis}, other dims as the data's) and a fixed "
                          f"size along the axis; got data {tuple(x_shape)}, indices "
                          f"{tuple(i_shape)}")
    base = f"{node.output[0]}/"
    iota = ctx.add_const(base + "iota", np.arange(size, dtype=np.int64).reshape(
        [size if k == axis else 1 for k in range(rank)]))
    idx = ctx.inp(node, 1)
    if ctx.dtype(node.input[1]) != "int64":
        cast = ctx.tmp(base + "idx64")
        ctx.emit(Op.CAST, [idx], [cast], {"to": "int64"}, suffix="/idx64")
        idx = cast
    hit, picked = ctx.tmp(base + "hit"), ctx.tmp(base + "picked")
    zero = ctx.add_const(base + "zero", np.zeros(1, ctx.dtype(node.input[0]) or "float32"))
    ctx.emit(Op.EQUAL, [iota, idx], [hit], suffix="/hit")
    ctx.emit(Op.WHERE, [hit, ctx.inp(node, 0), zero], [picked], suffix="/pick")
    ctx.emit(Op.REDUCE_SUM, [picked], [node.output[0]], {"axes": (axis,), "keepdims": True})
