"""Undo a merge of leading axes around row-wise ops (the Reshape pair Keras Dense writes).

tf2onnx writes Dense on a [N, T, H] tensor as Reshape to [N*T, H], MatMul, Reshape back to
[N, T, O] with the target computed from Shape(x). With N and T both dynamic the IR cannot
state that target (a Reshape may copy or infer dims, not take them from another tensor), and
the merged axis would hide time from streaming. Every op in between works on each row alone,
so the pair is an identity: the merge becomes Identity, the ops run on [N, T, H] directly
(MatMul and broadcasting binaries accept leading axes), and the split back becomes Identity.
"""
from __future__ import annotations

from edgeseq.ops import Op, UNARY
from edgeseq.converters.onnx.context import Context
from edgeseq.converters.onnx.symbolic import SymDim, SymVec

_BROADCAST_ROW = (Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.POW)


def _producer(ctx: Context, name: str):
    for n in reversed(ctx.nodes):
        if name in n.outputs:
            return n
    return None


def _row_const(ctx: Context, name: str, width) -> bool:
    """A constant that broadcasts along rows only: rank <= 1, or [1, width]."""
    c = ctx.consts.get(name)
    return c is not None and (c.ndim <= 1 or (c.ndim == 2 and c.shape[0] == 1))


def _chain_input(ctx: Context, n) -> str | None:
    """The one computed operand of a row-wise node, or None if `n` is not row-wise."""
    if n.op in UNARY and n.op is not Op.CAST:
        return n.inputs[0]
    if n.op is Op.MATMUL:
        b = ctx.consts.get(n.inputs[1])
        return n.inputs[0] if b is not None and b.ndim == 2 else None
    if n.op in _BROADCAST_ROW:
        a, b = n.inputs
        if _row_const(ctx, b, None) and a not in ctx.consts:
            return a
        if _row_const(ctx, a, None) and b not in ctx.consts:
            return b
    return None


def _other_readers(ctx: Context, values: set[str], chain: list, end: str) -> bool:
    """Whether anything outside `chain` reads one of `values` (IR nodes emitted so far, ONNX
    nodes other than the chain's own, graph outputs)."""
    inside = {id(n) for n in chain}
    if any(id(n) not in inside and values & set(n.inputs) for n in ctx.nodes):
        return True
    own = values | {end}
    for n in {id(n): n for n in ctx.producers.values()}.values():
        if n is ctx.node or set(o for o in n.output if o) <= own:
            continue
        if values & {ctx.resolve(i) for i in n.input}:
            return True
    return bool(values & getattr(ctx, "graph_outputs", set()))


def unmerge(ctx: Context, node, target: SymVec) -> bool:
    """Emit the Reshape `node` (target `target`, a split of a merged leading axis) as an
    Identity after undoing the merge; False (nothing emitted) when the pattern does not hold."""
    data = ctx.resolve(node.input[0])
    chain, v = [], data
    while True:
        n = _producer(ctx, v)
        if n is None:
            return False
        if n.op is Op.RESHAPE:
            merge = n
            break
        nxt = _chain_input(ctx, n)
        if nxt is None:
            return False
        chain.append(n)
        v = nxt
    src = ctx.shape(merge.inputs[0])
    merged = ctx.shape(merge.outputs[0])
    out = ctx.shape(data)
    if src is None or merged is None or out is None or len(merged) != 2 or len(src) < 3:
        return False
    lead, last = target.dims[:-1], target.dims[-1]
    if [SymDim.of(d) for d in src[:-1]] != list(lead) or not last.is_int or \
            SymDim.of(merged[-1]) != SymDim.of(src[-1]) or SymDim.of(out[-1]) != last:
        return False
    values = {merge.outputs[0]} | {o for n in chain for o in n.outputs}
    if _other_readers(ctx, values | {data}, chain, data):
        return False
    merge.op, merge.attrs = Op.IDENTITY, {}
    for n in [merge] + chain[::-1]:
        ctx.inferred.pop(n.outputs[0], None)
        ctx._infer(n)
    ctx.emit(Op.IDENTITY, [data], [node.output[0]])
    return True
