"""The compiled SRU kernel (runtime/sru.py + kernels/sru.py) against the float64 reference.

Graphs are built directly in the IR with random weights, so options the `sru` package cannot
express are covered too: reverse direction, batch_first, per-row sequence lengths, other
activations g, int8 / float16 weights from the quant passes. Streaming in chunks equals one
full run, and the carried state is the SRU's c.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgeseq import reference
from edgeseq.errors import GraphError
from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import Op
from edgeseq.quant import fp16, int8
from edgeseq.runtime import Model

TOL = 1e-5


def sru_graph(rng, n_in: int, hidden: int, *, direction: str = "forward", skip: str = "input",
              layer_norm: str = "none", proj: int = 0, v1: bool = False,
              activation: str = "affine", batch_first: bool = False, lens: bool = False,
              c0: bool = False, scale: float = 1.3) -> Graph:
    d = 2 if direction == "bidirectional" else 1
    gates = 4 if skip == "projected" else 3
    i_gemm = proj or n_in
    w = {"w_x": rng.uniform(-0.5, 0.5, (d, gates * hidden, i_gemm)),
         "b": rng.uniform(-1, 1, (d, 2, hidden))}
    if proj:
        w["w_x_proj"] = rng.uniform(-0.5, 0.5, (1, proj, n_in))
    if not v1:
        w["v"] = rng.uniform(-1, 1, (d, 2, hidden))
    if layer_norm != "none":
        feat = n_in if layer_norm == "before" else d * hidden
        w["ln_gain"] = rng.uniform(0.5, 1.5, feat)
        w["ln_bias"] = rng.uniform(-0.5, 0.5, feat)
    consts = {f"sru.{k}": np.asarray(v, np.float32) for k, v in w.items()}
    inputs = [Value("x", "float32", ("N", "T", n_in) if batch_first else ("T", "N", n_in))]
    node_in = ["x", "", ""]
    if lens:
        inputs.append(Value("lens", "int64", ("N",)))
        node_in[1] = "lens"
    if c0:
        inputs.append(Value("c0", "float32", ("N", d, hidden) if batch_first else (d, "N", hidden)))
        node_in[2] = "c0"
    while not node_in[-1]:
        node_in.pop()
    attrs = {"hidden_size": hidden, "direction": direction, "batch_first": batch_first,
             "skip": skip, "skip_scale": scale if skip == "input" else 1.0,
             "layer_norm": layer_norm, "activations": (activation,) * d}
    node = Node("sru", Op.SRU, node_in, ["y", "y_c"], attrs, {k: f"sru.{k}" for k in w})
    return Graph("sru", inputs, [Value("y", "float32", ()), Value("y_c", "float32", ())],
                 [node], consts).validate()


def feeds(g: Graph, rng, t_len: int, n: int) -> dict:
    out = {}
    for v in g.inputs:
        shape = tuple(t_len if s == "T" else n if s == "N" else s for s in v.shape)
        out[v.name] = rng.integers(0, t_len + 1, n).astype(np.int64) if v.name == "lens" \
            else rng.standard_normal(shape).astype(np.float32)
    if "lens" in out:
        out["lens"][0] = t_len
    return out


def check(g: Graph, rng, t_len=7, n=3, tol=TOL):
    f = feeds(g, rng, t_len, n)
    want = reference.run(g, {k: v.astype(np.float64) if v.dtype.kind == "f" else v
                             for k, v in f.items()})
    got = Model(g).run(f)
    for k in want:
        assert got[k].dtype == np.float32 and got[k].shape == want[k].shape
        assert np.abs(got[k] - want[k]).max() <= tol, k


GRID = list(itertools.product(("forward", "reverse", "bidirectional"),
                              ("input", "projected", "none"), ("none", "before", "after")))


@pytest.mark.parametrize("direction,skip,layer_norm", GRID)
def test_runtime_matches_reference(direction, skip, layer_norm):
    k = GRID.index((direction, skip, layer_norm))
    rng = np.random.default_rng(k)
    d = 2 if direction == "bidirectional" else 1
    hidden = 5
    n_in = d * hidden if skip == "input" else 9
    g = sru_graph(rng, n_in, hidden, direction=direction, skip=skip, layer_norm=layer_norm,
                  proj=3 if k % 3 == 0 else 0, v1=k % 4 == 1,
                  activation=("affine", "tanh", "relu")[k % 3], batch_first=k % 2 == 1,
                  lens=k % 5 < 2, c0=k % 2 == 0)
    check(g, rng, n=1 if k % 4 == 3 else 3)


def test_wide_layer_matches_reference():
    """A width where the elementwise loops run in vector blocks plus a remainder."""
    rng = np.random.default_rng(7)
    check(sru_graph(rng, 37, 131, direction="bidirectional", skip="projected", c0=True,
                    lens=True), rng, t_len=11, n=2)


@pytest.mark.parametrize("apply,tol", [(int8.apply, 1e-5), (fp16.apply, 1e-5)])
def test_compressed_weights_match_their_reference(apply, tol):
    """The int8 / fp16 passes re-encode w_x and w_x_proj; the kernel dequantises them at
    load and matches the reference of the compressed graph."""
    rng = np.random.default_rng(11)
    g = sru_graph(rng, 9, 6, direction="bidirectional", skip="projected", proj=4)
    q, rows = apply(g)
    node = q.nodes[0]
    assert str(q.constants[node.weights["w_x"]].dtype) in ("int8", "float16")
    check(q, rng, tol=tol)
    assert "dequantised" in Model(q).describe()


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_streaming_any_chunking_equals_full_run(direction):
    rng = np.random.default_rng(5)
    g = sru_graph(rng, 6, 6, skip="input", layer_norm="after", c0=False,
                  direction=direction)
    m = Model(g)
    x = rng.standard_normal((12, 2, 6)).astype(np.float32)
    if direction == "reverse":
        with pytest.raises(GraphError, match="only forward streams"):
            m.stream()
        return
    full = m.run({"x": x})
    for cuts in ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [5], [3, 9], [11]):
        s = m.stream()
        parts = [s.push({"x": c}) for c in np.split(x, cuts)]
        assert np.abs(np.concatenate([p["y"] for p in parts]) - full["y"]).max() <= 1e-6
        assert np.abs(parts[-1]["y_c"] - full["y_c"]).max() <= 1e-6
        state = s.state["sru"]
        assert [a.shape for a in state.values()] == [(1, 2, 6)]
        assert np.abs(next(iter(state.values())) - full["y_c"]).max() <= 1e-6


def test_stacked_layers_stream(rng):
    """Two SRU nodes in a chain (as the converter emits num_layers=2) stream exactly."""
    g1 = sru_graph(rng, 4, 4, skip="none")
    g2 = sru_graph(rng, 4, 4, skip="input", layer_norm="before")
    n2 = g2.nodes[0]
    n2.name, n2.inputs, n2.outputs = "sru2", ["y"], ["y2", "y2_c"]
    n2.weights = {k: v.replace("sru.", "sru2.") for k, v in n2.weights.items()}
    consts = dict(g1.constants)
    consts.update({k.replace("sru.", "sru2."): v for k, v in g2.constants.items()})
    g = Graph("stack", g1.inputs, [Value("y2", "float32", ())], [g1.nodes[0], n2],
              consts).validate()
    m = Model(g)
    x = rng.standard_normal((9, 1, 4)).astype(np.float32)
    want = reference.run(g, {"x": x.astype(np.float64)})["y2"]
    full = m.run({"x": x})["y2"]
    assert np.abs(full - want).max() <= TOL
    s = m.stream()
    got = np.concatenate([s.push({"x": c})["y2"] for c in np.split(x, [2, 3, 8])])
    assert np.abs(got - full).max() <= 1e-6
