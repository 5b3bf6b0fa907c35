"""int8 Conv1d weights: per-output-channel quantisation, the float16 fallback where int8
would move the weights too much, and the runtime reading the scales (it dequantises int8
Conv1d weights once at load: float32 products, equal to the float64 reference of the same
int8 graph up to float32 rounding)."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseq import reference
from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import Op
from edgeseq.quant import int8
from edgeseq.runtime import Model

CONV = {"stride": 1, "pads": (1, 1), "dilation": 1, "group": 1}


def _chain(rng, group2: int = 1) -> Graph:
    """x [N, 4, L] -> Conv(8, k3) -> Relu -> Conv(6, k3, stride 2, group2) -> Relu ->
    Conv(5, k1) -> y."""
    def n(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    consts = {"w1": n(8, 4, 3), "b1": n(8), "w2": n(6, 8 // group2, 3), "b2": n(6),
              "w3": n(5, 6, 1)}
    nodes = [Node("c1", Op.CONV1D, ["x", "w1", "b1"], ["a"], dict(CONV)),
             Node("r1", Op.RELU, ["a"], ["ra"], {}),
             Node("c2", Op.CONV1D, ["ra", "w2", "b2"], ["b"],
                  dict(CONV, stride=2, group=group2)),
             Node("r2", Op.RELU, ["b"], ["rb"], {}),
             Node("c3", Op.CONV1D, ["rb", "w3"], ["y"], dict(CONV, pads=(0, 0)))]
    return Graph("chain", [Value("x", "float32", ("N", 4, "L"))], [Value("y", "float32", ())],
                 nodes, consts).validate()


def _x(rng, n=2, length=13):
    return {"x": rng.standard_normal((n, 4, length)).astype(np.float32)}


@pytest.mark.parametrize("group2", [1, 2])
def test_int8_conv_per_channel_runtime_matches_reference(rng, group2, tol):
    g = _chain(rng, group2=group2)
    q, rows = int8.apply(g)
    for name in ("w1", "w2", "w3"):
        w, sc = q.constants[name], q.constants[name + ".scale"]
        assert w.dtype == np.int8 and sc.shape == (w.shape[0], 1) and sc.dtype == np.float32
        err = np.abs(w * sc[..., None].astype(np.float64) - g.constants[name])
        assert np.all(err <= sc[..., None] / 2 * (1 + 1e-6))
    assert [(r["layer"], r["weights"]) for r in rows] == [("c1", "int8"), ("c2", "int8"),
                                                           ("c3", "int8")]
    # the interpreter (panel kernel for the small calls, im2col + BLAS for the grouped one)
    # and the generated code read the scales; reference: float64 on the same int8 graph
    for x in (_x(rng, 1, 9), _x(rng, 3, 40)):
        want = reference.run(q, x)["y"]
        bound = tol["float32"] * max(1.0, float(np.max(np.abs(want))))
        assert np.max(np.abs(Model(q, warmup=False).run(x)["y"] - want)) <= bound
        assert np.max(np.abs(Model(q, warmup=False, codegen=True).run(x)["y"] - want)) <= bound
        # and the int8 graph is the float one to within the weights' rounding
        assert np.max(np.abs(want - reference.run(g, x)["y"])) <= 0.05 * np.max(np.abs(want))


def test_int8_conv_falls_back_to_fp16_when_int8_moves_weights_too_much(rng):
    w = (rng.choice([-1e-2, 1e-2], (3, 50, 4))).astype(np.float32)
    w[:, 7, 1] = 1.0                     # one tap per channel dwarfs the other 199
    nodes = [Node("c", Op.CONV1D, ["x", "w"], ["y"], dict(CONV)),
             Node("d", Op.CONV1D, ["x", "v"], ["z"], dict(CONV)),
             Node("e", Op.CONV1D, ["x", "u"], ["t"], dict(CONV))]
    huge = w * 1e5                       # beyond float16: kept as it is
    g = Graph("two", [Value("x", "float32", ("N", 50, "L"))],
              [Value(v, "float32", ()) for v in "yzt"], nodes,
              {"w": w, "v": rng.standard_normal((3, 50, 4)).astype(np.float32),
               "u": huge}).validate()
    assert int8.relative_error(w, *int8.quantize_channels(w)) > int8.CONV_MAX_REL_ERROR
    q, _ = int8.apply(g)
    assert q.constants["w"].dtype == np.float16 and "w.scale" not in q.constants
    assert q.constants["u"].dtype == np.float32 and "u.scale" not in q.constants
    assert q.constants["v"].dtype == np.int8
    assert int8.apply(g, conv=False)[0].constants["v"].dtype == np.float32


@pytest.mark.parametrize("scale", [None, "flat", "float64"])
def test_int8_conv_weight_without_a_usable_scale_is_refused(rng, scale):
    """An int8 Conv1d weight is only meaningful with its per-channel scale: a missing one, or
    one that would broadcast along the wrong axis ([O] against [O, C, K]), is refused naming
    the node and the field instead of running on raw int8 values."""
    from edgeseq.errors import ShapeError
    g, _ = int8.apply(_chain(rng))
    sc = g.constants["w2.scale"]
    if scale is None:
        del g.constants["w2.scale"]
    else:
        g.constants["w2.scale"] = sc.reshape(-1) if scale == "flat" else sc.astype(np.float64)
    with pytest.raises(ShapeError, match=r"node 'c2' \(Conv1d\).*w is int8.*w2\.scale"):
        g.validate()


def test_int8_conv_one_scale_when_channels_share_their_range(rng, tol):
    """Channels that share their range (each peaks at 1, as an STFT basis nearly does) get
    one (1, 1) scale (4 bytes instead of 4 per channel); the runtime (interpreter and
    generated code) broadcasts it like the float64 reference. The pass stores the biases of
    the convolutions it rewrote as float16; a Gaussian weight keeps per-channel scales."""
    w = rng.standard_normal((6, 1, 8))
    w /= np.max(np.abs(w), axis=-1, keepdims=True)
    g = Graph("basis", [Value("x", "float32", ("N", 1, "L"))], [Value("y", "float32", ())],
              [Node("c", Op.CONV1D, ["x", "w", "b"], ["y"], dict(CONV, pads=(0, 0), stride=4))],
              {"w": w.astype(np.float32), "b": rng.standard_normal(6).astype(np.float32)}
              ).validate()
    q, _ = int8.apply(g)
    assert q.constants["w"].dtype == np.int8 and q.constants["w.scale"].shape == (1, 1)
    assert q.constants["b"].dtype == np.float16
    x = {"x": rng.standard_normal((2, 1, 30)).astype(np.float32)}
    want = reference.run(q, x)["y"]
    assert np.max(np.abs(want - reference.run(g, x)["y"])) <= 0.05 * np.max(np.abs(want))
    for codegen in (False, True):
        got = Model(q, warmup=False, codegen=codegen).run(x)["y"]
        assert np.max(np.abs(got - want)) <= tol["float32"] * max(1.0, np.max(np.abs(want)))
    chain, _ = int8.apply(_chain(rng))
    assert chain.constants["w1.scale"].shape == (8, 1)
    assert chain.constants["b1"].dtype == np.float16
