"""The general Loop op: reference semantics against hand-written NumPy loops, the runtime
against the reference, the artifact round trip, and refusals of malformed or hostile loops."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeseq import artifact, reference
from edgeseq.errors import ArtifactError, GraphError, InputError, ShapeError
from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import Op


def _cumsum_body(stop_at: float | None = None) -> Graph:
    """acc <- (acc + x[i]) * 0.5; y_i = tanh(acc); cond <- max(acc) < stop_at (if given)."""
    nodes = [Node("g", Op.GATHER, ["xs", "i"], ["xt"], {"axis": 0}),
             Node("a", Op.ADD, ["acc", "xt"], ["acc1"]),
             Node("m", Op.MUL, ["acc1", "half"], ["acc2"]),
             Node("t", Op.TANH, ["acc2"], ["y"])]
    consts = {"half": np.array(0.5, np.float32)}
    cond = "c"
    if stop_at is not None:
        nodes += [Node("s", Op.REDUCE_SUM, ["acc2"], ["tot"], {"axes": (0, 1), "keepdims": False}),
                  Node("l", Op.LESS, ["tot", "limit"], ["go"])]
        consts["limit"] = np.array(stop_at, np.float32)
        cond = "go"
    return Graph("body", [Value("i", "int64", ()), Value("c", "bool", ()),
                          Value("acc", "float32", ("N", 3)), Value("xs", "float32", ("T", "N", 3))],
                 [Value(cond, "bool", ()), Value("acc2", "float32", ()), Value("y", "float32", ())],
                 nodes, consts)


def _loop_graph(body: Graph, trips: int | None) -> Graph:
    consts = {} if trips is None else {"trips": np.array(trips, np.int64)}
    return Graph("cumsum", [Value("x", "float32", ("T", "N", 3)), Value("a0", "float32", ("N", 3))],
                 [Value("fin", "float32", ()), Value("ys", "float32", ())],
                 [Node("loop", Op.LOOP, ["trips" if trips else "", "", "a0", "x"], ["fin", "ys"],
                       {"body": body, "num_carried": 1})], consts)


def _numpy_loop(x, a0, trips, stop_at=None):
    """The loop written out by hand (float64): the independent oracle."""
    acc, ys, go, i = a0.astype(np.float64), [], True, 0
    while go and i < trips:
        acc = (acc + x[i]) * 0.5
        ys.append(np.tanh(acc))
        if stop_at is not None:
            go = acc.sum() < stop_at
        i += 1
    return acc, np.stack(ys)


def _inputs(rng, t=7, n=2):
    return rng.standard_normal((t, n, 3)).astype(np.float32), \
        rng.standard_normal((n, 3)).astype(np.float32)


def test_reference_runs_the_trip_count(rng):
    x, a0 = _inputs(rng)
    g = _loop_graph(_cumsum_body(), 5)
    out = reference.run(g, {"x": x, "a0": a0})
    fin, ys = _numpy_loop(x, a0, 5)
    assert out["ys"].shape == (5, 2, 3)
    np.testing.assert_allclose(out["fin"], fin, atol=1e-12)
    np.testing.assert_allclose(out["ys"], ys, atol=1e-12)
    # a constant trip count and a condition handed on unchanged: the number of trips is known
    assert g.value("ys").shape == (5, "N", 3)


def test_condition_handed_on_through_identity_keeps_the_trip_count(rng):
    # a re-rolled cell loop writes its condition output as Identity(condition input)
    b = _cumsum_body()
    body = Graph("body", b.inputs, [Value("c_out", "bool", ())] + b.outputs[1:],
                 b.nodes + [Node("pass", Op.IDENTITY, ["c"], ["c_out"])], b.constants)
    g = _loop_graph(body, 5)
    x, a0 = _inputs(rng)
    np.testing.assert_allclose(reference.run(g, {"x": x, "a0": a0})["ys"],
                               _numpy_loop(x, a0, 5)[1], atol=1e-12)
    assert g.value("ys").shape == (5, "N", 3)


def test_reference_stops_on_the_condition(rng):
    x, a0 = _inputs(rng, t=40)
    x = np.abs(x) + 0.1                       # the sum grows: the condition turns false
    g = _loop_graph(_cumsum_body(stop_at=4.0), 40)
    out = reference.run(g, {"x": x, "a0": a0})
    fin, ys = _numpy_loop(x, a0, 40, stop_at=4.0)
    assert 1 < len(ys) < 40
    np.testing.assert_allclose(out["ys"], ys, atol=1e-12)
    np.testing.assert_allclose(out["fin"], fin, atol=1e-12)
    assert g.value("ys").shape == ("loop:trips", "N", 3)    # the condition decides


def test_runtime_matches_reference_and_describe_says_interpreter(rng, tol):
    from edgeseq.runtime import Model
    x, a0 = _inputs(rng, t=9, n=3)
    g = _loop_graph(_cumsum_body(stop_at=3.0), 9)
    want = reference.run(g, {"x": x, "a0": a0})
    m = Model(g, codegen=True)
    got = m.run({"x": x, "a0": a0})
    for k in want:
        assert got[k].shape == want[k].shape
        assert np.max(np.abs(got[k] - want[k])) <= tol["float32"]
    text = m.describe()
    assert "node 'loop' (Loop)" in text and "interpreter" in text


def test_artifact_round_trip(rng, tmp_path):
    x, a0 = _inputs(rng)
    g = _loop_graph(_cumsum_body(stop_at=2.0), 6)
    want = reference.run(g, {"x": x, "a0": a0})
    path = artifact.save(g, tmp_path / "loop.eseq")
    g2 = artifact.load(path)
    assert g2.node("loop").attrs["body"].constants.keys() == {"half", "limit"}
    got = reference.run(g2, {"x": x, "a0": a0})
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def _raw(g: Graph, tmp_path, edit) -> str:
    g.validate()
    d = json.loads(g.dumps())
    edit(d)
    path = tmp_path / "hostile.eseq"
    artifact.write_raw(path, json.dumps(d), {k: np.asarray(v)
                                             for k, v in g.constants.items()})
    return str(path)


def test_hostile_body_constant_missing_names_node_and_field(tmp_path):
    g = _loop_graph(_cumsum_body(), 3)

    def edit(d):
        d["nodes"][0]["attrs"]["body"]["constants"]["ghost"] = {"dtype": "float32", "shape": [1]}
    with pytest.raises(ArtifactError, match=r"node 'loop' \(Loop\): field 'attrs.body': "
                                            r"constant 'ghost'"):
        artifact.load(_raw(g, tmp_path, edit))


def test_hostile_body_constant_of_another_shape_is_refused(tmp_path):
    g = _loop_graph(_cumsum_body(), 3)

    def edit(d):
        d["nodes"][0]["attrs"]["body"]["constants"]["half"]["shape"] = [4096, 4096]
    with pytest.raises(ArtifactError, match="constant 'half' is stated as"):
        artifact.load(_raw(g, tmp_path, edit))


def test_hostile_body_that_is_no_graph(tmp_path):
    g = _loop_graph(_cumsum_body(), 3)

    def edit(d):
        d["nodes"][0]["attrs"]["body"] = "import os"
    with pytest.raises(ArtifactError, match=r"field 'attrs.body': expected a graph object"):
        artifact.load(_raw(g, tmp_path, edit))


def test_nesting_beyond_the_limit_is_refused(tmp_path):
    """Bodies nested deeper than Limits.loop_depth are refused when read, not recursed into."""
    from edgeseq.limits import LIMITS
    g = _loop_graph(_cumsum_body(), 3)
    g.validate()
    d = json.loads(g.dumps())
    inner = d["nodes"][0]["attrs"]["body"]
    for _ in range(LIMITS.loop_depth + 1):    # wrap the body in identity loops
        inner = {"name": "wrap", "inputs": inner["inputs"], "outputs": inner["outputs"],
                 "constants": {}, "metadata": {},
                 "nodes": [{"name": "inner", "op": "Loop", "inputs": ["", "", "acc", "xs"],
                            "outputs": ["acc2"], "weights": {},
                            "attrs": {"body": inner, "num_carried": 1}}]}
    d["nodes"][0]["attrs"]["body"] = inner
    with pytest.raises(GraphError, match="nest more than"):
        Graph.from_json(d, g.constants)


def test_a_loop_that_never_stops_is_cut_at_the_limit(monkeypatch, rng):
    import edgeseq.loop_op as loop_op
    from edgeseq.limits import Limits
    monkeypatch.setattr(loop_op, "LIMITS", Limits(loop_iterations=50))
    body = Graph("body", [Value("i", "int64", ()), Value("c", "bool", ()),
                          Value("acc", "float32", (2,))],
                 [Value("c", "bool", ()), Value("acc1", "float32", ())],
                 [Node("a", Op.ADD, ["acc", "one"], ["acc1"])], {"one": np.ones(2, np.float32)})
    g = Graph("forever", [Value("a0", "float32", (2,))], [Value("fin", "float32", ())],
              [Node("loop", Op.LOOP, ["", "", "a0"], ["fin"], {"body": body, "num_carried": 1})])
    with pytest.raises(InputError, match=r"node 'loop' \(Loop\): still running after 50"):
        reference.run(g, {"a0": np.zeros(2, np.float32)})


def test_body_inputs_must_match_the_node(rng):
    body = _cumsum_body()
    body.inputs[2] = Value("acc", "float32", ("N", 4))       # carried declared 4 wide
    with pytest.raises(ShapeError, match=r"node 'loop' \(Loop\): input 2 \('a0', carried\)"):
        _loop_graph(body, 3).validate()


def test_carried_value_must_keep_dtype_and_rank():
    body = _cumsum_body()
    body.nodes.append(Node("r", Op.REDUCE_SUM, ["acc2"], ["acc3"], {"axes": (1,),
                                                                  "keepdims": False}))
    body.outputs[1] = Value("acc3", "float32", ())
    with pytest.raises(ShapeError, match="carried value 0: enters as"):
        _loop_graph(body, 3).validate()


def test_streaming_is_refused_naming_the_node():
    from edgeseq.runtime import Model
    m = Model(_loop_graph(_cumsum_body(), 3), warmup=False)
    with pytest.raises(GraphError, match=r"node 'loop' \(Loop\): a general Loop"):
        m.stream()


def test_nan_in_a_body_constant_is_refused(tmp_path):
    g = _loop_graph(_cumsum_body(), 3)
    g.validate()
    bad = np.array(np.nan, np.float32)      # written into the file: the body reads it
    g.constants["half"] = g.node("loop").attrs["body"].constants["half"] = bad

    def edit(d):
        pass
    with pytest.raises(ArtifactError, match=r"node 'm' \(Mul\): tensor 'half' .* NaN"):
        artifact.load(_raw(g, tmp_path, edit))


def test_a_growing_carried_value_is_cut_at_the_memory_limit(monkeypatch):
    """A loop that doubles a carried value each step is stopped before it allocates without
    bound (its memory is not known before it runs)."""
    import edgeseq.loop_op as loop_op
    from edgeseq.limits import Limits
    monkeypatch.setattr(loop_op, "LIMITS", Limits(memory_bytes=1 << 20))
    body = Graph("body", [Value("i", "int64", ()), Value("c", "bool", ()),
                          Value("acc", "float32", ("K",))],
                 [Value("c", "bool", ()), Value("acc1", "float32", ())],
                 [Node("a", Op.CONCAT, ["acc", "acc"], ["acc1"], {"axis": 0})])
    g = Graph("doubling", [Value("a0", "float32", (4,))], [Value("fin", "float32", ())],
              [Node("loop", Op.LOOP, ["", "", "a0"], ["fin"], {"body": body, "num_carried": 1})])
    with pytest.raises(InputError, match=r"node 'loop' \(Loop\): after \d+ iterations .*"
                                         r"Limits.memory_bytes"):
        reference.run(g, {"a0": np.zeros(4, np.float32)})


def test_inspect_counts_the_body_weights_on_the_loop_row():
    from edgeseq.summary import summarize
    g = _loop_graph(_cumsum_body(stop_at=2.0), 4)
    g.validate()
    row = next(f for f in summarize(g)["layers"] if f["node"] == "loop")
    assert row["params"] == 3          # trips, half, limit
