"""Element-wise weight re-encoding shared by the int8 and fp16 passes: walk every layer's
matrix weights, encode each constant once, and report per layer."""
from __future__ import annotations

from typing import Callable

import numpy as np

from edgeseq.graph import Graph, Node
from edgeseq.ops import RECURRENT, Op
from edgeseq.quant.common import (LINEAR_WEIGHT_INPUT, MATRIX_SLOTS, SCALE_SUFFIX, is_layer,
                                  note_pass, put_constant, size_rows)

# encode(name, float array) -> (encoded array, scale array or None)
Encoder = Callable[[str, np.ndarray], tuple[np.ndarray, np.ndarray | None]]


def matrix_weights(graph: Graph, node: Node, *, linear: bool) -> list[str]:
    """Constant names of a layer's matrices (recurrent matrix slots, or a glue op's weight)."""
    if node.op in RECURRENT:
        return [node.weights[s] for s in MATRIX_SLOTS if s in node.weights]
    # NOTE: Conv1d weights stay float32: they are a front end's small filters, and a conv
    # kernel reads its weight array directly (no per-row-scale convention for [O, C, K])
    if linear and node.op in (Op.MATMUL, Op.GEMM) and is_layer(graph, node):
        return [node.inputs[LINEAR_WEIGHT_INPUT[node.op]]]
    return []


def recast(graph: Graph, encode: Encoder, *, from_dtypes: tuple[str, ...], pass_name: str,
           linear: bool = True) -> tuple[Graph, list[dict]]:
    """A copy of `graph` with every layer matrix of a dtype in `from_dtypes` re-encoded
    (recurrent matrix slots, and with `linear` the constant weight of MatMul/Gemm)."""
    src = graph if graph.values or not graph.nodes else graph.copy().validate()
    out = src.copy()
    done: set[str] = set()
    for node in out.nodes:
        for name in matrix_weights(out, node, linear=linear):
            if name in done or str(out.constants[name].dtype) not in from_dtypes:
                continue
            done.add(name)
            enc, scale = encode(name, out.constants[name])
            put_constant(out, name, enc)
            if scale is not None:
                put_constant(out, name + SCALE_SUFFIX, scale)
            else:
                out.constants.pop(name + SCALE_SUFFIX, None)
    note_pass(out, {"pass": pass_name, "linear": linear})
    out.validate()
    return out, size_rows(src, out)
