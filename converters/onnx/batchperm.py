"""Dropping a run-time sort/unsort of the batch (PyTorch pack_padded_sequence with
enforce_sorted=False, legacy exporter).

The export sorts the batch by length (TopK on the lengths), runs the recurrent layers on the
sorted batch with the sorted lengths, and unsorts the result (Gather with the inverse
permutation built by ScatterElements over a Range). ONNX recurrent ops take unsorted lengths,
and every op between the sort and the unsort treats batch items independently, so the pair
cancels: edgeseq runs the layers on the original order. Values between the two carry a tag
(`ctx.batch_perm[name] = (key, batch axis)`); each op they reach must be known to keep batch
items apart (a table below), otherwise conversion stops with an error naming the node, so a
model that mixes batch items is never silently changed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeseq.converters.onnx.context import Context, Unsupported
from edgeseq.converters.onnx.symdims import Filled, SymDim, SymVec


@dataclass(frozen=True)
class Perm:
    """A permutation of the batch derived from the lengths value `key` (resolved name):
    kind "perm" (TopK indices), "inv" (its inverse), "sorted_lens" (TopK values)."""
    key: str
    kind: str


@dataclass(frozen=True)
class Iota:
    """Range(0, n, 1) for a symbolic n."""
    n: object


HANDLED = object()     # a rule that set the outputs itself


def sym(ctx: Context, name: str):
    return ctx.symbolic.get(ctx.resolve(name)) if name else None


def topk(ctx: Context, node):
    """TopK over all of a run-time 1-D lengths tensor: the sort permutation."""
    lens = ctx.resolve(node.input[0])
    if not lens or lens in ctx.consts or lens in ctx.symbolic:
        return None
    shp = ctx.shape(lens)
    a = {at.name: at.i for at in node.attribute}
    if shp is None or len(shp) != 1 or a.get("axis", -1) not in (-1, 0) or \
            not a.get("largest", 1) or not a.get("sorted", 1):
        return None
    k = sym(ctx, node.input[1])
    kc = ctx.const(node.input[1])
    full = SymDim.of(shp[0])
    if not ((isinstance(k, SymVec) and k.dims == (full,)) or
            (kc is not None and full.is_int and int(np.ravel(kc)[0]) == full.coef)):
        return None
    ctx.symbolic[node.output[0]] = Perm(lens, "sorted_lens")
    if len(node.output) > 1 and node.output[1]:
        ctx.symbolic[node.output[1]] = Perm(lens, "perm")
    return HANDLED


def reduce_prod(ctx: Context, node):
    v = sym(ctx, node.input[0])
    if not isinstance(v, SymVec) or len(node.input) > 1:
        return None
    keep = next((at.i for at in node.attribute if at.name == "keepdims"), 1)
    p = SymDim(1)
    for d in v.dims:
        p = p * d
    return SymVec((p,), scalar=not keep)


def range_(ctx: Context, node):
    start, delta = ctx.const(node.input[0]), ctx.const(node.input[2])
    limit = sym(ctx, node.input[1])
    if start is None or delta is None or not isinstance(limit, SymVec) or len(limit.dims) != 1:
        return None
    if int(np.ravel(start)[0]) != 0 or int(np.ravel(delta)[0]) != 1:
        return None
    return Iota(limit.dims[0])


def scatter_elements(ctx: Context, node):
    """ScatterElements(zeros, perm, Range(0, N)) along axis 0 = the inverse permutation."""
    data, idx, upd = (sym(ctx, n) for n in node.input[:3])
    axis = next((at.i for at in node.attribute if at.name == "axis"), 0)
    if isinstance(idx, Perm) and idx.kind == "perm" and isinstance(upd, Iota) and \
            isinstance(data, Filled) and axis == 0:
        return Perm(idx.key, "inv")
    return None


def gather(ctx: Context, node):
    """Gather along the batch with the sort permutation (tag) or its inverse (untag)."""
    idx = sym(ctx, node.input[1])
    if not isinstance(idx, Perm) or idx.kind not in ("perm", "inv"):
        return None
    axis = next((at.i for at in node.attribute if at.name == "axis"), 0)
    src = node.input[0]
    shp = ctx.shape(src)
    if shp is not None:
        axis %= len(shp)
    tag = ctx.batch_perm.get(src)
    if idx.kind == "perm":
        if tag is not None:
            raise Unsupported("the batch is sorted twice")
        ctx.batch_perm[node.output[0]] = (idx.key, axis)
    elif tag != (idx.key, axis):
        raise Unsupported(f"un-sorting '{src}' along axis {axis}, but it is not the batch "
                          f"sorted by '{idx.key}' along that axis (tag {tag})")
    ctx.alias[node.output[0]] = ctx.resolve(src)
    return HANDLED


# ---- which ops keep batch items apart, and where the batch axis goes -------------------------
_SAME = {"Relu", "Sigmoid", "Tanh", "Sqrt", "Exp", "Log", "Neg", "Abs", "LeakyRelu", "Clip",
         "Cast", "Identity", "Dropout"}
_BINARY = {"Add", "Sub", "Mul", "Div", "Pow"}


def _attr(node, name, default=None):
    for at in node.attribute:
        if at.name == name:
            from onnx import helper
            return helper.get_attribute_value(at)
    return default


def _axes(ctx: Context, node, i: int = 1):
    a = _attr(node, "axes")
    if a is not None:
        return [int(x) for x in a]
    c = ctx.const(node.input[i]) if len(node.input) > i and node.input[i] else None
    return None if c is None else [int(x) for x in np.ravel(c)]


def _rank(ctx: Context, name: str) -> int | None:
    s = ctx.shape(name)
    return None if s is None else len(s)


def propagate(ctx: Context, node, emitted) -> None:
    """Tag the outputs of a converted node whose inputs are batch-sorted, or refuse the node
    if it may mix batch items. `emitted` are the edgeseq nodes its handler produced."""
    tags = [ctx.batch_perm.get(n) if n else None for n in node.input]
    live = [t for t in tags if t is not None]
    if not live:
        return
    key, a = live[0]
    op = node.op_type

    def refuse(why: str):
        raise Unsupported(f"a batch sorted by pack_padded_sequence (by '{key}', axis {a}) "
                          f"reaches this {op}: {why}; edgeseq drops the sort/unsort pair only "
                          f"across ops that keep batch items apart")

    if any(t is not None and t[0] != key for t in tags):
        refuse("two different batch sorts meet")
    out_axes: list[int | None]
    if op in ("LSTM", "GRU", "RNN"):
        layout = int(_attr(node, "layout", 0))
        want = 0 if layout else 1
        if tags[0] != (key, want):
            refuse(f"X must be sorted along its batch axis {want}")
        for i in (5, 6):     # initial states: zeros (dropped) or sorted the same way
            if i < len(node.input) and node.input[i] and tags[i] is None and \
                    ctx.input_name(node, i) not in ("",) and \
                    not _is_zero_state(ctx, node.input[i]):
                refuse("an initial state is not sorted like X")
        out_axes = [0 if layout else 2, 0 if layout else 1, 0 if layout else 1]
    elif op in _SAME:
        out_axes = [a]
    elif op in ("Softmax", "LogSoftmax"):
        r = _rank(ctx, node.input[0])
        if r is None or int(_attr(node, "axis", -1)) % r == a:
            refuse("it normalises along the batch axis")
        out_axes = [a]
    elif op == "Transpose":
        perm = list(_attr(node, "perm") or [])
        if not perm:
            refuse("no perm")
        out_axes = [perm.index(a)]
    elif op == "Reshape":
        shape = next((n.attrs.get("shape") for n in emitted if n.op.value == "Reshape"), None)
        if shape is None or any(d != 0 for d in shape[:a + 1]):
            refuse("the batch axis is not kept by copying the leading dims (0)")
        out_axes = [a]
    elif op in ("Squeeze", "Unsqueeze"):
        axes = _axes(ctx, node)
        r = _rank(ctx, node.input[0])
        if axes is None or r is None:
            refuse("unknown axes or rank")
        if op == "Squeeze":
            axes = [x % r for x in axes]
            if a in axes:
                refuse("it squeezes the batch axis")
            out_axes = [a - sum(x < a for x in axes)]
        else:
            new = sorted(x % (r + len(axes)) for x in axes)
            b = a
            for x in new:
                if x <= b:
                    b += 1
            out_axes = [b]
    elif op in _BINARY or op == "MatMul" or op == "Gemm":
        r_out = max(_rank(ctx, n) or 0 for n in node.input[:2])
        if op == "Gemm":
            if tags[0] != (key, 0) or int(_attr(node, "transA", 0)) or any(tags[1:]):
                refuse("only A may be sorted, along rows")
            c = ctx.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            if c is not None and c.ndim == 2 and c.shape[0] > 1:
                refuse("C varies along the batch rows")
            out_axes = [0]
        elif op == "MatMul":
            r0 = _rank(ctx, node.input[0])
            if tags[0] is None or tags[1] is not None or r0 is None or a >= r0 - 1:
                refuse("only A may be sorted, along a row/batch axis")
            out_axes = [a + r_out - r0]
        else:
            aligned = set()
            for n, t in zip(node.input[:2], tags[:2]):
                r = _rank(ctx, n)
                if r is None:
                    refuse("unknown rank")
                if t is not None:
                    aligned.add(t[1] + r_out - r)
                else:
                    c = ctx.const(n)
                    if c is None:
                        refuse("the other operand is a run-time value in the original order")
            if len(aligned) != 1:
                refuse("operands are sorted along different axes")
            ax = aligned.pop()
            for n, t in zip(node.input[:2], tags[:2]):
                c = ctx.const(n) if t is None else None
                if c is not None:
                    k = ax - (r_out - c.ndim)
                    if 0 <= k < c.ndim and c.shape[k] != 1:
                        refuse("a constant operand varies along the batch axis")
            out_axes = [ax]
    elif op == "Slice":
        axes = _axes(ctx, node, 3)
        r = _rank(ctx, node.input[0])
        if axes is None:
            axes = list(range(len(np.ravel(ctx.const(node.input[1])))))
        if r is None or a in [x % r for x in axes]:
            refuse("it slices the batch axis")
        out_axes = [a]
    elif op in ("Concat", "Split"):
        r = _rank(ctx, node.input[0])
        if r is None or int(_attr(node, "axis", 0)) % r == a or \
                (op == "Concat" and any(t != (key, a) for t in tags)):
            refuse("it joins or splits along the batch axis, or mixes orders")
        out_axes = [a] * len(node.output)
    else:
        refuse("not known to keep batch items apart")
    for name, ax in zip(node.output, out_axes):
        if name and ax is not None:
            ctx.batch_perm[name] = (key, ax)


def _is_zero_state(ctx: Context, name: str) -> bool:
    s = sym(ctx, name)
    if isinstance(s, Filled) and s.value == 0.0:
        return True
    c = ctx.const(name)
    return c is not None and not np.any(c)


def sequence_lens(ctx: Context, node, i: int) -> str | None:
    """The original lengths when a recurrent node's sequence_lens is the sorted lengths (and
    its X is sorted the same way); None if that input is not sorted lengths."""
    s = sym(ctx, ctx.input_name(node, i))
    if not isinstance(s, Perm) or s.kind != "sorted_lens":
        return None
    layout = int(_attr(node, "layout", 0))
    if ctx.batch_perm.get(node.input[0]) != (s.key, 0 if layout else 1):
        raise Unsupported(f"sequence_lens are the lengths sorted by '{s.key}' but X is not "
                          f"sorted the same way")
    return s.key
