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

from edgeseq.converters.onnx.context import Unsupported
from edgeseq.errors import ModelFormatError

# Never folded even with constant operands: recurrent ops are what edgeseq is for (and
# onnx.reference ignores several of their attributes); random ops are not constants.
NO_FOLD = frozenset({"LSTM", "GRU", "RNN", "RandomNormal", "RandomUniform",
                     "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli",
                     "If", "Loop", "Scan"})
# Folding should not blow up the artifact: skip results above this many elements.
MAX_FOLD_ELEMENTS = 1 << 24


VALUE_ATTRIBUTES = frozenset({"value", "value_float", "value_floats", "value_int",
                              "value_ints", "sparse_value", "value_string", "value_strings"})


def constant_value(node: onnx.NodeProto) -> np.ndarray:
    """The value of a Constant node (any of its value_* attribute forms); a malformed one is
    a ModelFormatError naming the node and the attribute."""
    from onnx.reference import ReferenceEvaluator
    names = [a.name for a in node.attribute]
    if len(names) != 1 or names[0] not in VALUE_ATTRIBUTES:
        raise ModelFormatError(f"a Constant needs exactly one of {sorted(VALUE_ATTRIBUTES)}, "
                               f"got {names or 'no attribute'}", node=node.name or "Constant",
                               field="attribute")
    attr = node.attribute[0]
    if attr.name in ("value_string", "value_strings") or (
            attr.name == "value" and attr.t.data_type == onnx.TensorProto.STRING):
        raise Unsupported(f"string constants are not supported (attribute '{attr.name}')")
    try:
        value = np.asarray(ReferenceEvaluator(node).run(None, {})[0])
    except Exception as e:  # noqa: BLE001 - onnx raises many types on a damaged tensor
        raise ModelFormatError(f"Constant value cannot be read: {type(e).__name__}: "
                               f"{' '.join(str(e).split())[:200]}",
                               node=node.name or "Constant", field=attr.name) from None
    if value.dtype.kind not in "biuf":
        raise ModelFormatError(f"Constant value has element type {value.dtype}",
                               node=node.name or "Constant", field=attr.name)
    return value


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
