"""Invalid ONNX models get an error that points at the real cause. Found with torch 2.13's
dynamo exporter on a 2-layer LSTM with proj_size: it writes the second layer's bias as
Concat(a [36, 9] initializer, a [36] initializer) -- a Concat of mixed ranks that onnxruntime
also refuses to load. The converter used to say only that B "must be constant after folding";
it now names the Concat node that could not be evaluated and why."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeseq.converters.onnx import convert
from edgeseq.errors import UnsupportedModelError


def _lstm_with_bad_bias_concat() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    h, i = 3, 2
    inits = [numpy_helper.from_array(rng.standard_normal((1, 4 * h, i)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal((1, 4 * h, h)).astype(np.float32), "R"),
             numpy_helper.from_array(np.zeros((4 * h, 2), np.float32), "b_2d"),   # rank 2
             numpy_helper.from_array(np.zeros((4 * h,), np.float32), "b_1d"),     # rank 1
             numpy_helper.from_array(np.array([0], np.int64), "axes")]
    nodes = [helper.make_node("Concat", ["b_2d", "b_1d"], ["b_cat"], name="bias_concat", axis=0),
             helper.make_node("Unsqueeze", ["b_cat", "axes"], ["B"], name="bias_unsqueeze"),
             helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], name="lstm1", hidden_size=h)]
    g = helper.make_graph(nodes, "bad_bias", [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                                          ("T", 1, i))],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    return m


def test_unfoldable_constant_subgraph_is_named():
    with pytest.raises(UnsupportedModelError) as e:
        convert(_lstm_with_bad_bias_concat())
    msg = str(e.value)
    assert "node 'lstm1' (LSTM): input 3 ('B' = 'B')" in msg
    assert "'bias_concat' (Concat) has constant operands but could not be evaluated" in msg
    assert "same number of dimensions" in msg
