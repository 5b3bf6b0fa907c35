"""A general Loop that scans time streams: its carried values are stream state, the trip count
is the chunk length, and pushing chunks equals the whole run (runtime/loop_stream.py).

The Keras loops tf2onnx writes (tests/fixtures/real_exports, see test_real_exports.py) run
as general Loop nodes when the cell patterns are disabled; streamed in chunks of 1, 2 and 3
steps they equal the whole run and Keras' outputs stored beside the file. Loops that are no
scan over time (a decoder's trip count, a data-dependent stop, attention over the whole
sequence, a position computed from the counter) are refused naming the node and the reason.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeseq.errors import GraphError, InputError
from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import Op
from edgeseq.runtime import Model
from edgeseq.runtime.streaming import time_axes

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "real_exports"
TOL = 1e-5


@pytest.fixture
def no_cells(monkeypatch):
    from edgeseq.converters import loops
    monkeypatch.setattr(loops, "CELLS", {})


@pytest.mark.parametrize("name", ["k3_lstm_dense.onnx13.onnx", "k2_masking_lstm.onnx13.onnx"])
def test_keras_loop_streams_as_a_general_loop(no_cells, name):
    pytest.importorskip("onnx")
    from edgeseq.converters.onnx import convert
    graph = convert(FIXTURES / name)
    loop = next(n for n in graph.nodes if n.op is Op.LOOP)
    assert not any(n.op in (Op.LSTM, Op.GRU, Op.RNN) for n in graph.nodes)
    ref = np.load(FIXTURES / (name.split(".")[0] + ".npz"))
    x, keras_y = ref["x"], ref["y0"]
    m = Model(graph)
    x_name, y_name = graph.inputs[0].name, graph.outputs[0].name
    whole = m.run({x_name: x})[y_name]
    assert np.max(np.abs(whole - keras_y)) <= TOL
    for size in (1, 2, 3):
        s = m.stream()
        assert s.axes[x_name] == 1 and s.axes[y_name] == 1
        parts = [s.push({x_name: x[:, t:t + size]})[y_name] for t in range(0, x.shape[1], size)]
        got = np.concatenate(parts, axis=1)
        assert np.max(np.abs(got - whole)) <= 1e-6
        assert np.max(np.abs(got - keras_y)) <= TOL
        assert sorted(s.state[loop.name]) and all(k.startswith("carried")
                                                  for k in s.state[loop.name])
    # the carried state is the stream's: restored, the second half equals the whole run's
    s = m.stream()
    s.push({x_name: x[:, :3]})
    saved = s.state
    s.reset()
    s.state = saved
    tail = s.push({x_name: x[:, 3:]})[y_name]
    assert np.max(np.abs(tail - whole[:, 3:])) <= 1e-6
    s.reset()
    with pytest.raises(InputError, match="at most 6 steps a push"):
        s.push({x_name: np.concatenate([x, x], axis=1)})


# ---- hand-built loops: what is no scan over time is refused -------------------------------------
def _loop_graph(body_nodes, consts, trips=7, t=7, cond_out="c", cond_in="", extra_ins=()):
    """acc <- body(acc, x[i]); y_i = acc: x [T, N, 3] read through the captured input."""
    body = Graph("body", [Value("i", "int64", ()), Value("c", "bool", ()),
                          Value("acc", "float32", (2, 3)), Value("xs", "float32", (t, 2, 3)),
                          *extra_ins],
                 [Value(cond_out, "bool", ()), Value("acc2", "float32", ()),
                  Value("acc2", "float32", ())], body_nodes, consts)
    g_consts = {"a0": np.zeros((2, 3), np.float32)}
    if trips is not None:
        g_consts["trips"] = np.array(trips, np.int64)
    outer = ["trips" if trips is not None else "", cond_in, "a0", "x"]
    outer += [v.name for v in extra_ins]
    return Graph("g", [Value("x", "float32", (t, 2, 3))] + list(extra_ins),
                 [Value("ys", "float32", ())],
                 [Node("loop", Op.LOOP, outer, ["fin", "ys"], {"body": body, "num_carried": 1})],
                 g_consts).validate()


def _step(index="i"):
    return [Node("g", Op.GATHER, ["xs", index], ["xt"], {"axis": 0}),
            Node("a", Op.ADD, ["acc", "xt"], ["s"]),
            Node("t", Op.TANH, ["s"], ["acc2"])]


def test_a_hand_built_scan_streams_equal_to_the_whole_run(rng):
    g = _loop_graph(_step(), {})
    x = rng.standard_normal((7, 2, 3)).astype(np.float32)
    m = Model(g, warmup=False)
    whole = m.run({"x": x})["ys"]
    s = m.stream()
    got = np.concatenate([s.push({"x": x[k:k + 3]})["ys"] for k in range(0, 7, 3)])
    assert np.max(np.abs(got - whole)) <= 1e-6
    acc, want = np.zeros((2, 3)), []      # the loop written out by hand
    for step in x.astype(np.float64):
        acc = np.tanh(acc + step)
        want.append(acc)
    assert np.max(np.abs(whole - np.stack(want))) <= 1e-5


@pytest.mark.parametrize("case, reason", [
    ("max_length", r"runs 3 iteration\(s\) but its sequence has 7 steps"),
    ("data_stop", "its condition depends on the data"),
    ("attention", "reads the sequence 'x' other than one step"),
    ("position", "computes with the iteration count"),
    ("reversed", "at iteration 0 it reads step"),
])
def test_loops_that_are_no_scan_over_time_are_refused(case, reason):
    nodes, consts, kw = _step(), {}, {}
    if case == "max_length":                      # a decoder's maximum length
        kw["trips"] = 3
    elif case == "data_stop":                     # stops when the state says so
        nodes += [Node("r", Op.REDUCE_SUM, ["acc2"], ["tot"], {"axes": (0, 1),
                                                               "keepdims": False}),
                  Node("l", Op.LESS, ["tot", "lim"], ["go"])]
        consts["lim"] = np.array(3.0, np.float32)
        kw["cond_out"] = "go"
    elif case == "attention":                     # reads every step each iteration
        nodes = [Node("r", Op.REDUCE_SUM, ["xs"], ["xt"], {"axes": (0,), "keepdims": False}),
                 Node("a", Op.ADD, ["acc", "xt"], ["s"]), Node("t", Op.TANH, ["s"], ["acc2"])]
    elif case == "position":                      # a position added to the state
        nodes += [Node("f", Op.CAST, ["i"], ["fi"], {"to": "float32"}),
                  Node("p", Op.ADD, ["s", "fi"], ["sp"])]
        nodes[2] = Node("t", Op.TANH, ["s"], ["acc1"])
        nodes.append(Node("q", Op.MUL, ["acc1", "sp"], ["acc2"]))
    elif case == "reversed":                      # go_backwards: step T-1-i
        nodes = [Node("b", Op.SUB, ["last", "i"], ["j"])] + _step("j")
        consts["last"] = np.array(6, np.int64)
    g = _loop_graph(nodes, consts, **kw)
    with pytest.raises(GraphError, match=rf"cannot stream: node 'loop' \(Loop\): .*{reason}"):
        time_axes(g, {"x": 0})


def test_initial_states_given_as_inputs_stream_and_explicit_wins(no_cells):
    """Keras 3 `initial_state` via tf2onnx as a general Loop: h0 and c0 only start the
    carried state (optional inputs, no time axis); given in the first push the chunks equal
    the whole run and Keras; given again later they restart the state (explicit wins); left
    out of a run, the state starts from zeros."""
    pytest.importorskip("onnx")
    from edgeseq.converters.onnx import convert
    graph = convert(FIXTURES / "k3_initial_state.onnx13.onnx")
    assert any(n.op is Op.LOOP for n in graph.nodes)
    ref = np.load(FIXTURES / "k3_initial_state.npz")
    feeds = {"x": ref["x"], "h0": ref["h0"], "c0": ref["c0"]}
    m = Model(graph)
    assert [s.optional for s in m.inputs] == [False, True, True]
    y = graph.outputs[0].name
    whole = m.run(feeds)[y]
    assert np.max(np.abs(whole - ref["y0"])) <= TOL
    s = m.stream()
    first = s.push(feeds | {"x": ref["x"][:, :2]})[y]
    rest = [s.push({"x": ref["x"][:, t:t + 2]})[y] for t in (2, 4)]
    assert np.max(np.abs(np.concatenate([first] + rest, axis=1) - whole)) <= 1e-6
    fresh = m.stream().push(feeds | {"x": ref["x"][:, 3:]})[y]
    s.reset()
    s.push(feeds | {"x": ref["x"][:, :3]})
    again = s.push(feeds | {"x": ref["x"][:, 3:]})[y]
    assert np.max(np.abs(again - fresh)) <= 1e-6
    zeros = {"h0": np.zeros_like(ref["h0"]), "c0": np.zeros_like(ref["c0"])}
    with pytest.warns(UserWarning, match="not given"):
        left_out = m.run({"x": ref["x"]})[y]
    assert np.max(np.abs(left_out - m.run({"x": ref["x"]} | zeros)[y])) <= 1e-6
