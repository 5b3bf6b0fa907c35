"""Shape arithmetic on dynamic dims, folded symbolically.

Real exports compute shapes at run time: `Reshape(y, Concat(Slice(Shape(y)), [8]))`, or zero
initial states `ConstantOfShape(Concat([2], Unsqueeze(Gather(Shape(x), 1)), [H]))`. When a dim
is dynamic (a symbol such as "T" from ONNX shape inference) these cannot fold to numbers, but
they can fold to *symbolic* shape vectors: each entry is a product c * s1 * s2 ... of an
integer and symbols. A symbolic shape then lowers to an edgeseq Reshape target (0 copies a
dim, -1 infers one), and a ConstantOfShape of a symbolic shape becomes a `Filled` marker that
recurrent handlers read as "initial state = zeros" (absent); so does an Expand of a one-element
constant to a symbolic shape. Anything else stays unsupported.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from edgeseq.converters.onnx import batchperm
from edgeseq.converters.onnx.context import Context
from edgeseq.converters.onnx.symdims import Filled, SymDim, SymVec

_SYM: dict[str, Callable] = {}


def _sym(op_type: str):
    def deco(fn):
        _SYM[op_type] = fn
        return fn
    return deco


def try_symbolic(ctx: Context, node) -> bool:
    """Evaluate `node` on symbolic shape values if it can; True if its outputs are now known."""
    fn = _SYM.get(node.op_type)
    if fn is None or node.domain not in ("", "ai.onnx"):
        return False
    try:
        out = fn(ctx, node)
    except (_NotSymbolic, ValueError, IndexError, TypeError):
        return False
    if out is None:
        return False
    if out is batchperm.HANDLED:
        return True
    if isinstance(out, SymVec) and out.concrete() is not None:
        ctx.consts[node.output[0]] = out.concrete()
    else:
        ctx.symbolic[node.output[0]] = out
    return True


class _NotSymbolic(Exception):
    pass


def _vec(ctx: Context, name: str) -> SymVec:
    """Operand as a SymVec (constants included)."""
    name = ctx.resolve(name)
    if name in ctx.symbolic and isinstance(ctx.symbolic[name], SymVec):
        return ctx.symbolic[name]
    c = ctx.consts.get(name)
    if c is not None and c.ndim <= 1 and np.issubdtype(c.dtype, np.integer):
        return SymVec(tuple(SymDim(int(v)) for v in np.ravel(c)), scalar=c.ndim == 0)
    raise _NotSymbolic(name)


def _ints(ctx: Context, name: str) -> list[int]:
    c = ctx.const(name)
    if c is None:
        raise _NotSymbolic(name)
    return [int(v) for v in np.ravel(c)]


def _any_symbolic(ctx: Context, node) -> bool:
    return any(ctx.resolve(n) in ctx.symbolic for n in node.input if n)


@_sym("Shape")
def _shape(ctx, node):
    shp = ctx.shape(node.input[0])
    if shp is None:
        return None
    a = {at.name: at.i for at in node.attribute}
    start, end = a.get("start", 0), a.get("end", len(shp))
    return SymVec(tuple(SymDim.of(d) for d in shp[slice(start, end)]))


@_sym("Gather")
def _gather(ctx, node):
    if isinstance(ctx.symbolic.get(ctx.resolve(node.input[1])), batchperm.Perm):
        return batchperm.gather(ctx, node)
    if not _any_symbolic(ctx, node):
        return None
    v = _vec(ctx, node.input[0])
    idx = ctx.const(node.input[1])
    if idx is None or idx.ndim > 1:
        return None
    picked = tuple(v.dims[int(i)] for i in np.ravel(idx))
    return SymVec(picked, scalar=idx.ndim == 0)


def _slice(ctx, node):
    if not _any_symbolic(ctx, node) or ctx.resolve(node.input[0]) not in ctx.symbolic:
        return None
    v = _vec(ctx, node.input[0])
    starts, ends = _ints(ctx, node.input[1]), _ints(ctx, node.input[2])
    steps = _ints(ctx, node.input[4]) if len(node.input) > 4 and node.input[4] else [1]
    return SymVec(v.dims[slice(starts[0], ends[0], steps[0])])


@_sym("Concat")
def _concat(ctx, node):
    if not _any_symbolic(ctx, node):
        return None
    dims: tuple = ()
    for n in node.input:
        dims += _vec(ctx, n).dims
    return SymVec(dims)


@_sym("Unsqueeze")
def _unsqueeze(ctx, node):
    if not _any_symbolic(ctx, node):
        return None
    v = _vec(ctx, node.input[0])
    if not v.scalar:
        raise _NotSymbolic("rank")
    return SymVec(v.dims)


@_sym("Squeeze")
def _squeeze(ctx, node):
    if not _any_symbolic(ctx, node):
        return None
    v = _vec(ctx, node.input[0])
    if len(v.dims) != 1:
        raise _NotSymbolic("rank")
    return SymVec(v.dims, scalar=True)


@_sym("Reshape")
def _reshape(ctx, node):
    if ctx.resolve(node.input[0]) not in ctx.symbolic:
        return None
    v = _vec(ctx, node.input[0])
    target = _ints(ctx, node.input[1])
    if len(v.dims) != 1 or target not in ([], [1], [-1]):
        raise _NotSymbolic("reshape")
    return SymVec(v.dims, scalar=target == [])


@_sym("Cast")
def _cast(ctx, node):
    src = ctx.symbolic.get(ctx.resolve(node.input[0]))
    if src is None:
        return None
    if isinstance(src, (batchperm.Perm, batchperm.Iota)):
        return src          # index/length dtypes do not matter to the sort bookkeeping
    return _vec(ctx, node.input[0])


@_sym("Mul")
def _mul(ctx, node):
    if not _any_symbolic(ctx, node):
        return None
    a, b = _vec(ctx, node.input[0]), _vec(ctx, node.input[1])
    if len(a.dims) == 1 and len(b.dims) > 1:
        a, b = b, a
    if len(b.dims) == 1:
        return SymVec(tuple(d * b.dims[0] for d in a.dims), a.scalar and b.scalar)
    if len(a.dims) != len(b.dims):
        raise _NotSymbolic("broadcast")
    return SymVec(tuple(x * y for x, y in zip(a.dims, b.dims)), a.scalar)


@_sym("ConstantOfShape")
def _constant_of_shape(ctx, node):
    if ctx.resolve(node.input[0]) not in ctx.symbolic:
        return None
    v = _vec(ctx, node.input[0])
    value, dtype = 0.0, "float32"
    for at in node.attribute:
        if at.name == "value":
            from onnx import numpy_helper
            arr = numpy_helper.to_array(at.t)
            value, dtype = float(np.ravel(arr)[0]), str(arr.dtype)
    return Filled(v, value, dtype)


@_sym("Slice")
def _slice_any(ctx, node):
    """Slice of a symbolic vector, or of a Filled tensor (which stays Filled)."""
    src = ctx.symbolic.get(ctx.resolve(node.input[0]))
    if isinstance(src, Filled):
        starts, ends = _ints(ctx, node.input[1]), _ints(ctx, node.input[2])
        axes = _ints(ctx, node.input[3]) if len(node.input) > 3 and node.input[3] \
            else list(range(len(starts)))
        dims = list(src.shape.dims)
        for s, e, ax in zip(starts, ends, axes):
            d = dims[ax]
            if not d.is_int:
                if not (s == 0 and e >= 2 ** 31):
                    raise _NotSymbolic("slice of a dynamic dim")
                continue
            dims[ax] = SymDim(len(range(*slice(s, e).indices(d.coef))))
        return Filled(SymVec(tuple(dims)), src.value, src.dtype)
    return _slice(ctx, node)


@_sym("Expand")
def _expand(ctx, node):
    """Expand of a one-element constant to a symbolic shape (torch.zeros(1, x.size(0), H)
    under the dynamo exporter) is a Filled tensor, like ConstantOfShape."""
    if ctx.resolve(node.input[1]) not in ctx.symbolic:
        return None
    c = ctx.const(node.input[0])
    if c is None or c.size != 1:
        return None
    v = _vec(ctx, node.input[1])
    rank = max(len(v.dims), c.ndim)
    dims = (SymDim(1),) * (rank - len(v.dims)) + v.dims
    return Filled(SymVec(dims), float(np.ravel(c)[0]), str(c.dtype))


_sym("TopK")(batchperm.topk)
_sym("ReduceProd")(batchperm.reduce_prod)
_sym("Range")(batchperm.range_)
_sym("ScatterElements")(batchperm.scatter_elements)


def reshape_target(vec: SymVec, in_shape: tuple | None) -> tuple[int, ...] | None:
    """A symbolic Reshape target as edgeseq ints (0 = copy that input dim, -1 = inferred)."""
    out, unknown = [], 0
    for k, d in enumerate(vec.dims):
        if d.is_int:
            out.append(d.coef)
        elif in_shape is not None and k < len(in_shape) and SymDim.of(in_shape[k]) == d:
            out.append(0)
        else:
            out.append(-1)
            unknown += 1
    return tuple(out) if unknown <= 1 else None
