"""TFLite spellings of Keras layers around recurrent ones (LayerNormalization as MEAN /
SQUARED_DIFFERENCE / RSQRT / SUB, Conv1D as EXPAND_DIMS + CONV_2D + SQUEEZE, a 2-D CONV_2D,
ARG_MAX), built with the flatbuffer builders of tools/make_tflite_fixtures.py (no TensorFlow)
and checked against the TFLite interpreter."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from edgeseq import reference  # noqa: E402
from edgeseq.converters.tflite import convert  # noqa: E402
from edgeseq.ops import Op  # noqa: E402
from edgeseq.runtime import Model  # noqa: E402

_FIX_PATH = Path(__file__).resolve().parents[2] / "tools" / "make_tflite_fixtures.py"
_spec = importlib.util.spec_from_file_location("make_tflite_fixtures", _FIX_PATH)
fx = sys.modules.get("make_tflite_fixtures") or importlib.util.module_from_spec(_spec)
sys.modules["make_tflite_fixtures"] = fx
_spec.loader.exec_module(fx)
fb, OPT, BO = fx.fb, fx.OPT, fx.fb.BuiltinOperator


def _model(rng) -> bytes:
    b = fx.ModelBuilder()
    t, f = 7, 6
    x = b.tensor("x", (1, t, f))

    def opt(cls, **kw):
        o = cls()
        for k, v in kw.items():
            setattr(o, k, v)
        return o

    def op(code, ins, shape, dtype="float32", options_type=0, options=None, name=None):
        out = b.tensor(name or f"t{len(b.sub.tensors)}", shape, dtype)
        b.op(code, ins, [out], options_type, options)
        return out
    last = b.const("last", np.array([-1], np.int32), "int32")
    keep = (OPT.ReducerOptions, opt(fb.ReducerOptionsT, keepDims=True))
    # LayerNormalization as the TF converter writes it
    mean = op(BO.MEAN, [x, last], (1, t, 1), options_type=keep[0], options=keep[1])
    sq = op(BO.SQUARED_DIFFERENCE, [x, mean], (1, t, f))
    var = op(BO.MEAN, [sq, last], (1, t, 1), options_type=keep[0], options=keep[1])
    ve = op(BO.ADD, [var, b.const("eps", np.array([1e-3], np.float32))], (1, t, 1))
    inv = op(BO.RSQRT, [ve], (1, t, 1))
    g = op(BO.MUL, [inv, b.const("gamma", rng.standard_normal(f).astype(np.float32))], (1, t, f))
    xg = op(BO.MUL, [x, g], (1, t, f))
    mg = op(BO.MUL, [mean, g], (1, t, f))
    shift = op(BO.SUB, [b.const("beta", rng.standard_normal(f).astype(np.float32)), mg], (1, t, f))
    ln = op(BO.ADD, [xg, shift], (1, t, f), name="ln")
    # Conv1D: EXPAND_DIMS, CONV_2D over a unit H axis (SAME, relu), SQUEEZE
    ex = op(BO.EXPAND_DIMS, [ln, b.const("one", np.array([1], np.int32), "int32")], (1, 1, t, f))
    conv = op(BO.CONV_2D, [ex, b.const("w1", rng.standard_normal((4, 1, 3, f)).astype(np.float32)),
                           b.const("b1", rng.standard_normal(4).astype(np.float32))], (1, 1, t, 4),
              options_type=OPT.Conv2DOptions,
              options=opt(fb.Conv2DOptionsT, padding=fb.Padding.SAME, strideH=1, strideW=1,
                          dilationHFactor=1, dilationWFactor=1, fusedActivationFunction=1))
    c1d = op(BO.SQUEEZE, [conv], (1, t, 4), options_type=OPT.SqueezeOptions,
             options=opt(fb.SqueezeOptionsT, squeezeDims=[1]), name="conv1d")
    am = op(BO.ARG_MAX, [c1d, last], (1, t), "int32", OPT.ArgMaxOptions,
            opt(fb.ArgMaxOptionsT, outputType=fb.TensorType.INT32), name="argmax")
    # a 2-D CONV_2D (VALID, strides 1x2, dilation 2x1) on [1, T, F, 1]
    img = op(BO.EXPAND_DIMS, [ln, b.const("minus1", np.array([-1], np.int32), "int32")],
             (1, t, f, 1))
    c2d = op(BO.CONV_2D, [img, b.const("w2", rng.standard_normal((2, 2, 3, 1)).astype(np.float32)),
                          b.const("b2", rng.standard_normal(2).astype(np.float32))], (1, 5, 2, 2),
             options_type=OPT.Conv2DOptions,
             options=opt(fb.Conv2DOptionsT, padding=fb.Padding.VALID, strideH=1, strideW=2,
                         dilationHFactor=2, dilationWFactor=1), name="conv2d")
    return b.finish([x], [c1d, am, c2d])


def test_layer_norm_conv1d_conv2d_argmax_vs_interpreter(tmp_path, tol):
    rng = np.random.default_rng(7)
    path = tmp_path / "keras_ops.tflite"
    path.write_bytes(_model(rng))
    x = rng.standard_normal((1, 7, 6)).astype(np.float32)
    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    want = {d["name"]: it.get_tensor(d["index"]) for d in it.get_output_details()}
    g = convert(path)
    ops = {n.op for n in g.nodes}
    assert {Op.CONV1D, Op.CONV2D, Op.ARG_MAX, Op.REDUCE_MEAN} <= ops
    feed = {g.inputs[0].name: x}
    for label, got in (("reference", reference.run(g, feed)), ("runtime", Model(g).run(feed))):
        for name, w in want.items():
            a = got[name]
            assert a.shape == w.shape, (label, name, a.shape, w.shape)
            if w.dtype.kind in "iu":
                np.testing.assert_array_equal(a, w, err_msg=f"{label} {name}")
            else:
                assert float(np.max(np.abs(a - w))) <= tol["float32"], (label, name)
