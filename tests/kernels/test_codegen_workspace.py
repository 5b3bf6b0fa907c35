"""Buffers of the generated whole-graph function are planned once: intermediate arrays come
from a workspace the caller owns (a Stream, or the Model per thread), so a call in steady
state allocates no more than a graph without intermediates; results never alias the
workspace the next call reuses."""
from __future__ import annotations

import numpy as np
import pytest
from numba.core.runtime import _nrt_python, rtsys

from edgeseq import reference, testing
from edgeseq.errors import InputError
from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import Op
from edgeseq.runtime import Model

R = np.random.default_rng(5)


def _f(*shape):
    return R.standard_normal(shape).astype(np.float32)


def _relu_graph() -> Graph:
    return Graph("one", [Value("x", "float32", (1, 4, "T"))], [Value("y", "float32", ())],
                 [Node("r", Op.RELU, ["x"], ["y"], {})]).validate()


def _glue_graph() -> Graph:
    """The same inputs and outputs as _relu_graph, with eleven glue nodes in between."""
    nodes = [Node("pad", Op.PAD, ["x"], ["p"], {"pads": (0, 0, 1, 0, 0, 2), "mode": "reflect"}),
             Node("conv", Op.CONV1D, ["p", "cw", "cb"], ["c"], {"stride": 2}),
             Node("relu", Op.RELU, ["c"], ["r"], {}),
             Node("sl", Op.SLICE, ["r"], ["s"], {"starts": (1,), "ends": (6,), "axes": (1,),
                                                 "steps": (1,)}),
             Node("tr", Op.TRANSPOSE, ["s"], ["t"], {"perm": (0, 2, 1)}),
             Node("mm", Op.MATMUL, ["t", "w"], ["m"], {}),
             Node("sp", Op.SPLIT, ["m"], ["a", "b"], {"axis": 2, "split": (2, 3)}),
             Node("cat", Op.CONCAT, ["b", "a"], ["k"], {"axis": 2}),
             Node("g", Op.GATHER, ["k", "idx"], ["q"], {"axis": 2}),
             Node("sm", Op.SOFTMAX, ["q"], ["o"], {"axis": -1}),
             Node("mean", Op.REDUCE_MEAN, ["o"], ["y"], {"axes": (2,), "keepdims": True})]
    consts = {"cw": _f(6, 4, 3), "cb": _f(6), "w": _f(5, 5),
              "idx": np.array([4, 0, 2, -1], np.int64)}
    return Graph("glue", [Value("x", "float32", (1, 4, "T"))], [Value("y", "float32", ())],
                 nodes, consts).validate()


@pytest.fixture
def nrt_stats():
    _nrt_python.memsys_enable_stats()
    try:
        yield lambda: rtsys.get_allocation_stats().alloc
    finally:
        _nrt_python.memsys_disable_stats()


def _allocs_per_call(count, call, n=4) -> list[int]:
    call()                      # plans the workspace
    got = []
    for _ in range(n):
        a = count()
        call()
        got.append(count() - a)
    return got


def test_steady_state_calls_allocate_nothing_for_intermediates(nrt_stats, tol):
    x = _f(1, 4, 9)
    one, glue = Model(_relu_graph(), codegen=True), Model(_glue_graph(), codegen=True)
    assert one.source() is not None and glue.source() is not None, glue.describe()
    base = _allocs_per_call(nrt_stats, lambda: one.run({"x": x}))
    # eleven nodes, ~20 arrays before workspaces; now the same count as one Relu
    # (the arguments' NRT wrappers and the copied-out result)
    assert _allocs_per_call(nrt_stats, lambda: glue.run({"x": x})) == base
    s1, s2 = one.stream(), glue.stream()
    base = _allocs_per_call(nrt_stats, lambda: s1.push({"x": x[:, :, :3]}))
    assert _allocs_per_call(nrt_stats, lambda: s2.push({"x": x[:, :, :3]})) == base
    want = reference.run(_glue_graph(), {"x": x})["y"]
    assert np.max(np.abs(glue.run({"x": x})["y"] - want)) <= tol["float32"]


def _recurrent_graph() -> Graph:
    """Conv1d + Relu -> Transpose -> LSTM -> Squeeze -> MatMul head -> Softmax (the structure
    of test_codegen_vs_reference's streaming tagger, so both share one compiled function)."""
    lstm = testing.lstm_graph(R, 6, 10)
    w = dict(lstm.constants)
    w.update({"cw": _f(6, 4, 1), "cb": _f(6), "hwt": _f(10, 3)})
    nodes = [Node("conv", Op.CONV1D, ["x", "cw", "cb"], ["c"], {}),
             Node("relu", Op.RELU, ["c"], ["r"], {}),
             Node("tr", Op.TRANSPOSE, ["r"], ["rt"], {"perm": (2, 0, 1)}),
             Node("lstm", Op.LSTM, ["rt"], ["y", "", ""], dict(lstm.nodes[0].attrs),
                  dict(lstm.nodes[0].weights)),
             Node("sq", Op.SQUEEZE, ["y"], ["ys"], {"axes": (1,)}),
             Node("head", Op.MATMUL, ["ys", "hwt"], ["z"], {}),
             Node("sm", Op.SOFTMAX, ["z"], ["p"], {"axis": -1})]
    return Graph("front", [Value("x", "float32", ("N", 4, "T"))], [Value("p", "float32", ())],
                 nodes, w).validate()


