"""Selection ops in NumPy, shared by the float64 reference and the runtime's per-node glue
(they compute no arithmetic, so one implementation serves both precisions)."""
from __future__ import annotations

import numpy as np

from edgeseq.ops import Op

COMPARE = {Op.EQUAL: np.equal, Op.GREATER: np.greater, Op.LESS: np.less}


def arg_extremum(x: np.ndarray, op: Op, attrs: dict) -> np.ndarray:
    """ArgMax / ArgMin (ONNX: first index of the extremum, or the last with
    select_last_index), as int64."""
    ax = attrs["axis"] % x.ndim
    fn = np.argmax if op is Op.ARG_MAX else np.argmin
    if attrs["select_last_index"]:
        idx = x.shape[ax] - 1 - fn(np.flip(x, axis=ax), axis=ax)
    else:
        idx = fn(x, axis=ax)
    idx = idx.astype(np.int64)
    return np.expand_dims(idx, ax) if attrs["keepdims"] else idx
