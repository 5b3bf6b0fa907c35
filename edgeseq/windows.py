"""Sliding windows over the trailing axes of an array: the one definition of how Conv2d and
MaxPool see their input (padding, strides, dilations, ceil_mode), shared by the float64
reference and the runtime's glue kernels."""
from __future__ import annotations

import numpy as np

from edgeseq.shapes import pool_params, window_count


def sliding_windows(x: np.ndarray, kernel, strides, dilations, pads, fill: float,
                    ceil_mode: bool = False) -> np.ndarray:
    """A view [..., out_1..out_k, kernel_1..kernel_k] of x padded with `fill` over its last
    k = len(kernel) axes (one copy for the padding; the windows themselves are a view)."""
    k = len(kernel)
    lead = x.ndim - k
    begin, end = list(pads[:k]), list(pads[k:])
    for j in range(k):      # with ceil_mode, pad the end so the last partial window exists
        n = window_count(x.shape[lead + j], kernel[j], strides[j], dilations[j], begin[j],
                         end[j], ceil_mode)
        need = (n - 1) * strides[j] + dilations[j] * (kernel[j] - 1) + 1
        end[j] += max(0, need - (x.shape[lead + j] + begin[j] + end[j]))
    if any(begin) or any(end):
        # NOTE: np.full + one assignment, not np.pad (tens of microseconds of Python per call)
        xp = np.full(x.shape[:lead] + tuple(x.shape[lead + j] + begin[j] + end[j]
                                            for j in range(k)), fill, dtype=x.dtype)
        xp[(Ellipsis,) + tuple(slice(begin[j], begin[j] + x.shape[lead + j])
                               for j in range(k))] = x
        x = xp
    spans = [dilations[j] * (kernel[j] - 1) + 1 for j in range(k)]
    win = np.lib.stride_tricks.sliding_window_view(x, spans, axis=tuple(range(lead, x.ndim)))
    win = win[(Ellipsis,) + tuple(slice(None, None, d) for d in dilations)]
    return win[(slice(None),) * lead + tuple(slice(None, None, s) for s in strides)]


def max_pool(x: np.ndarray, attrs: dict) -> np.ndarray:
    """MaxPool over the trailing axes of x (ONNX attributes; padding never wins the max).
    Shared by the float64 reference and the runtime: the dtype of x is kept."""
    kernel, strides, dilations, pads = pool_params(attrs)
    win = sliding_windows(x, kernel, strides, dilations, pads, -np.inf, attrs["ceil_mode"])
    return np.ascontiguousarray(win.max(axis=tuple(range(-len(kernel), 0))))
