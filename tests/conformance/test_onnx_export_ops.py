"""ONNX ops that real exports write around recurrent layers (CRNN front ends, tf2onnx's
LayerNorm and Conv1D spellings, greedy decoding, masks), each graph built with onnx.helper
and run by onnxruntime (the oracle), the float64 reference and the runtime."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgeseq import reference, testing  # noqa: E402
from edgeseq.converters.onnx import convert  # noqa: E402
from edgeseq.ops import Op  # noqa: E402
from edgeseq.runtime import Model  # noqa: E402

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


model_of = testing.onnx_model
ort_run = testing.onnxruntime_run


def vi(name, shape, t=F):
    return testing.onnx_value(name, shape, t)


def c(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def _check(m, feeds, tol, ops=()):
    """Convert, run reference and runtime, compare every output with onnxruntime."""
    want = ort_run(m, feeds)
    g = convert(m)
    present = {n.op for n in g.nodes}
    for op in ops:
        assert op in present, f"{op} not in {sorted(o.value for o in present)}"
    for label, got in (("reference", reference.run(g, feeds)), ("runtime", Model(g).run(feeds))):
        for k, w in want.items():
            assert got[k].shape == w.shape, (label, k, got[k].shape, w.shape)
            if w.dtype.kind in "biu":
                np.testing.assert_array_equal(got[k], w, err_msg=f"{label} {k}")
            else:
                err = float(np.max(np.abs(got[k] - w)))
                assert err <= tol, f"{label} {k}: {err:.2e}"
    return g


def test_crnn_front_end(tol):
    # Conv 2-D (grouped, padded, strided) + BatchNormalization + Relu + MaxPool (pads,
    # ceil_mode, dilations) + GlobalAveragePool
    rng = np.random.default_rng(1)
    inits = [c("w1", rng.standard_normal((4, 1, 3, 3)).astype(np.float32)),
             c("b1", rng.standard_normal(4).astype(np.float32)),
             c("w2", rng.standard_normal((6, 2, 3, 2)).astype(np.float32)),
             c("sc", rng.uniform(0.5, 2, 4).astype(np.float32)),
             c("bb", rng.standard_normal(4).astype(np.float32)),
             c("mu", rng.standard_normal(4).astype(np.float32)),
             c("var", rng.uniform(0.5, 2, 4).astype(np.float32))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c1", "sc", "bb", "mu", "var"], ["bn"],
                              epsilon=1e-3),
             helper.make_node("Relu", ["bn"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2"], ["c2"], group=2, strides=[1, 2],
                              pads=[1, 0, 1, 1], dilations=[2, 1]),
             helper.make_node("MaxPool", ["c2"], ["p2"], kernel_shape=[3, 2], strides=[2, 1],
                              pads=[1, 0, 1, 1], ceil_mode=1),
             helper.make_node("GlobalAveragePool", ["p2"], ["gap"])]
    m = model_of(nodes, [vi("x", [2, 1, 12, 11])], [vi("p2", None), vi("gap", None)], inits)
    x = rng.standard_normal((2, 1, 12, 11)).astype(np.float32)
    _check(m, {"x": x}, tol["float32"], ops=(Op.CONV2D, Op.MAX_POOL))


@pytest.mark.parametrize("layout", ["N,C,1,T", "N,C,T,1"])
def test_conv1d_written_as_conv2d_becomes_conv1d(layout, tol):
    rng = np.random.default_rng(2)
    unit = 2 if layout == "N,C,1,T" else 3
    shape = [1, 3, 1, 9] if unit == 2 else [1, 3, 9, 1]
    w = rng.standard_normal((5, 3, 1, 3) if unit == 2 else (5, 3, 3, 1)).astype(np.float32)
    pads = [0, 1, 0, 1] if unit == 2 else [1, 0, 1, 0]
    m = model_of([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=pads)],
                 [vi("x", shape)], [vi("y", None)],
                 [c("w", w), c("b", rng.standard_normal(5).astype(np.float32))])
    g = _check(m, {"x": rng.standard_normal(shape).astype(np.float32)}, tol["float32"],
               ops=(Op.CONV1D,))
    assert Op.CONV2D not in {n.op for n in g.nodes}


def test_layer_normalization_opset17_and_tf2onnx_spelling(tol):
    rng = np.random.default_rng(3)
    inits = [c("g", rng.standard_normal(6).astype(np.float32)),
             c("b", rng.standard_normal(6).astype(np.float32)),
             c("eps", np.array([1e-3], np.float32))]
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln"], epsilon=1e-3),
             helper.make_node("LayerNormalization", ["x", "g"], ["ln2"], axis=1),
             # y = x / sqrt(sum(x^2) + eps), with Reciprocal, and an erf
             helper.make_node("ReduceSumSquare", ["x"], ["ss"], axes=[-1], keepdims=1),
             helper.make_node("Add", ["ss", "eps"], ["sse"]),
             helper.make_node("Sqrt", ["sse"], ["n"]),
             helper.make_node("Reciprocal", ["n"], ["rn"]),
             helper.make_node("Mul", ["x", "rn"], ["l2"]),
             helper.make_node("Erf", ["l2"], ["er"])]
    m = model_of(nodes, [vi("x", [4, 2, 6])], [vi(n, None) for n in ("ln", "ln2", "er")], inits,
                 opset=17)
    _check(m, {"x": rng.standard_normal((4, 2, 6)).astype(np.float32)}, tol["float32"],
           ops=(Op.ERF,))


def test_argmax_masks_where_tile_expand():
    rng = np.random.default_rng(4)
    x = rng.integers(-3, 4, (5, 2, 6)).astype(np.float32)     # ties on purpose
    nodes = [helper.make_node("ArgMax", ["x"], ["am"], axis=-1, keepdims=0),
             helper.make_node("ArgMax", ["x"], ["am_last"], axis=2, select_last_index=1),
             helper.make_node("ArgMin", ["x"], ["an"], axis=0),
             helper.make_node("Greater", ["x", "zero"], ["gt"]),
             helper.make_node("LessOrEqual", ["x", "one"], ["le"]),
             helper.make_node("Equal", ["x", "one"], ["eq"]),
             helper.make_node("GreaterOrEqual", ["x", "one"], ["ge"]),
             helper.make_node("Less", ["x", "zero"], ["lt"]),
             helper.make_node("Not", ["lt"], ["nlt"]),
             helper.make_node("Where", ["gt", "x", "fill"], ["wh"]),
             helper.make_node("Tile", ["wh", "reps"], ["ti"]),
             helper.make_node("Expand", ["col", "shape"], ["ex"])]
    inits = [c("zero", np.zeros(1, np.float32)), c("one", np.ones(1, np.float32)),
             c("fill", np.array([-9.0], np.float32)), c("reps", np.array([1, 2, 3], np.int64)),
             c("col", np.arange(3, dtype=np.float32).reshape(3, 1)),
             c("shape", np.array([2, 3, 4], np.int64))]
    outs = [vi(n, None, t) for n, t in (("am", I64), ("am_last", I64), ("an", I64), ("le", B),
                                        ("eq", B), ("ge", B), ("nlt", B), ("ti", F))]
    m = model_of(nodes + [helper.make_node("Add", ["ex", "zero"], ["exo"])],
                 [vi("x", [5, 2, 6])], outs + [vi("exo", None)], inits)
    _check(m, {"x": x}, 0.0, ops=(Op.ARG_MAX, Op.ARG_MIN, Op.WHERE, Op.TILE, Op.NOT))


def _dense_pair(extra_reader: bool):
    """Keras Dense as tf2onnx writes it for a [N, T, 6] input: Reshape to [-1, 6], MatMul,
    Relu, Reshape back to Concat(Shape(x)[0:2], [3]), Add."""
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("Shape", ["x"], ["sh"]),
             helper.make_node("Gather", ["sh", "i01"], ["nt"], axis=0),
             helper.make_node("Reshape", ["x", "m1_6"], ["flat"]),
             helper.make_node("MatMul", ["flat", "W"], ["mm"]),
             helper.make_node("Relu", ["mm"], ["act"]),
             helper.make_node("Concat", ["nt", "three"], ["tgt"], axis=0),
             helper.make_node("Reshape", ["act", "tgt"], ["y3"]),
             helper.make_node("Add", ["y3", "b"], ["y"])]
    outs = [vi("y", None)]
    if extra_reader:        # the merged rows are also summed: the merge must stay
        nodes.append(helper.make_node("ReduceSum", ["mm"], ["total"], keepdims=0))
        outs.append(vi("total", None))
    inits = [c("i01", np.array([0, 1], np.int64)), c("m1_6", np.array([-1, 6], np.int64)),
             c("W", rng.standard_normal((6, 3)).astype(np.float32)),
             c("three", np.array([3], np.int64)), c("b", rng.standard_normal(3).astype(np.float32))]
    return model_of(nodes, [vi("x", ["N", "T", 6])], outs, inits, opset=13)


def test_dense_reshape_pair_with_dynamic_batch_and_time_streams(tol):
    m = _dense_pair(extra_reader=False)
    g = convert(m)
    assert Op.RESHAPE not in {n.op for n in g.nodes}
    assert g.inputs[0].shape == ("N", "T", 6)
    model = Model(g)
    rng = np.random.default_rng(6)
    for n, t in ((2, 5), (3, 9)):
        x = rng.standard_normal((n, t, 6)).astype(np.float32)
        want = ort_run(m, {"x": x})["y"]
        for got in (reference.run(g, {"x": x})["y"], model.run({"x": x})["y"]):
            assert float(np.max(np.abs(got - want))) <= tol["float32"]
        stream = model.stream({"x": 1})
        parts = [stream.push({"x": x[:, k:k + 2]})["y"] for k in range(0, t, 2)]
        assert float(np.max(np.abs(np.concatenate(parts, axis=1) - want))) <= tol["float32"]


def test_dense_reshape_pair_kept_when_the_merged_rows_have_another_reader():
    from edgeseq.errors import UnsupportedModelError
    with pytest.raises(UnsupportedModelError, match="more than one dynamic dim"):
        convert(_dense_pair(extra_reader=True))


def test_fixed_length_dense_export_streams(tol):
    # tf2onnx with a fixed T writes T into the Dense Reshapes ([T*N, H] and [N, T, O]);
    # the converter turns that literal into -1, so the graph streams in chunks of any size
    rng = np.random.default_rng(8)
    t, h = 6, 4
    w = rng.standard_normal((1, 4 * h, 5)).astype(np.float32) * 0.5
    r = rng.standard_normal((1, 4 * h, h)).astype(np.float32) * 0.5
    nodes = [helper.make_node("LSTM", ["x", "W", "R"], ["y"], hidden_size=h),
             helper.make_node("Squeeze", ["y", "ax1"], ["ys"]),
             helper.make_node("Reshape", ["ys", "merge"], ["flat"]),
             helper.make_node("MatMul", ["flat", "D"], ["mm"]),
             helper.make_node("Reshape", ["mm", "split"], ["out3"]),
             helper.make_node("Add", ["out3", "b"], ["out"])]
    inits = [c("W", w), c("R", r), c("ax1", np.array([1], np.int64)),
             c("merge", np.array([t, h], np.int64)), c("split", np.array([t, 1, 3], np.int64)),
             c("D", rng.standard_normal((h, 3)).astype(np.float32)),
             c("b", rng.standard_normal(3).astype(np.float32))]
    m = model_of(nodes, [vi("x", [t, 1, 5])], [vi("out", None)], inits, opset=13)
    x = rng.standard_normal((t, 1, 5)).astype(np.float32)
    g = _check(m, {"x": x}, tol["float32"])
    # batch 1: the merge and split only drop and restore a size-1 axis (Squeeze/Unsqueeze);
    # no Reshape keeps the literal length
    assert not any(n.op is Op.RESHAPE and t in n.attrs["shape"] for n in g.nodes)
    want = ort_run(m, {"x": x})["out"]
    stream = Model(g).stream()
    parts = [stream.push({"x": x[k:k + 2]})["out"] for k in range(0, t, 2)]
    assert float(np.max(np.abs(np.concatenate(parts) - want))) <= tol["float32"]
