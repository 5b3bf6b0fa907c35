"""Conv1d's compiled panel path (small one-group calls, runtime/kernels/conv.py) and its BLAS
fallback (large calls, groups) vs the float64 reference across strides, pads, dilations,
bias, batch sizes and output lengths that leave panel remainders."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgeseq import reference
from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import Op
from edgeseq.runtime import Model
from edgeseq.runtime import glue

R = np.random.default_rng(41)

GRID = list(itertools.product(
    [(1, 3, 9), (2, 5, 17), (1, 129, 4)],        # x shape: batch, channels, length
    [(5, 3), (70, 1), (16, 4)],                  # out channels, kernel
    [1, 2, 3],                                   # stride
    [(0, 0), (1, 1), (2, 0)],                    # pads
    [1, 2],                                      # dilation
    [True, False]))                              # bias
# only valid convolutions: the dilated kernel fits in the padded input
GRID = [c for c in GRID if c[0][2] + sum(c[3]) >= c[4] * (c[1][1] - 1) + 1]


def _graph(x_shape, o, k, stride, pads, dil, bias, group=1):
    c = x_shape[1]
    consts = {"w": R.standard_normal((o, c // group, k)).astype(np.float32)}
    ins = ["x", "w"]
    if bias:
        consts["b"] = R.standard_normal(o).astype(np.float32)
        ins.append("b")
    return Graph("conv", [Value("x", "float32", x_shape)], [Value("y", "float32", ())],
                 [Node("n", Op.CONV1D, ins, ["y"], {"stride": stride, "pads": pads,
                                                   "dilation": dil, "group": group})],
                 consts).validate()


@pytest.mark.parametrize("x_shape,ok,stride,pads,dil,bias", GRID)
def test_small_conv_matches_reference(x_shape, ok, stride, pads, dil, bias, tol):
    o, k = ok
    g = _graph(x_shape, o, k, stride, pads, dil, bias)
    x = R.standard_normal(x_shape).astype(np.float32)
    model = Model(g, warmup=False)
    assert model.plan.steps[0].kernel._wp is not None       # the panel path is the one tested
    got = model.run({"x": x})["y"]
    want = reference.run(g, {"x": x})["y"]
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= tol["float32"] * max(1.0, float(np.max(np.abs(want))))


def test_large_and_grouped_conv_take_blas_and_match(tol, monkeypatch):
    monkeypatch.setattr(glue, "CONV_DIRECT_MAX_MACS", 10)       # force the BLAS fallback
    for group in (1, 2):
        g = _graph((2, 4, 12), 6, 3, 2, (1, 1), 1, True, group=group)
        x = R.standard_normal((2, 4, 12)).astype(np.float32)
        got = Model(g, warmup=False).run({"x": x})["y"]
        want = reference.run(g, {"x": x})["y"]
        assert np.max(np.abs(got - want)) <= tol["float32"] * max(1.0, float(np.max(np.abs(want))))


def test_non_contiguous_input_is_handled():
    g = _graph((1, 6, 10), 4, 3, 1, (1, 1), 1, True)
    x = R.standard_normal((1, 10, 6)).astype(np.float32).transpose(0, 2, 1)
    k = Model(g, warmup=False).plan.steps[0].kernel
    got = k([x, g.constants["w"], g.constants["b"]])[0]
    want = reference.run(g, {"x": np.ascontiguousarray(x)})["y"]
    assert np.max(np.abs(got - want)) <= 1e-5 * max(1.0, float(np.max(np.abs(want))))


def _conv_act_graph(act: Op, extra_reader: bool, conv_is_output: bool):
    c, o, k = 6, 8, 3
    consts = {"w": R.standard_normal((o, c, k)).astype(np.float32),
              "b": R.standard_normal(o).astype(np.float32)}
    nodes = [Node("conv", Op.CONV1D, ["x", "w", "b"], ["cv"],
                  {"stride": 1, "pads": (1, 1), "dilation": 1, "group": 1}),
             Node("act", act, ["cv"], ["y"], {})]
    outs = [Value("y", "float32", ())]
    if extra_reader:
        nodes.append(Node("neg", Op.NEG, ["cv"], ["z"], {}))
        outs.append(Value("z", "float32", ()))
    if conv_is_output:
        outs.append(Value("cv", "float32", ()))
    return Graph("conv_act", [Value("x", "float32", (2, c, 9))], outs, nodes,
                 consts).validate()


@pytest.mark.parametrize("act", [Op.RELU, Op.SIGMOID])
@pytest.mark.parametrize("extra_reader,conv_is_output,fused",
                         [(False, False, True), (True, False, False), (False, True, False)])
@pytest.mark.parametrize("blas", [False, True])
def test_activation_fused_into_conv_only_when_alone(act, extra_reader, conv_is_output, fused,
                                                    blas, tol, monkeypatch):
    if blas:
        monkeypatch.setattr(glue, "CONV_DIRECT_MAX_MACS", 10)
    g = _conv_act_graph(act, extra_reader, conv_is_output)
    model = Model(g, warmup=False)
    assert (len(model.plan.steps) == len(g.nodes) - 1) is fused
    assert ("fused" in model.describe()) is fused
    x = R.standard_normal((2, 6, 9)).astype(np.float32)
    got = model.run({"x": x})
    want = reference.run(g, {"x": x})
    for name in want:
        assert np.max(np.abs(got[name] - want[name])) <= tol["float32"] * max(
            1.0, float(np.max(np.abs(want[name]))))