# NRT allocations of an LSTM node per call beyond its two state arguments' wrappers: the two
# initial states (G.state3), the input projection (P.project_panels) and the one-pass
# kernel's gate buffer; its lengths, output and the glue around it come from the workspace
# (before: 4 more, lengths, output and two index arrays)
LSTM_ALLOCATIONS = 4


def test_a_recurrent_node_allocates_only_its_states_and_kernel_buffers(nrt_stats, tol):
    x = _f(1, 4, 9)
    one, rec = Model(_relu_graph(), codegen=True), Model(_recurrent_graph(), codegen=True)
    assert rec.source() is not None, rec.describe()
    base = _allocs_per_call(nrt_stats, lambda: one.run({"x": x}))
    got = _allocs_per_call(nrt_stats, lambda: rec.run({"x": x}))
    # the generated function's two extra arguments (carried h and c) have NRT wrappers too
    assert got == [b + 2 + LSTM_ALLOCATIONS for b in base]
    s1, s2 = one.stream(), rec.stream()
    base = _allocs_per_call(nrt_stats, lambda: s1.push({"x": x[:, :, :3]}))
    got = _allocs_per_call(nrt_stats, lambda: s2.push({"x": x[:, :, :3]}))
    assert got == [b + 2 + LSTM_ALLOCATIONS for b in base]
    want = reference.run(rec.graph, {"x": x})["p"]
    assert np.max(np.abs(rec.run({"x": x})["p"] - want)) <= tol["float32"]


def test_results_do_not_alias_the_reused_workspace(tol):
    g = _glue_graph()
    m = Model(g, codegen=True)
    a, b = _f(1, 4, 9), _f(1, 4, 9)
    first = m.run({"x": a})["y"]
    kept = first.copy()
    m.run({"x": b})
    m.run({"x": _f(1, 4, 30)})          # longer: the workspace grows, then shorter again
    again = m.run({"x": a})["y"]
    assert np.array_equal(first, kept)
    assert np.array_equal(again, kept)
    assert np.max(np.abs(kept - reference.run(g, {"x": a})["y"])) <= tol["float32"]
    s = m.stream()
    p = s.push({"x": a[:, :, :5]})["y"]
    kept = p.copy()
    s.push({"x": b[:, :, :5]})
    assert np.array_equal(p, kept)


def test_threads_sharing_a_model_get_their_own_workspace():
    """Model.run from two threads at once (the generated function releases the GIL): each
    thread's calls use its own arena, so results stay those of a lone call."""
    import threading
    m = Model(_glue_graph(), codegen=True)
    xs = [_f(1, 4, 40) for _ in range(2)]
    want = [m.run({"x": x})["y"] for x in xs]
    bad = []

    def work(k):
        for _ in range(300):
            if not np.array_equal(m.run({"x": xs[k]})["y"], want[k]):
                bad.append(k)
                return
    ts = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad


@pytest.mark.parametrize("codegen", [True, False])
def test_a_remembered_input_pattern_still_checks_values(codegen):
    """Calls whose input names, shapes and dtypes passed the checks before skip the per-shape
    checks (Model._known_call), never the values: NaN/inf anywhere is still refused."""
    m = Model(_relu_graph(), codegen=codegen)
    x = _f(1, 4, 9)
    want = np.maximum(x, 0)
    assert np.array_equal(m.run({"x": x})["y"], want)
    assert np.array_equal(m.run({"x": x})["y"], want)     # the remembered pattern
    s = m.stream()
    s.push({"x": x[:, :, :3].copy()})
    for bad in (np.nan, np.inf, -np.inf):
        for at in ((0, 0, 0), (0, 3, 8), (0, 2, 5)):
            y = x.copy()
            y[at] = bad
            with pytest.raises(InputError, match="non-finite"):
                m.run({"x": y})
            with pytest.raises(InputError, match="non-finite"):
                k = at[2] // 3 * 3
                s.push({"x": y[:, :, k:k + 3].copy()})
    with pytest.raises(InputError, match="unknown input"):
        m.run({"x": x, "z": x})
    with pytest.raises(InputError, match="expected"):
        m.run({"x": x[0]})
    with pytest.warns(UserWarning, match="float64"):
        assert np.array_equal(m.run({"x": x.astype(np.float64)})["y"], want)
    assert np.array_equal(s.push({"x": x[:, :, 3:6].copy()})["y"], want[:, :, 3:6])
