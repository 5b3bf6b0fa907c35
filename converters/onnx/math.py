"""Arithmetic, activations, reductions, linear algebra and 1-D Conv."""
from __future__ import annotations

import numpy as np

from edgeseq.ops import Op
from edgeseq.converters.onnx.context import Context, Unsupported
from edgeseq.converters.onnx.registry import handler

_BINARY = {"Add": Op.ADD, "Sub": Op.SUB, "Mul": Op.MUL, "Div": Op.DIV, "Pow": Op.POW}
_UNARY = {"Relu": Op.RELU, "Sigmoid": Op.SIGMOID, "Tanh": Op.TANH, "Sqrt": Op.SQRT,
          "Exp": Op.EXP, "Log": Op.LOG, "Neg": Op.NEG, "Abs": Op.ABS}


def _binary(op: Op):
    def convert(ctx: Context, node) -> None:
        ctx.attrs(node)
        a, b = ctx.inp(node, 0), ctx.inp(node, 1)
        # ONNX Pow allows an exponent of another type; edgeseq binary ops want one dtype.
        da, db = ctx.dtype(a), ctx.dtype(b)
        if da and db and da != db:
            if b in ctx.consts:
                b = ctx.add_const(f"{b}/as_{da}", ctx.consts[b].astype(da))
            elif a in ctx.consts:
                a = ctx.add_const(f"{a}/as_{db}", ctx.consts[a].astype(db))
            else:
                raise Unsupported(f"operand dtypes differ ({da} vs {db})")
        a, b = _rank1_scalar(ctx, a, b), _rank1_scalar(ctx, b, a)
        ctx.emit(op, [a, b], [node.output[0]])
    return convert


def _rank1_scalar(ctx: Context, name: str, other: str) -> str:
    """A 0-d constant as shape (1,) when the other operand has rank >= 1: broadcasting gives the
    same result, and artifacts then never need 0-d tensors (edgeseq.artifact currently stores
    them as (1,); see docs/onnx.md)."""
    c = ctx.consts.get(name)
    shp = ctx.shape(other)
    if c is not None and c.ndim == 0 and shp:
        return ctx.add_const(f"{name}/1d", c.reshape(1))
    return name


def _unary(op: Op):
    def convert(ctx: Context, node) -> None:
        ctx.attrs(node)
        ctx.emit(op, [ctx.inp(node, 0)], [node.output[0]])
    return convert


for _name, _op in _BINARY.items():
    handler(_name, since=7)(_binary(_op))
for _name, _op in _UNARY.items():
    handler(_name, since=6)(_unary(_op))


@handler("LeakyRelu", since=6)
def leaky_relu(ctx: Context, node) -> None:
    a = ctx.attrs(node, {"alpha"})
    ctx.emit(Op.LEAKY_RELU, [ctx.inp(node, 0)], [node.output[0]], {"alpha": a.get("alpha", 0.01)})


@handler("Clip", since=6)
def clip_attrs(ctx: Context, node) -> None:
    a = ctx.attrs(node, {"min", "max"})
    ctx.emit(Op.CLIP, [ctx.inp(node, 0)], [node.output[0]],
             {"min": a.get("min", -3.4028234663852886e38), "max": a.get("max", 3.4028234663852886e38)})


@handler("Clip", since=11)
def clip_inputs(ctx: Context, node) -> None:
    ctx.attrs(node)
    lo = ctx.opt_const(node, 1, "min")
    hi = ctx.opt_const(node, 2, "max")
    attrs = {}
    if lo is not None:
        attrs["min"] = float(lo)
    if hi is not None:
        attrs["max"] = float(hi)
    ctx.emit(Op.CLIP, [ctx.inp(node, 0)], [node.output[0]], attrs)


def _softmax(op: Op, since: int):
    def convert(ctx: Context, node) -> None:
        a = ctx.attrs(node, {"axis"})
        axis = int(a.get("axis", 1 if since < 13 else -1))
        if since < 13:
            # NOTE: before opset 13 Softmax flattens to 2-D at `axis`; that equals a per-axis
            # softmax only when `axis` is the last dimension.
            shp = ctx.shape(node.input[0])
            if shp is None or axis not in (-1, len(shp) - 1):
                raise Unsupported(f"opset<13 {node.op_type} with axis={axis} on shape {shp}: "
                                  f"only the last axis is supported")
            axis = -1
        ctx.emit(op, [ctx.inp(node, 0)], [node.output[0]], {"axis": axis})
    return convert


