"""An Unsqueeze/Squeeze whose axes are out of range for its rank (torch's TorchScript exporter
writes WaveRNN's `waveform.squeeze(1) ... waveform.unsqueeze(-1)` as Unsqueeze axes=[3] on a
rank-2 tensor) is refused as a malformed file naming the node and the field, first, instead of
the Shape/Expand nodes downstream whose shapes it leaves unknown; onnxruntime refuses the
file too."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeseq import reference, testing
from edgeseq.converters.onnx import convert
from edgeseq.errors import ModelFormatError
from edgeseq.runtime import Model


def _model(axes: int):
    ints = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    nodes = [helper.make_node("Squeeze", ["x", "one"], ["s"], name="squeeze"),
             helper.make_node("Unsqueeze", ["s", "ax"], ["u"], name="bad_unsqueeze"),
             # the exporter's run-time shape arithmetic downstream (an initial state)
             helper.make_node("Shape", ["u"], ["shp"], name="shape"),
             helper.make_node("Expand", ["h0", "shp"], ["h"], name="expand"),
             helper.make_node("Add", ["u", "h"], ["y"], name="add")]
    return testing.onnx_model(
        nodes, [testing.onnx_value("x", [1, 1, 32])], [testing.onnx_value("y", None)],
        [ints("one", [1]), ints("ax", [axes]),
         numpy_helper.from_array(np.zeros((1, 1, 1), np.float32), "h0")])


def test_out_of_range_unsqueeze_axes_are_refused_naming_node_and_field():
    with pytest.raises(ModelFormatError) as e:
        convert(_model(3))
    assert (e.value.node, e.value.field) == ("bad_unsqueeze", "axes")
    first = str(e.value).splitlines()[0]
    assert "node 'bad_unsqueeze' is malformed (field 'axes')" in first, first
    with pytest.raises(Exception, match="axis"):      # the file's own runtime: not loadable
        ort.InferenceSession(_model(3).SerializeToString())


def test_in_range_axes_convert_and_match_onnxruntime():
    x = np.random.default_rng(0).standard_normal((1, 1, 32)).astype(np.float32)
    want = ort.InferenceSession(_model(-1).SerializeToString()).run(None, {"x": x})[0]
    g = convert(_model(-1))
    for got in (reference.run(g, {"x": x})[g.outputs[0].name],
                Model(g).run({"x": x})[g.outputs[0].name]):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
