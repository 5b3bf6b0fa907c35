"""What conversion says to a user: symbolic --shape dims, refusals whose first line names the
ops and whose --shape request names graph inputs, a fixed-length conversion announced on the
command line, and compare against a quantized peer showing the peer's own distance from float."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeseq.cli import main
from edgeseq.converters.options import parse_shape
from edgeseq.errors import UnsupportedModelError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tflite"


def test_shape_accepts_symbols():
    assert parse_shape("x=1,T,13") == ("x", (1, "T", 13))
    assert parse_shape("input=1x576") == ("input", (1, 576))
    with pytest.raises(UnsupportedModelError, match="sizes or symbols"):
        parse_shape("x=1,2x,3")


def _merge_split_model():
    """Reshape [batch, seq, 6] -> [-1, 6], a sum over the merged rows, and a split back to
    Shape(x)[:2] + [6]: the target has two dynamic dims, so --shape must fix one."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    c = lambda n, a: numpy_helper.from_array(np.asarray(a), n)
    nodes = [helper.make_node("Shape", ["x"], ["sh"]),
             helper.make_node("Gather", ["sh", "i01"], ["nt"], axis=0),
             helper.make_node("Reshape", ["x", "m1_6"], ["flat"]),
             helper.make_node("ReduceSum", ["flat"], ["tot"], keepdims=0),
             helper.make_node("Concat", ["nt", "six"], ["tgt"], axis=0),
             helper.make_node("Reshape", ["flat", "tgt"], ["y"]),
             helper.make_node("Sin", ["y"], ["z"])]
    inits = [c("i01", np.array([0, 1], np.int64)), c("m1_6", np.array([-1, 6], np.int64)),
             c("six", np.array([6], np.int64))]
    g = helper.make_graph(nodes, "merge", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["batch", "seq", 6])], [helper.make_tensor_value_info(
            n, TensorProto.FLOAT, None) for n in ("z", "tot")], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return onnx, m


def test_onnx_refusal_names_ops_first_and_asks_for_graph_input_dims():
    from edgeseq.converters.onnx import convert
    _, m = _merge_split_model()
    with pytest.raises(UnsupportedModelError) as e:
        convert(m)
    first, *rest = str(e.value).splitlines()
    assert "(Sin, Reshape)" in first, first
    reshape = next(line for line in rest if "(Reshape)" in line)
    assert "(batch, seq, 6)" in reshape and "graph input(s) 'x'" in reshape
    assert "--shape x=1,seq,6" in reshape and "SymVec" not in reshape


def test_symbolic_shape_keeps_time_dynamic(tmp_path):
    from edgeseq.converters.onnx import convert
    onnx, m = _merge_split_model()
    del m.graph.node[-1]                        # drop the Sin: everything else converts
    m.graph.output[0].name = "y"
    g = convert(m, shapes={"x": (1, "T", 6)})
    assert g.inputs[0].shape == (1, "T", 6)
    onnx.save(m, tmp_path / "m.onnx")
    assert main(["convert", str(tmp_path / "m.onnx"), "--shape", "x=1,T,6", "-o",
                 str(tmp_path / "m.eseq")]) == 0


def test_fixed_length_conversion_is_announced(tmp_path, capsys):
    torch = pytest.importorskip("torch")

    class Baked(torch.nn.Module):          # reshapes bake the example's length in
        def __init__(self):
            super().__init__()
            self.gru = torch.nn.GRU(4, 4, batch_first=True)

        def forward(self, x):
            return self.gru(x.reshape(-1, 4).reshape(x.shape[0], x.shape[1], 4))[0]

    path = tmp_path / "baked.pt2"
    torch.export.save(torch.export.export(Baked().eval(), (torch.randn(1, 5, 4),)), str(path))
    assert main(["convert", str(path), "-o", str(tmp_path / "b.eseq")]) == 0
    out = capsys.readouterr().out
    assert "note: fixed-length conversion" in out and "x (1, 5, 4)" in out


def test_compare_shows_how_far_a_quantized_peer_is_from_float(capsys):
    pytest.importorskip("ai_edge_litert")
    peer, original = FIXTURES / "keras_bidi_int8.tflite", FIXTURES / "keras_bidi_float.tflite"
    for extra in ([], ["--float-original", str(original)]):
        main(["compare", str(peer), "--random", "--dim", "7", "--engine", "reference",
              "--json"] + extra)
        rows = json.loads(capsys.readouterr().out)["against_float"]["outputs"]
        # the int8 interpreter is far from float; edgeseq (dequantized weights, float
        # arithmetic) is much closer: the mismatch is the peer's own rounding
        assert rows and all(r["peer_rel"] > 0.05 and r["edgeseq_rel"] < r["peer_rel"] / 5
                            for r in rows), rows


def test_a_shape_used_as_data_asks_for_every_dim_of_the_graph_input():
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    from edgeseq.converters.onnx import convert
    nodes = [helper.make_node("Shape", ["x"], ["sh"]),
             helper.make_node("Gather", ["sh", "one"], ["t"], axis=0),
             helper.make_node("Cast", ["t"], ["tf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["x", "tf"], ["y"])]
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["batch", "seq", 6])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)], [numpy_helper.from_array(np.array(1, np.int64), "one")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    with pytest.raises(UnsupportedModelError) as e:
        convert(m)
    msg = str(e.value)
    assert "graph input(s) 'x'" in msg and "--shape x=<batch>,<seq>,6" in msg
    assert "SymVec" not in msg and "Filled" not in msg
