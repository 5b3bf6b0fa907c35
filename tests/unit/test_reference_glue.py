"""Glue ops of edgeseq.reference vs the ONNX reference evaluator (onnx.reference, float64) and
torch.nn.functional.conv1d; plus input checking errors of `reference.run`."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgeseq import reference
from edgeseq.errors import InputError
from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import Op
from edgeseq.testing import lstm_graph, random_inputs

BIG = 2 ** 62


def edgeseq_single(op: Op, attrs: dict, inputs: list[np.ndarray], n_out: int = 1,
                   constants: dict | None = None) -> list[np.ndarray]:
    """Run one edgeseq node on `inputs` (graph inputs a0, a1, ...) plus named constants."""
    names = [f"a{k}" for k in range(len(inputs))]
    vals = [Value(n, str(a.dtype), tuple(a.shape)) for n, a in zip(names, inputs)]
    consts = dict(constants or {})
    outs = [f"y{k}" for k in range(n_out)]
    node = Node("n", op, names + [c for c in consts if not c.endswith(".scale")], outs,
                dict(attrs))
    g = Graph("glue", vals, [Value(o, "float64", ()) for o in outs], [node], consts).validate()
    res = reference.run(g, dict(zip(names, inputs)))
    return [res[o] for o in outs]


def onnx_single(op_type: str, inputs: list[np.ndarray], n_out: int = 1, attrs: dict | None = None,
                extra: list[np.ndarray] | None = None, opset: int = 17) -> list[np.ndarray]:
    """Run one ONNX node with the ONNX Python reference evaluator; `extra` are initializers."""
    names = [f"a{k}" for k in range(len(inputs))]
    inits = [numpy_helper.from_array(np.asarray(e), f"c{k}") for k, e in enumerate(extra or [])]
    node_in = names + [i.name for i in inits]
    outs = [f"y{k}" for k in range(n_out)]
    node = helper.make_node(op_type, node_in, outs, **(attrs or {}))
    g = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
         for n, a in zip(names, inputs)],
        [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in outs], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    return list(ReferenceEvaluator(model).run(None, dict(zip(names, inputs))))


R = np.random.default_rng(12)


def f(*shape, positive=False):
    a = R.standard_normal(shape)
    return np.abs(a) + 0.1 if positive else a


I64 = lambda *v: np.array(v, np.int64)  # noqa: E731

# (id, edgeseq op, edgeseq attrs, inputs, onnx op, onnx attrs, onnx extra initializers, n_out)
CASES = [
    ("matmul", Op.MATMUL, {}, [f(2, 3, 4), f(4, 5)], "MatMul", {}, [], 1),
    ("matmul_batch_bcast", Op.MATMUL, {}, [f(2, 1, 3, 4), f(3, 4, 2)], "MatMul", {}, [], 1),
    ("matmul_vec", Op.MATMUL, {}, [f(4), f(2, 4, 3)], "MatMul", {}, [], 1),
    # attribute values exact in float32 (ONNX stores float attributes as float32)
    ("gemm", Op.GEMM, dict(alpha=0.75, beta=1.25, trans_a=True, trans_b=True),
     [f(4, 3), f(5, 4), f(5)], "Gemm", dict(alpha=0.75, beta=1.25, transA=1, transB=1), [], 1),
    ("gemm_no_c", Op.GEMM, {}, [f(3, 4), f(4, 2)], "Gemm", {}, [], 1),
    ("add", Op.ADD, {}, [f(2, 3, 4), f(3, 1)], "Add", {}, [], 1),
    ("sub", Op.SUB, {}, [f(4), f(2, 3, 4)], "Sub", {}, [], 1),
    ("mul", Op.MUL, {}, [f(2, 1, 4), f(1, 3, 1)], "Mul", {}, [], 1),
    ("div", Op.DIV, {}, [f(2, 3), f(2, 3, positive=True)], "Div", {}, [], 1),
    ("pow", Op.POW, {}, [f(2, 3, positive=True), f(3)], "Pow", {}, [], 1),
    ("relu", Op.RELU, {}, [f(3, 4)], "Relu", {}, [], 1),
    ("sigmoid", Op.SIGMOID, {}, [10 * f(3, 4)], "Sigmoid", {}, [], 1),
    ("tanh", Op.TANH, {}, [f(3, 4)], "Tanh", {}, [], 1),
    ("sqrt", Op.SQRT, {}, [f(3, 4, positive=True)], "Sqrt", {}, [], 1),
    ("exp", Op.EXP, {}, [f(3, 4)], "Exp", {}, [], 1),
    ("log", Op.LOG, {}, [f(3, 4, positive=True)], "Log", {}, [], 1),
    ("neg", Op.NEG, {}, [f(3, 4)], "Neg", {}, [], 1),
    ("abs", Op.ABS, {}, [f(3, 4)], "Abs", {}, [], 1),
    ("identity", Op.IDENTITY, {}, [f(3, 4)], "Identity", {}, [], 1),
    ("clip", Op.CLIP, dict(min=-0.3, max=0.5), [f(3, 4)], "Clip", {},
     [np.array(-0.3), np.array(0.5)], 1),
    ("leaky_relu", Op.LEAKY_RELU, dict(alpha=0.25), [f(3, 4)], "LeakyRelu", dict(alpha=0.25), [],
     1),
    ("softmax", Op.SOFTMAX, dict(axis=1), [5 * f(2, 3, 4)], "Softmax", dict(axis=1), [], 1),
    ("log_softmax", Op.LOG_SOFTMAX, dict(axis=-1), [5 * f(2, 3, 4)], "LogSoftmax", dict(axis=-1),
     [], 1),
    ("reduce_mean", Op.REDUCE_MEAN, dict(axes=(1,), keepdims=False), [f(2, 3, 4)], "ReduceMean",
     dict(axes=[1], keepdims=0), [], 1),
    ("reduce_mean_all", Op.REDUCE_MEAN, dict(axes=()), [f(2, 3, 4)], "ReduceMean", {}, [], 1),
    ("reduce_sum", Op.REDUCE_SUM, dict(axes=(0, -1), keepdims=True), [f(2, 3, 4)], "ReduceSum",
     dict(keepdims=1), [I64(0, -1)], 1),
    ("concat", Op.CONCAT, dict(axis=1), [f(2, 1, 4), f(2, 3, 4), f(2, 2, 4)], "Concat",
     dict(axis=1), [], 1),
    ("split", Op.SPLIT, dict(axis=1, split=(1, 3, 2)), [f(2, 6, 3)], "Split", dict(axis=1),
     [I64(1, 3, 2)], 3),
    ("slice_basic", Op.SLICE, dict(starts=(1, 0), ends=(3, BIG), axes=(0, 2), steps=(1, 2)),
     [f(4, 3, 5)], "Slice", {}, [I64(1, 0), I64(3, BIG), I64(0, 2), I64(1, 2)], 1),
    ("slice_negative_steps", Op.SLICE,
     dict(starts=(-1, 10), ends=(-BIG, 0), axes=(0, -1), steps=(-2, -1)),
     [f(5, 3, 6)], "Slice", {}, [I64(-1, 10), I64(-BIG, 0), I64(0, -1), I64(-2, -1)], 1),
    ("slice_clamped", Op.SLICE, dict(starts=(-100, 2), ends=(100, -1), axes=(1, 2), steps=(1, 1)),
     [f(2, 3, 6)], "Slice", {}, [I64(-100, 2), I64(100, -1), I64(1, 2), I64(1, 1)], 1),
    ("slice_empty", Op.SLICE, dict(starts=(3,), ends=(1,), axes=(0,), steps=(1,)), [f(5, 2)],
     "Slice", {}, [I64(3), I64(1), I64(0), I64(1)], 1),
    ("transpose", Op.TRANSPOSE, dict(perm=(2, 0, 1)), [f(2, 3, 4)], "Transpose",
     dict(perm=[2, 0, 1]), [], 1),
    ("transpose_default", Op.TRANSPOSE, dict(perm=()), [f(2, 3, 4)], "Transpose", {}, [], 1),
    ("reshape_0_neg1", Op.RESHAPE, dict(shape=(0, -1)), [f(2, 3, 4)], "Reshape", {},
     [I64(0, -1)], 1),
    ("reshape_0s", Op.RESHAPE, dict(shape=(0, 0, 2, -1)), [f(2, 3, 4)], "Reshape", {},
     [I64(0, 0, 2, -1)], 1),
    ("reshape_neg1_first", Op.RESHAPE, dict(shape=(-1, 4)), [f(2, 3, 4)], "Reshape", {},
     [I64(-1, 4)], 1),
    ("squeeze", Op.SQUEEZE, dict(axes=(1, -1)), [f(2, 1, 3, 1)], "Squeeze", {}, [I64(1, -1)], 1),
    ("squeeze_all", Op.SQUEEZE, dict(axes=()), [f(1, 2, 1, 3)], "Squeeze", {}, [], 1),
    ("unsqueeze", Op.UNSQUEEZE, dict(axes=(0, -1)), [f(2, 3)], "Unsqueeze", {}, [I64(0, -1)], 1),
    ("pad_constant", Op.PAD, dict(pads=(0, 1, 2, 0, 2, 1), mode="constant", value=0.5),
     [f(2, 3, 4)], "Pad", dict(mode="constant"), [I64(0, 1, 2, 0, 2, 1), np.array(0.5)], 1),
    ("pad_reflect", Op.PAD, dict(pads=(0, 0, 2, 0, 0, 3), mode="reflect"), [f(2, 3, 5)], "Pad",
     dict(mode="reflect"), [I64(0, 0, 2, 0, 0, 3)], 1),
    ("pad_edge", Op.PAD, dict(pads=(1, 0, 3, 0, 2, 1), mode="edge"), [f(2, 3, 4)], "Pad",
     dict(mode="edge"), [I64(1, 0, 3, 0, 2, 1)], 1),
    ("gather", Op.GATHER, dict(axis=1), [f(2, 5, 3), np.array([[0, -1], [3, 2]], np.int64)],
     "Gather", dict(axis=1), [], 1),
    ("gather_scalar_index", Op.GATHER, dict(axis=0), [f(4, 3), np.array(2, np.int64)], "Gather",
     dict(axis=0), [], 1),
    ("cast_f16", Op.CAST, dict(to="float16"), [f(3, 4)], "Cast", dict(to=TensorProto.FLOAT16),
     [], 1),
    ("cast_int32", Op.CAST, dict(to="int32"), [3 * f(3, 4)], "Cast", dict(to=TensorProto.INT32),
     [], 1),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_glue_matches_onnx(case):
    _, op, attrs, inputs, onnx_op, onnx_attrs, extra, n_out = case
    got = edgeseq_single(op, attrs, inputs, n_out)
    want = onnx_single(onnx_op, inputs, n_out, onnx_attrs, extra)
    for g, w in zip(got, want):
        assert g.shape == w.shape, f"shape {g.shape} vs {w.shape}"
        if g.dtype.kind == "f":
            assert g.dtype == np.float64
        np.testing.assert_allclose(g, w.astype(g.dtype), rtol=1e-12, atol=1e-12)


def test_glue_constant_input_float32_weight():
    """A node input may name a graph constant; float32 constants are upcast, not rounded."""
    w = R.standard_normal((4, 3)).astype(np.float32)
    x = f(2, 4)
    (y,) = edgeseq_single(Op.MATMUL, {}, [x], constants={"w": w})
    np.testing.assert_allclose(y, x @ w.astype(np.float64), rtol=1e-13)


def test_glue_int8_constant_is_dequantised():
    q = R.integers(-127, 128, size=(3, 4)).astype(np.int8)
    scale = R.uniform(0.01, 0.1, size=(3,)).astype(np.float32)
    x = f(2, 3)
    (y,) = edgeseq_single(Op.MATMUL, {}, [x], constants={"w": q, "w.scale": scale})
    np.testing.assert_allclose(y, x @ (q * scale.astype(np.float64)[:, None]), rtol=1e-13)


@pytest.mark.parametrize("stride,pads,dilation,group,bias", [
    (1, (0, 0), 1, 1, True), (2, (1, 2), 2, 2, True), (3, (2, 0), 1, 3, False),
    (1, (3, 3), 3, 6, True)])
def test_conv1d_matches_torch(stride, pads, dilation, group, bias):
    x = f(2, 6, 11)
    w = f(6, 6 // group, 3)
    b = f(6) if bias else None
    got = edgeseq_single(Op.CONV1D, dict(stride=stride, pads=pads, dilation=dilation,
                                        group=group), [x, w] + ([b] if bias else []))[0]
    xt = torch.nn.functional.pad(torch.from_numpy(x), pads)    # asymmetric pads: pad first
    want = torch.nn.functional.conv1d(xt, torch.from_numpy(w),
                                      None if b is None else torch.from_numpy(b),
                                      stride=stride, dilation=dilation, groups=group).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_pad_negative_crops():
    x = f(3, 5)
    (y,) = edgeseq_single(Op.PAD, dict(pads=(-1, 2, 0, -2), mode="constant"), [x])
    want = np.pad(x[1:, :], ((0, 0), (2, 0)))[:, :-2]
    np.testing.assert_array_equal(y, want)


def test_integer_div_truncates():
    a, b = np.array([7, -7, 6], np.int64), np.array([2, 2, -4], np.int64)
    (y,) = edgeseq_single(Op.DIV, {}, [a, b])
    np.testing.assert_array_equal(y, np.array([3, -3, -1]))


# ---- input checking ---------------------------------------------------------------------------
@pytest.fixture
def graph():
    return lstm_graph(np.random.default_rng(0), 3, 4, seq_lens=True, initial_state=True)


def test_missing_input_is_named(graph):
    inputs = random_inputs(graph, np.random.default_rng(1), 5, 2)
    del inputs["initial_c"]
    with pytest.raises(InputError, match="initial_c"):
        reference.run(graph, inputs)


def test_unknown_input_is_named(graph):
    inputs = random_inputs(graph, np.random.default_rng(1), 5, 2)
    inputs["X"] = inputs["x"]
    with pytest.raises(InputError, match="'X'"):
        reference.run(graph, inputs)


@pytest.mark.parametrize("bad,match", [
    (lambda i: i.update(x=i["x"][0]), r"input 'x': rank 2 .*expected \(T, N, 3\)"),
    (lambda i: i.update(x=np.zeros((5, 2, 4), np.float32)), r"input 'x': dim 2 is 4"),
    (lambda i: i.update(sequence_lens=np.array([5, 5, 5], np.int32)), r"'N'"),
    (lambda i: i.update(x=i["x"].astype(np.int32)), r"input 'x': dtype int32"),
    (lambda i: i.update(sequence_lens=np.array([6, 1], np.int32)), r"sequence_lens .*\[0, 5\]"),
])
def test_bad_input_shape_is_explained(graph, bad, match):
    inputs = random_inputs(graph, np.random.default_rng(1), 5, 2)
    bad(inputs)
    with pytest.raises(InputError, match=match):
        reference.run(graph, inputs)


def test_unvalidated_graph_is_validated():
    g = lstm_graph(np.random.default_rng(0), 3, 4)
    g2 = Graph(g.name, g.inputs, g.outputs, g.nodes, g.constants)
    g2.nodes[0].attrs = {"hidden_size": 4}
    out = reference.run(g2, random_inputs(g2, np.random.default_rng(1), 4, 2))
    assert out["y"].shape == (4, 1, 2, 4) and out["y"].dtype == np.float64
