"""onnxruntime's dynamically quantized LSTM (com.microsoft::DynamicQuantizeLSTM, written by
onnxruntime.quantization.quantize_dynamic) converts to an edgeseq LSTM with int8 weights and
per-row scales (symmetric int8) or dequantized float weights (uint8 / zero points).

Oracle: onnxruntime running the float LSTM with the dequantized weights; the conversion must
match it to float32 precision (reference and runtime). Against onnxruntime's own
DynamicQuantizeLSTM the outputs differ by its run-time uint8 quantization of X and H, which
edgeseq does not do (measured ~0.01 max abs on unit-scale data; bound 0.03).
"""
from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from edgeseq import reference
from edgeseq.converters.onnx import convert

H, I = 16, 8


def _float_lstm(rng, direction: str) -> onnx.ModelProto:
    d = 2 if direction == "bidirectional" else 1
    w = rng.uniform(-.5, .5, (d, 4 * H, I)).astype(np.float32)
    r = rng.uniform(-.5, .5, (d, 4 * H, H)).astype(np.float32)
    b = rng.uniform(-.5, .5, (d, 8 * H)).astype(np.float32)
    node = helper.make_node("LSTM", ["x", "W", "R", "B"], ["y", "y_h", "y_c"], hidden_size=H,
                            direction=direction)
    g = helper.make_graph([node], "qlstm",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "N", I])],
                          [helper.make_tensor_value_info(k, TensorProto.FLOAT, None)
                           for k in ("y", "y_h", "y_c")],
                          [numpy_helper.from_array(a, k) for a, k in ((w, "W"), (r, "R"), (b, "B"))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    return m


def _dequantized(q: onnx.ModelProto, float_model: onnx.ModelProto) -> onnx.ModelProto:
    """The float model with W/R replaced by the quantized model's dequantized weights."""
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    m = onnx.ModelProto()
    m.CopyFrom(float_model)
    for t in m.graph.initializer:
        if t.name in ("W", "R"):
            wq = inits[t.name + "_quantized"].astype(np.float32)      # [D, in, 4H]
            d = wq.shape[0]
            sc = inits[t.name + "_scale"].reshape(d, -1)
            zp = inits[t.name + "_zero_point"].reshape(d, -1).astype(np.float32)
            deq = np.transpose((wq - zp[:, None, :]) * sc[:, None, :], (0, 2, 1))
            t.CopyFrom(numpy_helper.from_array(deq.astype(np.float32), t.name))
    return m


def _run(model: onnx.ModelProto, x: np.ndarray) -> dict:
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, {"x": x})))


@pytest.mark.parametrize("weight_type,per_channel,direction", [
    (QuantType.QInt8, True, "forward"), (QuantType.QInt8, False, "bidirectional"),
    (QuantType.QInt8, True, "reverse")])
def test_dynamic_quantize_lstm(weight_type, per_channel, direction, tmp_path, rng, tol):
    fm = _float_lstm(rng, direction)
    onnx.save(fm, str(tmp_path / "f.onnx"))
    logging.getLogger().setLevel(logging.ERROR)   # quantize_dynamic's pre-processing advice
    quantize_dynamic(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), weight_type=weight_type,
                     per_channel=per_channel)
    q = onnx.load(str(tmp_path / "q.onnx"))
    assert [n.op_type for n in q.graph.node] == ["DynamicQuantizeLSTM"]
    g = convert(q)
    node = next(g.recurrent_nodes())
    # symmetric int8 (onnxruntime writes int8 LSTM weights whatever weight_type says)
    assert g.weight(node, "w_x").dtype == np.int8 and g.weight(node, "w_h").dtype == np.int8
    assert g.scale(node, "w_h").shape == (len(g.weight(node, "w_h")), 4 * H)
    _check(g, q, _dequantized(q, fm), rng, tol)


def _check(g, q, dequantized, rng, tol) -> None:
    """vs the dequantized float model (tight) and, if given, onnxruntime's quantized op."""
    from edgeseq.runtime import Model
    x = rng.standard_normal((7, 3, I)).astype(np.float32)
    want = _run(dequantized, x)
    quantized_ort = _run(q, x) if q is not None else None
    for engine, got in (("reference", reference.run(g, {"x": x})),
                        ("runtime", Model(g, warmup=False).run({"x": x}))):
        for k, w in want.items():
            assert float(np.max(np.abs(got[k] - w))) <= tol["float32"], (engine, k)
            if quantized_ort is not None:
                assert float(np.max(np.abs(got[k] - quantized_ort[k]))) <= 0.03, (engine, k)


def test_uint8_weights_with_zero_points_are_dequantized(rng, tol):
    """A hand-built DynamicQuantizeLSTM with asymmetric uint8 weights (per-column zero points):
    edgeseq's int8 is symmetric, so these weights become float32. (onnxruntime 1.32 refuses
    to run this form: "InputWeight point must be constant"; the oracle is the float LSTM with
    the dequantized weights.)"""
    fm = _float_lstm(rng, "forward")
    f = {t.name: numpy_helper.to_array(t) for t in fm.graph.initializer}
    inits = [numpy_helper.from_array(f["B"], "B")]
    for name in ("W", "R"):
        wt = np.transpose(f[name], (0, 2, 1))                     # [D, in, 4H]
        lo, hi = wt.min(axis=1), wt.max(axis=1)                   # per column
        scale = ((hi - lo) / 255).astype(np.float32)
        zp = np.clip(np.round(-lo / scale), 0, 255).astype(np.uint8)
        wq = np.clip(np.round(wt / scale[:, None, :]) + zp[:, None, :], 0, 255).astype(np.uint8)
        inits += [numpy_helper.from_array(wq, name + "_quantized"),
                  numpy_helper.from_array(scale, name + "_scale"),
                  numpy_helper.from_array(zp, name + "_zero_point")]
    node = helper.make_node("DynamicQuantizeLSTM",
                            ["x", "W_quantized", "R_quantized", "B", "", "", "", "", "W_scale",
                             "W_zero_point", "R_scale", "R_zero_point"], ["y", "y_h", "y_c"],
                            domain="com.microsoft", hidden_size=H)
    g = helper.make_graph([node], "qlstm", list(fm.graph.input), list(fm.graph.output), inits)
    q = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14),
                                            helper.make_opsetid("com.microsoft", 1)])
    q.ir_version = 8
    conv = convert(q)
    lstm = next(conv.recurrent_nodes())
    assert conv.weight(lstm, "w_x").dtype == np.float32
    _check(conv, None, _dequantized(q, fm), rng, tol)
