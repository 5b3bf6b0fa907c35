"""ONNX comparison and selection ops: Equal/Greater/Less (and the OrEqual forms as their
negations), Not, Where, ArgMax/ArgMin, Tile, Expand (as Tile)."""
from __future__ import annotations

import numpy as np

from edgeseq.ops import Op
from edgeseq.converters.onnx.context import Context, Unsupported
from edgeseq.converters.onnx.registry import handler

# op type -> (IR comparison, negated): a >= b is not (a < b), a <= b is not (a > b)
_COMPARE = {"Equal": (Op.EQUAL, False), "Greater": (Op.GREATER, False),
            "Less": (Op.LESS, False), "GreaterOrEqual": (Op.LESS, True),
            "LessOrEqual": (Op.GREATER, True)}


def _same_dtype(ctx: Context, a: str, b: str) -> tuple[str, str]:
    """A constant operand takes the other operand's dtype (0-d constants become (1,))."""
    da, db = ctx.dtype(a), ctx.dtype(b)
    for name, want in ((b, da), (a, db)):
        c = ctx.consts.get(name)
        if c is not None and want and (str(c.dtype) != want or c.ndim == 0):
            fixed = ctx.add_const(f"{name}/as_{want}", np.asarray(c, dtype=want).reshape(
                c.shape or (1,)))
            a, b = (fixed, b) if name == a else (a, fixed)
    return a, b


def _compare(op_type: str):
    op, negate = _COMPARE[op_type]

    def convert(ctx: Context, node) -> None:
        ctx.attrs(node)
        a, b = _same_dtype(ctx, ctx.inp(node, 0), ctx.inp(node, 1))
        if not negate:
            ctx.emit(op, [a, b], [node.output[0]])
            return
        pos = ctx.tmp(node.output[0] + "/pos")
        ctx.emit(op, [a, b], [pos], suffix="_pos")
        ctx.emit(Op.NOT, [pos], [node.output[0]])
    return convert


for _name in ("Equal", "Greater", "Less"):
    handler(_name, since=1)(_compare(_name))
for _name in ("GreaterOrEqual", "LessOrEqual"):
    handler(_name, since=12)(_compare(_name))


@handler("Not", since=1)
def not_(ctx: Context, node) -> None:
    ctx.attrs(node)
    ctx.emit(Op.NOT, [ctx.inp(node, 0)], [node.output[0]])


@handler("Where", since=9)
def where(ctx: Context, node) -> None:
    ctx.attrs(node)
    a, b = _same_dtype(ctx, ctx.inp(node, 1), ctx.inp(node, 2))
    ctx.emit(Op.WHERE, [ctx.inp(node, 0), a, b], [node.output[0]])


def _arg(op: Op):
    def convert(ctx: Context, node) -> None:
        a = ctx.attrs(node, {"axis", "keepdims", "select_last_index"})
        ctx.emit(op, [ctx.inp(node, 0)], [node.output[0]],
                 {"axis": int(a.get("axis", 0)), "keepdims": bool(a.get("keepdims", 1)),
                  "select_last_index": bool(a.get("select_last_index", 0))})
    return convert


handler("ArgMax", since=1)(_arg(Op.ARG_MAX))
handler("ArgMin", since=1)(_arg(Op.ARG_MIN))


@handler("Tile", since=6)
def tile(ctx: Context, node) -> None:
    ctx.attrs(node)
    reps = [int(r) for r in np.ravel(ctx.need_const(node, 1, "repeats"))]
    ctx.emit(Op.TILE, [ctx.inp(node, 0)], [node.output[0]], {"repeats": tuple(reps)})


@handler("Expand", since=8)
def expand(ctx: Context, node) -> None:
    ctx.attrs(node)
    target = [int(d) for d in np.ravel(ctx.need_const(node, 1, "shape"))]
    x = ctx.inp(node, 0)
    shp = ctx.shape(node.input[0])
    if shp is None:
        raise Unsupported("Expand of an input of unknown shape")
    rank = max(len(shp), len(target))
    src = (1,) * (rank - len(shp)) + tuple(shp)
    tgt = (1,) * (rank - len(target)) + tuple(target)
    reps = []
    for d, t in zip(src, tgt):
        if d == 1 and t != 1:
            reps.append(t)
        elif t == 1 or t == d:
            reps.append(1)
        else:
            raise Unsupported(f"Expand of {tuple(shp)} to {tuple(target)}: dim {d} is not 1")
    if rank > len(shp):
        lead = ctx.tmp(x + "/lead")
        ctx.emit(Op.UNSQUEEZE, [x], [lead], {"axes": tuple(range(rank - len(shp)))},
                 suffix="_lead")
        x = lead
    ctx.emit(Op.TILE, [x], [node.output[0]], {"repeats": tuple(reps)})
