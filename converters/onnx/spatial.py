"""ONNX 2-D Conv and MaxPool. A 2-D Conv over a unit axis (Keras Conv1D through tf2onnx,
written [N, C, 1, T] or [N, C, T, 1]) becomes Conv1d between a Squeeze and an Unsqueeze."""
from __future__ import annotations

import numpy as np

from edgeseq.ops import Op
from edgeseq.converters.onnx.context import Context, Unsupported
from edgeseq.converters.onnx.registry import handler


def auto_pads(ctx: Context, node, auto: str, pads, kernel, strides, dilations) -> tuple:
    """Explicit pads [begin..., end...] for ONNX auto_pad (SAME_* needs static sizes)."""
    k = len(kernel)
    if auto in ("NOTSET", ""):
        return tuple(int(p) for p in (pads or [0] * (2 * k)))
    if auto == "VALID":
        return (0,) * (2 * k)
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise Unsupported(f"auto_pad '{auto}' is not supported")
    shp = ctx.shape(node.input[0])
    if shp is None or not all(isinstance(d, int) for d in shp[-k:]):
        raise Unsupported(f"auto_pad={auto} needs static spatial sizes; use --shape")
    begin, end = [], []
    for size, kk, s, d in zip(shp[-k:], kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + d * (kk - 1) + 1 - size)
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return tuple(begin + end)


def conv2d(ctx: Context, node, a: dict, w: np.ndarray) -> None:
    """Conv with a rank-4 weight (called by math.conv)."""
    kernel = tuple(int(x) for x in w.shape[2:])
    strides = tuple(int(x) for x in (a.get("strides") or (1, 1)))
    dil = tuple(int(x) for x in (a.get("dilations") or (1, 1)))
    pads = auto_pads(ctx, node, a.get("auto_pad", "NOTSET"), a.get("pads"), kernel, strides, dil)
    group = int(a.get("group", 1))
    x, y = ctx.inp(node, 0), node.output[0]
    b = [ctx.inp(node, 2)] if ctx.inp(node, 2) else []
    shp = ctx.shape(node.input[0])
    for unit in (2, 3):
        j = unit - 2
        if shp is not None and len(shp) == 4 and shp[unit] == 1 and kernel[j] == 1 \
                and pads[j] == pads[j + 2] == 0:
            o = 1 - j
            w1 = ctx.add_const(f"{ctx.input_name(node, 1)}/1d", np.squeeze(w, axis=unit))
            xs, ys = ctx.tmp(f"{x}/1d"), ctx.tmp(f"{y}/1d")
            ctx.emit(Op.SQUEEZE, [x], [xs], {"axes": (unit,)}, suffix="_squeeze")
            ctx.emit(Op.CONV1D, [xs, w1] + b, [ys],
                     {"stride": strides[o], "pads": (pads[o], pads[o + 2]),
                      "dilation": dil[o], "group": group})
            ctx.emit(Op.UNSQUEEZE, [ys], [y], {"axes": (unit,)}, suffix="_unsqueeze")
            return
    ctx.emit(Op.CONV2D, [x, ctx.inp(node, 1)] + b, [y],
             {"strides": strides, "pads": pads, "dilations": dil, "group": group})


@handler("MaxPool", since=1)
def max_pool(ctx: Context, node) -> None:
    a = ctx.attrs(node, {"auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads",
                         "storage_order", "strides"})
    if len(node.output) > 1 and node.output[1]:
        raise Unsupported("MaxPool's Indices output is not supported")
    kernel = tuple(int(x) for x in a["kernel_shape"])
    k = len(kernel)
    strides = tuple(int(x) for x in (a.get("strides") or (1,) * k))
    dil = tuple(int(x) for x in (a.get("dilations") or (1,) * k))
    pads = auto_pads(ctx, node, a.get("auto_pad", "NOTSET"), a.get("pads"), kernel, strides, dil)
    ctx.emit(Op.MAX_POOL, [ctx.inp(node, 0)], [node.output[0]],
             {"kernel_shape": kernel, "strides": strides, "pads": pads, "dilations": dil,
              "ceil_mode": bool(a.get("ceil_mode", 0))})
