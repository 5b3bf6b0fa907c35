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


def matrix_weights(graph: Graph, node: Node, *, linear: bool, conv: bool = False) -> list[str]:
    """Constant names of a layer's matrices (recurrent matrix slots, or a glue op's weight;
    Conv1d weights only with `conv`)."""
    if node.op in RECURRENT:
        return [node.weights[s] for s in MATRIX_SLOTS if s in node.weights]
    ops = (Op.MATMUL, Op.GEMM, Op.CONV1D) if conv else (Op.MATMUL, Op.GEMM)
    if linear and node.op in ops and is_layer(graph, node):
        return [node.inputs[LINEAR_WEIGHT_INPUT[node.op]]]
    return []


def recast(graph: Graph, encode: Encoder, *, from_dtypes: tuple[str, ...], pass_name: str,
           linear: bool = True, conv_encode: Encoder | None = None,
           finish: Callable[[Graph], None] | None = None) -> tuple[Graph, list[dict]]:
    """A copy of `graph` with every layer matrix of a dtype in `from_dtypes` re-encoded
    (recurrent matrix slots, and with `linear` the constant weight of MatMul/Gemm, and of
    Conv1d through `conv_encode` when given: [O, C, K] has its own scale convention);
    `finish(copy)` then edits the copy further (before the report)."""
    src = graph if graph.values or not graph.nodes else graph.copy().validate()
    out = src.copy()
    done: set[str] = set()
    for node in out.nodes:
        is_conv = node.op is Op.CONV1D
        for name in matrix_weights(out, node, linear=linear, conv=conv_encode is not None):
            if name in done or str(out.constants[name].dtype) not in from_dtypes:
                continue
            done.add(name)
            enc, scale = (conv_encode if is_conv else encode)(name, out.constants[name])
            put_constant(out, name, enc)
            if scale is not None:
                put_constant(out, name + SCALE_SUFFIX, scale)
            else:
                out.constants.pop(name + SCALE_SUFFIX, None)
    if finish is not None:
        finish(out)
    note_pass(out, {"pass": pass_name, "linear": linear})
    out.validate()
    return out, size_rows(src, out)
