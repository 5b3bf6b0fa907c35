"""Layout glue: Concat, Split, Slice, Transpose, Reshape, Flatten, Squeeze/Unsqueeze, Pad,
Gather, Cast, Identity/Dropout. Operands that moved from attributes to inputs in later opsets
must be constants after folding; each form has its own small handler."""
from __future__ import annotations

import numpy as np

from edgeseq.errors import ModelFormatError
from edgeseq.ops import Op
from edgeseq.converters.unit_axes import UNIT_OPS, unit_axes_change, unit_move_perm
from edgeseq.converters.onnx.context import ONNX_TO_NP, Context, Unsupported
from edgeseq.converters.onnx.registry import handler
from edgeseq.converters.onnx.rowwise import unmerge
from edgeseq.converters.onnx.symbolic import reshape_target
from edgeseq.converters.onnx.symdims import SymVec


def _ints(x) -> tuple[int, ...]:
    return tuple(int(v) for v in np.ravel(x))


@handler("Identity", since=1)
def identity(ctx: Context, node) -> None:
    ctx.attrs(node)
    ctx.alias[node.output[0]] = ctx.resolve(node.input[0])


@handler("Dropout", since=1)
def dropout(ctx: Context, node) -> None:
    # Inference: Dropout is the identity (its ratio/training_mode operands are ignored).
    ctx.attrs(node, {"ratio", "is_test", "seed", "consumed_inputs"})
    if len(node.output) > 1 and node.output[1]:
        raise Unsupported("the mask output of Dropout is not supported")
    ctx.alias[node.output[0]] = ctx.resolve(node.input[0])


@handler("Cast", since=6)
def cast(ctx: Context, node) -> None:
    a = ctx.attrs(node, {"to", "saturate", "round_mode"})
    to = ONNX_TO_NP.get(int(a["to"]))
    if to is None:
        raise Unsupported(f"Cast to ONNX type {a['to']} is not supported; supported: "
                          f"{sorted(ONNX_TO_NP.values())}")
    ctx.emit(Op.CAST, [ctx.inp(node, 0)], [node.output[0]], {"to": to})


@handler("Concat", since=4)
def concat(ctx: Context, node) -> None:
    a = ctx.attrs(node, {"axis"})
    ctx.emit(Op.CONCAT, [ctx.inp(node, i) for i in range(len(node.input))], [node.output[0]],
             {"axis": int(a["axis"])})


