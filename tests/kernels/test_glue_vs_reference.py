"""Runtime glue kernels (float32 NumPy) vs the float64 reference, one small graph per op."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseq import reference
from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import Op, SPECS
from edgeseq.runtime import Model
from edgeseq.runtime.plan import REGISTRY
from edgeseq.runtime.registry import KernelKey

R = np.random.default_rng(9)


def _f(*shape):
    return R.standard_normal(shape).astype(np.float32)


# op -> (input arrays (name: array, constants prefixed "c:"), attrs)
CASES = {
    "matmul": (Op.MATMUL, {"a": _f(3, 2, 4), "c:b": _f(4, 5)}, {}),
    "gemm": (Op.GEMM, {"a": _f(4, 3), "c:b": _f(5, 3), "c:c": _f(5)},
             {"trans_b": True, "alpha": 0.5, "beta": 2.0}),
    "conv": (Op.CONV1D, {"x": _f(2, 4, 11), "c:w": _f(6, 2, 3), "c:b": _f(6)},
             {"stride": 2, "pads": (2, 1), "dilation": 2, "group": 2}),
    "conv_plain": (Op.CONV1D, {"x": _f(1, 3, 9), "c:w": _f(5, 3, 4)}, {}),
    "add": (Op.ADD, {"a": _f(3, 4), "c:b": _f(4)}, {}),
    "sub": (Op.SUB, {"a": _f(3, 4), "b": _f(3, 1)}, {}),
    "mul": (Op.MUL, {"a": _f(2, 3), "b": _f(2, 3)}, {}),
    "div": (Op.DIV, {"a": _f(2, 3), "c:b": (np.abs(_f(3)) + 0.5)}, {}),
    "pow": (Op.POW, {"a": np.abs(_f(2, 3)) + 0.1, "c:b": np.float32([2.0, 0.5, 3.0])}, {}),
    "relu": (Op.RELU, {"x": _f(3, 4)}, {}),
    "sigmoid": (Op.SIGMOID, {"x": _f(3, 4) * 20}, {}),
    "tanh": (Op.TANH, {"x": _f(3, 4)}, {}),
    "sqrt": (Op.SQRT, {"x": np.abs(_f(3, 4))}, {}),
    "exp": (Op.EXP, {"x": _f(3, 4)}, {}),
    "log": (Op.LOG, {"x": np.abs(_f(3, 4)) + 0.1}, {}),
    "neg": (Op.NEG, {"x": _f(3)}, {}),
    "abs": (Op.ABS, {"x": _f(3)}, {}),
    "clip": (Op.CLIP, {"x": _f(3, 4)}, {"min": -0.5, "max": 0.3}),
    "leaky": (Op.LEAKY_RELU, {"x": _f(3, 4)}, {"alpha": 0.2}),
    "cast16": (Op.CAST, {"x": _f(3, 4)}, {"to": "float16"}),
    "identity": (Op.IDENTITY, {"x": _f(3)}, {}),
    "softmax": (Op.SOFTMAX, {"x": _f(2, 3, 4)}, {"axis": 1}),
    "logsoftmax": (Op.LOG_SOFTMAX, {"x": _f(2, 5)}, {"axis": -1}),
    "mean": (Op.REDUCE_MEAN, {"x": _f(2, 3, 4)}, {"axes": (1, 2), "keepdims": False}),
    "sum": (Op.REDUCE_SUM, {"x": _f(2, 3, 4)}, {"axes": (0,), "keepdims": True}),
    "concat": (Op.CONCAT, {"a": _f(2, 3), "b": _f(2, 2)}, {"axis": 1}),
    "slice": (Op.SLICE, {"x": _f(5, 6)},
              {"starts": (-1, 1), "ends": (-2**62, 5), "axes": (0, 1), "steps": (-2, 2)}),
    "transpose": (Op.TRANSPOSE, {"x": _f(2, 3, 4)}, {"perm": (2, 0, 1)}),
    "reshape": (Op.RESHAPE, {"x": _f(2, 3, 4)}, {"shape": (0, -1)}),
    "squeeze": (Op.SQUEEZE, {"x": _f(2, 1, 4)}, {"axes": (1,)}),
    "unsqueeze": (Op.UNSQUEEZE, {"x": _f(2, 4)}, {"axes": (0, -1)}),
    "pad_const": (Op.PAD, {"x": _f(2, 3)}, {"pads": (1, -1, 0, 2), "value": 0.5}),
    "pad_reflect": (Op.PAD, {"x": _f(2, 4)}, {"pads": (0, 2, 0, 1), "mode": "reflect"}),
    "pad_edge": (Op.PAD, {"x": _f(3, 2)}, {"pads": (1, 0, 1, 0), "mode": "edge"}),
    "gather": (Op.GATHER, {"x": _f(4, 3), "c:i": np.array([[0, -1], [2, 2]], np.int64)},
               {"axis": 0}),
}


def _graph(op, arrays, attrs):
    inputs, consts, names = [], {}, []
    for key, a in arrays.items():
        name = key[2:] if key.startswith("c:") else key
        names.append(name)
        if key.startswith("c:"):
            consts[name] = a
        else:
            inputs.append(Value(name, str(a.dtype), a.shape))
    return Graph(op.value, inputs, [Value("y", "float32", ())],
                 [Node("n", op, names, ["y"], dict(attrs))], consts).validate()


@pytest.mark.parametrize("case", sorted(CASES))
def test_glue_op_matches_reference(case, tol):
    op, arrays, attrs = CASES[case]
    g = _graph(op, arrays, attrs)
    feed = {k: v for k, v in arrays.items() if not k.startswith("c:")}
    want = reference.run(g, feed)["y"]
    got = Model(g, warmup=False).run(feed)["y"]
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= tol["float32"] * max(1.0, float(np.max(np.abs(want))))


def test_split_matches_reference():
    x = _f(3, 7)
    g = Graph("split", [Value("x", "float32", (3, 7))], [Value("a", "float32", ()),
                                                          Value("b", "float32", ())],
              [Node("s", Op.SPLIT, ["x"], ["a", "b"], {"axis": 1, "split": (3, 4)})]).validate()
    want, got = reference.run(g, {"x": x}), Model(g, warmup=False).run({"x": x})
    for k in want:
        assert np.array_equal(got[k], want[k].astype(np.float32))


def test_every_op_has_a_runtime_kernel():
    Model(_graph(Op.RELU, {"x": _f(2)}, {}), warmup=False)     # loads the built-in kernels
    missing = [op.value for op in SPECS if KernelKey(op) not in REGISTRY]
    assert not missing, f"ops without a float32 runtime kernel: {missing}"
