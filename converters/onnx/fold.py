"""Constant folding: evaluate an ONNX node whose operands are all known, with onnx.reference.

Shape arithmetic in real exports (Shape -> Gather -> Concat -> Reshape, ConstantOfShape, Range,
Where on constants, weight Slice/Concat ...) disappears here, so handlers only ever see ops that
compute on run-time data. Evaluating with the ONNX reference implementation (not our own code)
keeps the folded values faithful to the ONNX spec for every op it knows.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

# Never folded even with constant operands: recurrent ops are what edgeseq is for (and
# onnx.reference ignores several of their attributes); random ops are not constants.
NO_FOLD = frozenset({"LSTM", "GRU", "RNN", "RandomNormal", "RandomUniform",
                     "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli",
                     "If", "Loop", "Scan"})
# Folding should not blow up the artifact: skip results above this many elements.
MAX_FOLD_ELEMENTS = 1 << 24


def constant_value(node: onnx.NodeProto) -> np.ndarray:
    """The value of a Constant node (any of its value_* attribute forms)."""
    from onnx.reference import ReferenceEvaluator
    return np.asarray(ReferenceEvaluator(node).run(None, {})[0])


def try_fold(node: onnx.NodeProto, operands: list[np.ndarray | None],
             opsets: dict[str, int], errors: dict[str, str] | None = None
             ) -> list[np.ndarray] | None:
    """Outputs of `node` evaluated on constant operands, or None if it cannot be evaluated
    (then `errors`, when given, maps each output to why, for later error messages)."""
    if node.op_type in NO_FOLD or node.domain not in ("", "ai.onnx"):
        return None
    from onnx.reference import ReferenceEvaluator
    inputs, feeds, renamed = [], {}, []
    for k, (name, arr) in enumerate(zip(node.input, operands)):
        if not name:
            renamed.append("")
            continue
        nm = f"in{k}"
        renamed.append(nm)
        if nm not in feeds:
            feeds[nm] = arr
            inputs.append(helper.make_tensor_value_info(
                nm, helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape))
    outs = [f"out{k}" if o else "" for k, o in enumerate(node.output)]
    n = helper.make_node(node.op_type, renamed, outs, domain=node.domain)
    n.attribute.extend(node.attribute)
    g = helper.make_graph([n], "fold", inputs,
                          [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
                           for o in outs if o])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    try:
        res = ReferenceEvaluator(m).run(None, feeds)
    except Exception as e:  # noqa: BLE001 - anything the reference cannot evaluate stays a node
        if errors is not None:
            why = f"'{node.name}' ({node.op_type}) has constant operands but could not be " \
                  f"evaluated: {' '.join(str(e).split())[:200]}"
            errors.update((o, why) for o in node.output if o)
        return None
    res = [np.asarray(r) for r in res]
    if any(r.size > MAX_FOLD_ELEMENTS for r in res):
        return None
    return res