for _since in (1, 13):
    handler("Softmax", since=_since)(_softmax(Op.SOFTMAX, _since))
    handler("LogSoftmax", since=_since)(_softmax(Op.LOG_SOFTMAX, _since))


@handler("LpNormalization", since=1)
def lp_normalization(ctx: Context, node) -> None:
    a = ctx.attrs(node, {"axis", "p"})
    p = int(a.get("p", 2))
    if p not in (1, 2):
        raise Unsupported(f"LpNormalization with p={p}: only p=1 and p=2 are defined by ONNX")
    ctx.emit(Op.LP_NORMALIZATION, [ctx.inp(node, 0)], [node.output[0]],
             {"axis": int(a.get("axis", -1)), "p": p, "epsilon": 0.0})


@handler("MatMul", since=1)
def matmul(ctx: Context, node) -> None:
    ctx.attrs(node)
    ctx.emit(Op.MATMUL, [ctx.inp(node, 0), ctx.inp(node, 1)], [node.output[0]])


@handler("Gemm", since=7)
def gemm(ctx: Context, node) -> None:
    a = ctx.attrs(node, {"alpha", "beta", "transA", "transB"})
    ins = [ctx.inp(node, 0), ctx.inp(node, 1)]
    if ctx.inp(node, 2):
        ins.append(ctx.inp(node, 2))
    ctx.emit(Op.GEMM, ins, [node.output[0]],
             {"alpha": a.get("alpha", 1.0), "beta": a.get("beta", 1.0),
              "trans_a": bool(a.get("transA", 0)), "trans_b": bool(a.get("transB", 0))})


@handler("Conv", since=1)
def conv(ctx: Context, node) -> None:
    a = ctx.attrs(node, {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"})
    w = ctx.need_const(node, 1, "W")
    if w.ndim == 4:
        from edgeseq.converters.onnx.spatial import conv2d
        conv2d(ctx, node, a, w)
        return
    if w.ndim != 3:
        raise Unsupported(f"only 1-D and 2-D convolutions are supported (weight rank 3 or 4), "
                          f"got weight shape {w.shape}")
    k = w.shape[2]
    stride = int((a.get("strides") or [1])[0])
    dil = int((a.get("dilations") or [1])[0])
    pads = list(a.get("pads") or [0, 0])
    auto = a.get("auto_pad", "NOTSET")
    if auto == "VALID":
        pads = [0, 0]
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        shp = ctx.shape(node.input[0])
        if shp is None or not isinstance(shp[-1], int):
            raise Unsupported(f"auto_pad={auto} needs a static input length; use --shape")
        length = shp[-1]
        out = -(-length // stride)
        total = max(0, (out - 1) * stride + dil * (k - 1) + 1 - length)
        small, big = total // 2, total - total // 2
        pads = [small, big] if auto == "SAME_UPPER" else [big, small]
    elif auto != "NOTSET":
        raise Unsupported(f"auto_pad '{auto}' is not supported")
    ins = [ctx.inp(node, 0), ctx.inp(node, 1)]
    if ctx.inp(node, 2):
        ins.append(ctx.inp(node, 2))
    ctx.emit(Op.CONV1D, ins, [node.output[0]],
             {"stride": stride, "pads": tuple(int(p) for p in pads), "dilation": dil,
              "group": int(a.get("group", 1))})


def _reduce(op: Op, axes_as_input: bool):
    def convert(ctx: Context, node) -> None:
        a = ctx.attrs(node, {"keepdims", "noop_with_empty_axes"} | (set() if axes_as_input else {"axes"}))
        if axes_as_input:
            axes = ctx.opt_const(node, 1, "axes")
            axes = [] if axes is None else [int(x) for x in np.ravel(axes)]
            if not axes and a.get("noop_with_empty_axes", 0):
                ctx.emit(Op.IDENTITY, [ctx.inp(node, 0)], [node.output[0]])
                return
        else:
            axes = list(a.get("axes", []))
        ctx.emit(op, [ctx.inp(node, 0)], [node.output[0]],
                 {"axes": tuple(axes), "keepdims": bool(a.get("keepdims", 1))})
    return convert


handler("ReduceMean", since=1)(_reduce(Op.REDUCE_MEAN, False))
handler("ReduceMean", since=18)(_reduce(Op.REDUCE_MEAN, True))
handler("ReduceSum", since=1)(_reduce(Op.REDUCE_SUM, False))
handler("ReduceSum", since=13)(_reduce(Op.REDUCE_SUM, True))
