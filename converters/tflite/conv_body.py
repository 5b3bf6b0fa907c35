"""CONV_2D for the TFLite body interpreter (body.py): Keras ConvLSTM loop bodies convolve
x_t and h inside the WHILE. NHWC input, OHWI filter, SAME/VALID padding, strides, dilations,
fused activation; float64 like the rest of the interpreter."""
from __future__ import annotations

import numpy as np

from edgeseq.converters.tflite.body import BodyError, _fused, kernel
from edgeseq.windows import sliding_windows

PADDINGS = {0: "SAME", 1: "VALID"}     # TFLite Padding enum


def conv2d_geometry(op, k_shape: tuple, in_shape: tuple) -> dict:
    """{"padding", "strides", "dilations", "pads"} of a CONV_2D op (pads: TF's SAME rule)."""
    padding = PADDINGS.get(op.option("padding", 0))
    if padding is None:
        raise BodyError(f"CONV_2D padding {op.option('padding')}")
    strides = (int(op.option("strideH", 1) or 1), int(op.option("strideW", 1) or 1))
    dil = (int(op.option("dilationHFactor", 1) or 1), int(op.option("dilationWFactor", 1) or 1))
    begin, end = [0, 0], [0, 0]
    if padding == "SAME":
        for j in range(2):
            out = -(-in_shape[j] // strides[j])
            total = max((out - 1) * strides[j] + dil[j] * (k_shape[j] - 1) + 1 - in_shape[j], 0)
            begin[j], end[j] = total // 2, total - total // 2
    return {"padding": padding, "strides": strides, "dilations": dil,
            "pads": tuple(begin) + tuple(end)}


@kernel("CONV_2D")
def _conv2d(op, x, w, b=None):
    if x.ndim != 4 or w.ndim != 4 or w.shape[3] != x.shape[3]:
        raise BodyError(f"CONV_2D of input {x.shape} and filter {w.shape} (NHWC, OHWI, no "
                        f"groups)")
    geo = conv2d_geometry(op, w.shape[1:3], x.shape[1:3])
    win = sliding_windows(np.moveaxis(x, 3, 1), w.shape[1:3], geo["strides"], geo["dilations"],
                          geo["pads"], 0.0)                   # [N, C, H', W', kh, kw]
    y = np.einsum("nchwij,oijc->nhwo", win, w)
    if b is not None:
        y = y + b
    return [_fused(op, y)]