def _split(ctx: Context, node, sizes, axis: int, num_outputs: int | None = None) -> None:
    outs = list(node.output)
    if sizes is None:
        shp = ctx.shape(node.input[0])
        dim = shp[axis] if shp is not None and -len(shp) <= axis < len(shp) else None
        if not isinstance(dim, int):
            raise Unsupported(f"Split without sizes needs a static size along axis {axis} "
                              f"(input shape {shp}); use --shape")
        n = num_outputs or len(outs)
        chunk = -(-dim // n)
        sizes = [min(chunk, dim - k * chunk) for k in range(n)]
    sizes = [int(s) for s in sizes]
    # Unused outputs ("" in ONNX) still need names in the IR.
    outs = [o or ctx.tmp(f"{ctx.node_name}/unused{k}") for k, o in enumerate(outs)]
    ctx.emit(Op.SPLIT, [ctx.inp(node, 0)], outs, {"axis": axis, "split": tuple(sizes)})


@handler("Split", since=2)
def split_attr(ctx: Context, node) -> None:
    a = ctx.attrs(node, {"axis", "split"})
    _split(ctx, node, a.get("split"), int(a.get("axis", 0)))


@handler("Split", since=13)
def split_input(ctx: Context, node) -> None:
    a = ctx.attrs(node, {"axis", "num_outputs"})
    s = ctx.opt_const(node, 1, "split")
    _split(ctx, node, None if s is None else _ints(s), int(a.get("axis", 0)),
           a.get("num_outputs"))


def _slice(ctx: Context, node, starts, ends, axes, steps) -> None:
    starts, ends = _ints(starts), _ints(ends)
    axes = _ints(axes) if axes is not None else tuple(range(len(starts)))
    steps = _ints(steps) if steps is not None else (1,) * len(starts)
    ctx.emit(Op.SLICE, [ctx.inp(node, 0)], [node.output[0]],
             {"starts": starts, "ends": ends, "axes": axes, "steps": steps})


@handler("Slice", since=1)
def slice_attr(ctx: Context, node) -> None:
    a = ctx.attrs(node, {"starts", "ends", "axes"})
    _slice(ctx, node, a["starts"], a["ends"], a.get("axes"), None)


@handler("Slice", since=10)
def slice_input(ctx: Context, node) -> None:
    ctx.attrs(node)
    _slice(ctx, node, ctx.need_const(node, 1, "starts"), ctx.need_const(node, 2, "ends"),
           ctx.opt_const(node, 3, "axes"), ctx.opt_const(node, 4, "steps"))


@handler("Transpose", since=1)
def transpose(ctx: Context, node) -> None:
    a = ctx.attrs(node, {"perm"})
    ctx.emit(Op.TRANSPOSE, [ctx.inp(node, 0)], [node.output[0]],
             {"perm": tuple(a.get("perm") or ())})


@handler("Reshape", since=5)
def reshape(ctx: Context, node) -> None:
    a = ctx.attrs(node, {"allowzero"})
    sym = ctx.symbolic.get(ctx.resolve(node.input[1]))
    if isinstance(sym, SymVec):
        # a target computed from dynamic dims: copy matching dims (0), infer one (-1)
        shape = reshape_target(sym, ctx.shape(node.input[0]))
        if shape is None and unmerge(ctx, node, sym):
            return
        if shape is None:
            raise Unsupported(f"its target shape {_dims_text(sym)} has more than one dynamic "
                              f"dim that is not its input's own"
                              + ctx.shape_request(node.input[1]))
        if a.get("allowzero", 0) and any(d.is_int and d.coef == 0 for d in sym.dims):
            raise Unsupported("Reshape with allowzero=1 and a 0 in its shape is not supported")
        ctx.emit(Op.RESHAPE, [ctx.inp(node, 0)], [node.output[0]], {"shape": shape})
        return
    shape = _ints(ctx.need_const(node, 1, "shape"))
    if a.get("allowzero", 0) and 0 in shape:
        raise Unsupported(f"Reshape with allowzero=1 and a 0 in shape {list(shape)} is not supported")
    perm = unit_move_perm(ctx.shape(node.input[0]), shape)
    if perm is not None:   # only size-1 axes move: a Transpose, which streams
        ctx.emit(Op.TRANSPOSE, [ctx.inp(node, 0)], [node.output[0]], {"perm": perm})
        return
    unit = unit_axes_change(ctx.shape(node.input[0]), shape)
    if unit is not None:   # only size-1 axes come or go: exact at any length, streams
        ctx.emit(UNIT_OPS[unit[0]], [ctx.inp(node, 0)], [node.output[0]], {"axes": unit[1]})
        return
    ctx.emit(Op.RESHAPE, [ctx.inp(node, 0)], [node.output[0]], {"shape": shape})


@handler("Flatten", since=1)
def flatten(ctx: Context, node) -> None:
    a = ctx.attrs(node, {"axis"})
    axis = int(a.get("axis", 1))
    shp = ctx.shape(node.input[0])
    if axis < 0:
        if shp is None:
            raise Unsupported(f"Flatten axis={axis} needs the input rank")
        axis += len(shp)
    if axis == 0:
        shape = (1, -1)
    elif shp is not None and all(isinstance(d, int) for d in shp[:axis]):
        shape = (int(np.prod(shp[:axis])), -1)
    elif axis == 1:
        shape = (0, -1)
    else:
        raise Unsupported(f"Flatten axis={axis} needs static leading dims, got {shp}")
    ctx.emit(Op.RESHAPE, [ctx.inp(node, 0)], [node.output[0]], {"shape": shape})


def _squeeze(op: Op, axes_as_input: bool):
    def convert(ctx: Context, node) -> None:
        a = ctx.attrs(node, set() if axes_as_input else {"axes"})
        if axes_as_input:
            axes = ctx.opt_const(node, 1, "axes")
            axes = () if axes is None else _ints(axes)
        else:
            axes = tuple(a.get("axes", ()))
        if op is Op.UNSQUEEZE and not axes:
            raise Unsupported("Unsqueeze needs axes")
        _check_axes(ctx, node, op, axes)
        ctx.emit(op, [ctx.inp(node, 0)], [node.output[0]], {"axes": axes})
    return convert


def _check_axes(ctx: Context, node, op: Op, axes) -> None:
    """Axes outside the rank the spec allows are the file's fault (torch's TorchScript exporter
    writes WaveRNN's `squeeze(1)...unsqueeze(-1)` as Unsqueeze axes=[3] on a rank-2 tensor;
    onnxruntime refuses to load it): say so here, not at the shape ops downstream."""
    shp = ctx.shape(node.input[0])
    if shp is None:
        return
    rank = len(shp) + (len(axes) if op is Op.UNSQUEEZE else 0)
    bad = [x for x in axes if not -rank <= x < rank]
    if bad:
        raise ModelFormatError(f"{node.op_type} axes {list(axes)} out of range for "
                               f"{'an output' if op is Op.UNSQUEEZE else 'an input'} of rank "
                               f"{rank} (allowed {-rank}..{rank - 1}; onnxruntime refuses "
                               f"such a file too)", node=node.name or node.op_type, field="axes")


handler("Squeeze", since=1)(_squeeze(Op.SQUEEZE, False))
handler("Squeeze", since=13)(_squeeze(Op.SQUEEZE, True))
handler("Unsqueeze", since=1)(_squeeze(Op.UNSQUEEZE, False))
handler("Unsqueeze", since=13)(_squeeze(Op.UNSQUEEZE, True))

_PAD_MODES = ("constant", "reflect", "edge")


def _pad(ctx: Context, node, pads, mode: str, value: float) -> None:
    if mode not in _PAD_MODES:
        raise Unsupported(f"Pad mode '{mode}' is not supported; supported: {list(_PAD_MODES)}")
    ctx.emit(Op.PAD, [ctx.inp(node, 0)], [node.output[0]],
             {"pads": _ints(pads), "mode": mode, "value": float(value)})


@handler("Pad", since=2)
def pad_attr(ctx: Context, node) -> None:
    a = ctx.attrs(node, {"pads", "mode", "value"})
    _pad(ctx, node, a["pads"], a.get("mode", "constant"), a.get("value", 0.0))


@handler("Pad", since=11)
def pad_input(ctx: Context, node) -> None:
    a = ctx.attrs(node, {"mode"})
    pads = _ints(ctx.need_const(node, 1, "pads"))
    v = ctx.opt_const(node, 2, "constant_value")
    axes = ctx.opt_const(node, 3, "axes")
    if axes is not None:
        # opset 18: pads given only for `axes`; spread them over the full rank.
        shp = ctx.shape(node.input[0])
        if shp is None:
            raise Unsupported("Pad with axes needs the input rank")
        r = len(shp)
        ax = [x % r for x in _ints(axes)]
        full = [0] * (2 * r)
        for k, x in enumerate(ax):
            full[x], full[x + r] = pads[k], pads[k + len(ax)]
        pads = tuple(full)
    _pad(ctx, node, pads, a.get("mode", "constant"), 0.0 if v is None else float(np.ravel(v)[0]))


@handler("Gather", since=1)
def gather(ctx: Context, node) -> None:
    a = ctx.attrs(node, {"axis"})
    axis = int(a.get("axis", 0))
    idx = ctx.const(node.input[1])
    if idx is not None and idx.ndim == 0:
        # A constant scalar index is Slice + Squeeze (keeps 0-d index tensors out of the IR).
        k = int(idx)
        tmp = ctx.tmp(f"{node.output[0]}/slice")
        ctx.emit(Op.SLICE, [ctx.inp(node, 0)], [tmp],
                 {"starts": (k,), "ends": (k + 1 if k != -1 else 2 ** 63 - 1,), "axes": (axis,),
                  "steps": (1,)}, suffix="/slice")
        ctx.emit(Op.SQUEEZE, [tmp], [node.output[0]], {"axes": (axis,)}, suffix="/squeeze")
        return
    ctx.emit(Op.GATHER, [ctx.inp(node, 0), ctx.inp(node, 1)], [node.output[0]], {"axis": axis})


def _dims_text(vec: SymVec) -> str:
    """A symbolic shape as the user would write it: (N, T, 3), (N*T, 6)."""
    def one(d) -> str:
        if d.is_int:
            return str(d.coef)
        return "*".join(([str(d.coef)] if d.coef != 1 else []) + list(d.syms))
    return "(" + ", ".join(one(d) for d in vec.dims) + ")"

