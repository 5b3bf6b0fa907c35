"""Handlers for 2-D convolution and max pooling (CRNN front ends; Conv1D written as a 2-D
convolution with a unit axis becomes Conv1d). Imported by `_glue`.
"""
from __future__ import annotations

import numpy as np

from edgeseq.errors import UnsupportedModelError
from edgeseq.ops import Op
from edgeseq.converters.torch._glue import _conv1d, out_shape
from edgeseq.converters.torch._lowering import V, handles


def _pair(v, n: int = 2) -> tuple[int, ...]:
    v = tuple(int(x) for x in (v if isinstance(v, (list, tuple)) else [v]))
    return v * n if len(v) == 1 else v


def _same_pads(kernel, dilation) -> tuple[int, ...]:
    """PyTorch padding='same' (stride 1): the odd extra pad goes to the end."""
    totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
    return tuple(t // 2 for t in totals) + tuple(t - t // 2 for t in totals)


def conv2d(cx, base: str, x: V, w, b, strides, pads, dilations, group: int, shape) -> V:
    """A 2-D convolution; as Conv1d between a Squeeze and an Unsqueeze when one spatial axis
    is a unit axis the kernel does not move along (Keras/tf2onnx Conv1D, CRNN heads)."""
    for unit in (2, 3):
        j = unit - 2
        if x.shape[unit] == 1 and np.shape(w)[unit] == 1 and pads[j] == pads[j + 2] == 0 \
                and not isinstance(w, V):
            o = 1 - j                     # the axis the kernel moves along
            xs = x.shape[:unit] + x.shape[unit + 1:]
            sq = cx.emit1(Op.SQUEEZE, [x], base + "_1d", xs, axes=[unit])
            w1 = np.ascontiguousarray(np.squeeze(np.asarray(w), axis=unit))
            ys = shape[:unit] + shape[unit + 1:]
            y = cx.emit1(Op.CONV1D, [sq, w1, b], base + "_conv1d", ys, stride=strides[o],
                         pads=(pads[o], pads[o + 2]), dilation=dilations[o], group=group)
            return cx.emit1(Op.UNSQUEEZE, [y], base, shape, axes=[unit])
    return cx.emit1(Op.CONV2D, [x, w, b], base, shape, strides=list(strides), pads=list(pads),
                    dilations=list(dilations), group=group)


def _conv2d_args(x, w, stride, padding, dilation):
    if x.rank != 4:
        raise UnsupportedModelError(f"Conv2d input must be batched (N, C, H, W), got {x.shape}")
    k = tuple(np.shape(w)[2:])
    stride, dilation = _pair(stride), _pair(dilation)
    if isinstance(padding, str):
        pads = (0, 0, 0, 0) if padding == "valid" else _same_pads(k, dilation)
    else:
        p = _pair(padding)
        pads = p + p
    return stride, pads, dilation


@handles("aten.conv2d.default", "aten.conv2d.padding")
def _conv2d_op(cx, node, x, w, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
               groups=1):
    s, p, d = _conv2d_args(x, w, stride, padding, dilation)
    return conv2d(cx, node.name, x, w, b, s, p, d, int(groups), out_shape(node))


@handles("aten.convolution.default")
def _convolution(cx, node, x, w, b, stride, padding, dilation, transposed, output_padding, groups):
    if transposed or len(stride) not in (1, 2):
        raise UnsupportedModelError("only 1-D and 2-D non-transposed convolutions map to the IR")
    if len(stride) == 1:
        return _conv1d(cx, node, x, w, b, stride, padding, dilation, groups)
    s, p, d = _conv2d_args(x, w, stride, padding, dilation)
    return conv2d(cx, node.name, x, w, b, s, p, d, int(groups), out_shape(node))


def _max_pool(n: int):
    def fn(cx, node, x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
        k = _pair(kernel_size, n)
        s = _pair(stride, n) if stride not in ((), [], None) else k
        p = _pair(padding, n)
        d = _pair(dilation, n)
        if any(2 * pj > kj for pj, kj in zip(p, k)):
            raise UnsupportedModelError(f"max_pool padding {p} larger than half the kernel {k}")
        return cx.emit1(Op.MAX_POOL, [x], node.name, out_shape(node), kernel_shape=list(k),
                        strides=list(s), pads=list(p + p), dilations=list(d),
                        ceil_mode=bool(ceil_mode))
    return fn


handles("aten.max_pool2d.default")(_max_pool(2))
