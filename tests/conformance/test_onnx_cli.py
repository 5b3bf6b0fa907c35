"""`edgeseq convert`, `run` and `compare` on an ONNX model (in-process through cli.main)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeseq import artifact
from edgeseq.cli import main
from edgeseq.peers import run_peer


@pytest.fixture
def lstm_onnx(tmp_path, rng) -> Path:
    """A bidirectional LSTM + MatMul head with random weights, dynamic T and N."""
    h, i = 5, 3
    w = rng.uniform(-0.5, 0.5, (2, 4 * h, i)).astype(np.float32)
    r = rng.uniform(-0.5, 0.5, (2, 4 * h, h)).astype(np.float32)
    b = rng.uniform(-0.5, 0.5, (2, 8 * h)).astype(np.float32)
    head = rng.standard_normal((2 * h, 2)).astype(np.float32)
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "B", "lens"], ["y", "y_h"],
                              hidden_size=h, direction="bidirectional", name="lstm"),
             helper.make_node("Transpose", ["y"], ["yt"], perm=[0, 2, 1, 3]),
             helper.make_node("Reshape", ["yt", "shp"], ["y2"]),
             helper.make_node("MatMul", ["y2", "head"], ["logits"])]
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((w, "W"), (r, "R"), (b, "B"), (head, "head"), (np.array([0, 0, -1]), "shp"))]
    g = helper.make_graph(nodes, "cli_lstm",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "N", i]),
                           helper.make_tensor_value_info("lens", TensorProto.INT32, ["N"])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None),
                           helper.make_tensor_value_info("y_h", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    path = tmp_path / "lstm.onnx"
    onnx.save(m, str(path))
    return path


def test_convert_run_compare(lstm_onnx, tmp_path, rng, capsys, tol):
    art = tmp_path / "lstm.eseq"
    assert main(["convert", str(lstm_onnx), "-o", str(art)]) == 0
    out = capsys.readouterr().out
    assert "LSTM x1" in out and "x (T, N, 3) float32" in out
    assert artifact.load(art).name == "cli_lstm"

    x = rng.standard_normal((6, 2, 3)).astype(np.float32)
    lens = np.array([6, 3], np.int32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "lens.npy", lens)
    out_dir = tmp_path / "outs"
    assert main(["run", str(art), "--input", f"x={tmp_path / 'x.npy'}",
                 "--input", f"lens={tmp_path / 'lens.npy'}", "--output-dir", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "logits: shape (6, 2, 2)" in out and "y_h: shape (2, 2, 5)" in out
    want = run_peer(lstm_onnx, {"x": x, "lens": lens})
    for k in ("logits", "y_h"):
        got = np.load(out_dir / f"{k}.npy")
        assert float(np.max(np.abs(got - want[k]))) <= tol["float32"]

    assert main(["compare", str(lstm_onnx), str(art), "--input", f"x={tmp_path / 'x.npy'}",
                 "--input", f"lens={tmp_path / 'lens.npy'}", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert {r["output"] for r in rep["outputs"]} == {"logits", "y_h"}
    assert all(r["max_abs"] <= tol["float32"] for r in rep["outputs"])

    # table form, converting on the fly, random inputs
    assert main(["compare", str(lstm_onnx), "--random", "--dim", "5"]) == 0
    table = capsys.readouterr().out
    assert "max abs err" in table and "logits" in table


def test_compare_detects_a_wrong_artifact(lstm_onnx, tmp_path, capsys):
    """compare must be able to report disagreement: perturb the artifact's head weights."""
    from edgeseq.converters.onnx import convert
    g = convert(lstm_onnx)
    name = next(n for n in g.nodes if n.op.value == "MatMul").inputs[1]
    g.constants[name] = g.constants[name] + 0.1
    art = artifact.save(g, tmp_path / "bad.eseq")
    assert main(["compare", str(lstm_onnx), str(art), "--random", "--json"]) == 1  # mismatch
    rep = json.loads(capsys.readouterr().out)
    err = {r["output"]: r["max_abs"] for r in rep["outputs"]}
    assert err["logits"] > 1e-3 and err["y_h"] < 1e-5
    assert rep["ok"] is False and rep["tolerance"] == 1e-4


def test_convert_reports_unsupported_model_in_one_line_and_status_2(tmp_path, capsys):
    nodes = [helper.make_node("Sin", ["x"], ["y"], name="e1"),
             helper.make_node("Hardmax", ["y"], ["z"], name="h1")]
    g = helper.make_graph(nodes, "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(g), str(path))
    assert main(["convert", str(path), "-o", str(tmp_path / "bad.eseq")]) == 2
    err = capsys.readouterr().err
    assert "UnsupportedModelError" in err and "'e1'" in err and "'h1'" in err
    assert not (tmp_path / "bad.eseq").exists()


def test_convert_fix_and_shape_flags(tmp_path, capsys):
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="r")]
    g = helper.make_graph(nodes, "fixme",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["A", 6]),
                           helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "fixme.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)]), str(path))
    art = tmp_path / "fixed.eseq"
    assert main(["convert", str(path), "-o", str(art), "--fix", "shape=3,4",
                 "--shape", "x=2,6"]) == 0
    out = capsys.readouterr().out
    assert "x (2, 6) float32" in out and "y (3, 4) float32" in out


def test_fix_and_shape_parsing(tmp_path):
    from edgeseq.converters.onnx import parse_fix, parse_shape
    from edgeseq.errors import UnsupportedModelError
    assert parse_fix("sr=16000") == ("sr", [16000])
    assert parse_fix("scale=0.5,2") == ("scale", [0.5, 2])
    np.save(tmp_path / "v.npy", np.arange(3))
    name, val = parse_fix(f"v={tmp_path / 'v.npy'}")
    assert name == "v" and list(val) == [0, 1, 2]
    assert parse_shape("x=1,576") == ("x", (1, 576)) == parse_shape("x=1x576")
    assert parse_shape("x=1,T,13") == ("x", (1, "T", 13))     # a symbol stays dynamic
    for bad in ("x", "=3", "x=abc"):
        with pytest.raises(UnsupportedModelError, match="--fix"):
            parse_fix(bad)
    for bad in ("x", "x=", "x=1,2.5", "x=1,T-1"):
        with pytest.raises(UnsupportedModelError, match="--shape expects NAME=DIMS"):
            parse_shape(bad)


def test_fix_of_an_unknown_input_is_refused(lstm_onnx):
    from edgeseq.converters.onnx import convert
    from edgeseq.errors import UnsupportedModelError
    with pytest.raises(UnsupportedModelError, match="'nope' is not a graph input; inputs: \\['x', 'lens'\\]"):
        convert(lstm_onnx, fix={"nope": 1})
