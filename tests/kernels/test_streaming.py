"""Stream.push over any chunking equals one full run; what cannot stream is refused."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from edgeseq import testing
from edgeseq.errors import GraphError, InputError
from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import Op
from edgeseq.runtime import Model

STREAM_TOL = 1e-6
T_LEN = 23

VARIANTS = {
    "lstm": lambda r, bf: testing.lstm_graph(r, 5, 7, batch_first=bf),
    "lstm_peep_cifg": lambda r, bf: testing.lstm_graph(r, 5, 7, peephole=True,
                                                      coupled_gate="input", batch_first=bf),
    "lstm_cifg_forget": lambda r, bf: testing.lstm_graph(r, 5, 7, coupled_gate="forget",
                                                        batch_first=bf),
    "lstmp_ln_clips": lambda r, bf: testing.lstm_graph(
        r, 5, 7, proj_size=4, proj_bias=True, layer_norm=True, cell_clip=0.5, proj_clip=0.4,
        gate_clip=2.0, batch_first=bf),
    "gru_lbr0": lambda r, bf: testing.gru_graph(r, 5, 7, batch_first=bf),
    "gru_lbr1": lambda r, bf: testing.gru_graph(r, 5, 7, linear_before_reset=True,
                                                batch_first=bf),
    "rnn": lambda r, bf: testing.rnn_graph(r, 5, 7, activations=("relu",), batch_first=bf),
}


def _chunks(sizes, total):
    out, start, k = [], 0, 0
    while start < total:
        n = min(sizes[k % len(sizes)], total - start)
        out.append((start, start + n))
        start, k = start + n, k + 1
    return out


def _stream_all(stream, x, t_axis, sizes):
    ys = []
    for a, b in _chunks(sizes, x.shape[t_axis]):
        chunk = x[a:b] if t_axis == 0 else x[:, a:b]
        ys.append(stream.push({"x": chunk}))
    return ys


@pytest.mark.parametrize("n_batch", [1, 3])
@pytest.mark.parametrize("bf", [False, True], ids=["tm", "bf"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_chunked_equals_full_run(variant, bf, n_batch):
    """Chunks mix the lean one-call path (T*N < 4) and the general path."""
    rng = np.random.default_rng(7)
    graph = VARIANTS[variant](rng, bf)
    model = Model(graph, warmup=False)
    shape = (n_batch, T_LEN, 5) if bf else (T_LEN, n_batch, 5)
    x = rng.standard_normal(shape).astype(np.float32)
    full = model.run({"x": x})
    t_axis = 1 if bf else 0
    stream = model.stream()
    for sizes in ([1], [7], [T_LEN], [2, 5, 1, 9]):
        stream.reset()
        outs = _stream_all(stream, x, t_axis, sizes)
        y = np.concatenate([o["y"] for o in outs], axis=t_axis)
        assert np.max(np.abs(y - full["y"])) <= STREAM_TOL, sizes
        for name in full:
            if name != "y":    # final states after the last chunk
                assert np.max(np.abs(outs[-1][name] - full[name])) <= STREAM_TOL, name


def _glue_graph(rng) -> Graph:
    """MatMul + Add + Relu in front of an LSTM, Transpose/Reshape + Gemm-like MatMul +
    Softmax behind it: every node is per time step."""
    c = {"w_in": rng.standard_normal((4, 6)).astype(np.float32),
         "b_in": rng.standard_normal((6,)).astype(np.float32),
         "w_out": rng.standard_normal((5, 3)).astype(np.float32)}
    lstm = testing.lstm_graph(rng, 6, 5, peephole=True)
    c.update(lstm.constants)
    node = lstm.nodes[0]
    nodes = [Node("mm", Op.MATMUL, ["x", "w_in"], ["a"]),
             Node("add", Op.ADD, ["a", "b_in"], ["b"]),
             Node("relu", Op.RELU, ["b"], ["xr"]),
             Node(node.name, Op.LSTM, ["xr"], ["y", "y_h", "y_c"], dict(node.attrs),
                  dict(node.weights)),
             Node("sq", Op.SQUEEZE, ["y"], ["ys"], {"axes": (1,)}),
             Node("head", Op.MATMUL, ["ys", "w_out"], ["logits"]),
             Node("sm", Op.SOFTMAX, ["logits"], ["prob"], {"axis": -1})]
    g = Graph("glue", [Value("x", "float32", ("T", "N", 4))],
              [Value("prob", "float32", ()), Value("y_h", "float32", ())], nodes, c)
    return g.validate()


def test_glue_around_recurrent_streams():
    rng = np.random.default_rng(3)
    model = Model(_glue_graph(rng), warmup=False)
    x = rng.standard_normal((T_LEN, 2, 4)).astype(np.float32)
    full = model.run({"x": x})
    stream = model.stream()
    for sizes in ([1], [7], [T_LEN]):
        stream.reset()
        outs = _stream_all(stream, x, 0, sizes)
        prob = np.concatenate([o["prob"] for o in outs], axis=0)
        assert np.max(np.abs(prob - full["prob"])) <= STREAM_TOL
        assert np.max(np.abs(outs[-1]["y_h"] - full["y_h"])) <= STREAM_TOL


def test_non_finite_chunk_on_the_lean_path_leaves_state_untouched():
    rng = np.random.default_rng(8)
    model = Model(testing.lstm_graph(rng, 3, 4), warmup=False)
    x = rng.standard_normal((6, 1, 3)).astype(np.float32)
    s = model.stream()
    s.push({"x": x[:2]})
    before = s.state
    bad = x[2:3].copy()
    bad[0, 0, 1] = np.nan
    with pytest.raises(InputError, match="input 'x': non-finite"):
        s.push({"x": bad})
    after = s.state
    for k in ("h", "c"):
        assert np.array_equal(before["lstm"][k], after["lstm"][k])
    rest = np.concatenate([s.push({"x": x[t:t + 1]})["y"] for t in range(2, 6)])
    assert np.max(np.abs(rest - model.run({"x": x})["y"][2:])) <= STREAM_TOL


def test_returned_states_are_not_aliased_to_the_carried_state():
    rng = np.random.default_rng(9)
    model = Model(testing.gru_graph(rng, 3, 4), warmup=False)
    s = model.stream()
    x = rng.standard_normal((1, 1, 3)).astype(np.float32)
    first = s.push({"x": x})["y_h"]
    kept = first.copy()
    s.push({"x": x})
    assert np.array_equal(first, kept)


def test_state_get_set_resumes_exactly():
    rng = np.random.default_rng(4)
    model = Model(testing.lstm_graph(rng, 5, 7, proj_size=3), warmup=False)
    x = rng.standard_normal((10, 2, 5)).astype(np.float32)
    full = model.run({"x": x})["y"]
    s1 = model.stream()
    s1.push({"x": x[:4]})
    saved = s1.state
    s2 = model.stream()
    s2.state = saved
    rest = s2.push({"x": x[4:]})["y"]
    assert np.max(np.abs(rest - full[4:])) <= STREAM_TOL
    assert set(saved["lstm"]) == {"h", "c"}
    with pytest.raises(InputError, match="expected"):
        s2.state = {"lstm": {"h": np.zeros((1, 2, 9))}}
    with pytest.raises(InputError, match="unknown recurrent node"):
        s2.state = {"nope": {}}


def test_batch_change_mid_stream_is_refused():
    rng = np.random.default_rng(5)
    model = Model(testing.gru_graph(rng, 3, 4), warmup=False)
    s = model.stream()
    s.push({"x": np.zeros((2, 2, 3), np.float32)})
    with pytest.raises(InputError, match="batch 2.*batch 3"):
        s.push({"x": np.zeros((2, 3, 3), np.float32)})
    s.reset()
    s.push({"x": np.zeros((2, 3, 3), np.float32)})


def test_explicit_initial_state_overrides_carried_state():
    rng = np.random.default_rng(6)
    model = Model(testing.rnn_graph(rng, 3, 4, initial_state=True), warmup=False)
    x = rng.standard_normal((6, 1, 3)).astype(np.float32)
    h0 = rng.standard_normal((1, 1, 4)).astype(np.float32)
    want = model.run({"x": x, "initial_h": h0})["y"]
    s = model.stream()
    s.push({"x": x[:2]})                         # some unrelated history
    got = s.push({"x": x, "initial_h": h0})["y"]  # explicit state wins
    assert np.max(np.abs(got - want)) <= STREAM_TOL


@pytest.mark.parametrize("make,match", [
    (lambda r: testing.lstm_graph(r, 3, 4, direction="bidirectional"), "only forward streams"),
    (lambda r: testing.gru_graph(r, 3, 4, direction="reverse"), "only forward streams"),
    (lambda r: testing.rnn_graph(r, 3, 4, seq_lens=True), "sequence_lens"),
])
def test_non_streamable_recurrent_is_refused(make, match):
    model = Model(make(np.random.default_rng(0)), warmup=False)
    with pytest.raises(GraphError, match=match):
        model.stream()


def test_conv_over_time_is_refused_but_per_frame_conv_streams():
    rng = np.random.default_rng(1)
    w3 = rng.standard_normal((4, 2, 3)).astype(np.float32)
    g = Graph("conv", [Value("x", "float32", ("N", 2, "T"))], [Value("y", "float32", ())],
              [Node("conv", Op.CONV1D, ["x", "w"], ["y"], {"pads": (1, 1)})], {"w": w3})
    with pytest.raises(GraphError, match="cannot stream: node 'conv'.*spans several time steps"):
        Model(g.validate(), warmup=False).stream(time_axes={"x": 2})
    # the same conv applied per frame (time along the batch axis, as silero-vad does) streams
    model = Model(g, warmup=False)
    x = rng.standard_normal((9, 2, 5)).astype(np.float32)
    full = model.run({"x": x})["y"]
    s = model.stream(time_axes={"x": 0})
    got = np.concatenate([s.push({"x": x[a:a + 2]})["y"] for a in range(0, 9, 2)])
    assert np.max(np.abs(got - full)) <= STREAM_TOL


def test_one_model_many_threads_one_stream_each():
    rng = np.random.default_rng(2)
    model = Model(testing.lstm_graph(rng, 6, 16, peephole=True), warmup=True)
    xs = [rng.standard_normal((40, 1, 6)).astype(np.float32) for _ in range(4)]
    want = [model.run({"x": x})["y"] for x in xs]
    got: dict[int, np.ndarray] = {}
    errors: list = []

    def work(k):
        try:
            s = model.stream()
            for _ in range(3):
                s.reset()
                ys = [s.push({"x": xs[k][t:t + 1]})["y"] for t in range(40)]
            got[k] = np.concatenate(ys)
            assert np.max(np.abs(model.run({"x": xs[k]})["y"] - want[k])) <= STREAM_TOL
        except Exception as e:  # surfaced below with the thread's index
            errors.append((k, e))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for k in range(4):
        assert np.max(np.abs(got[k] - want[k])) <= STREAM_TOL


def _final_value_graph(rng, pick: str) -> Graph:
    """An LSTM whose outputs have no time axis: a Dense head on the last step (picked by a
    Slice or a Gather, as return_sequences=False exports write it) and on the final state."""
    c = {"w_out": rng.standard_normal((5, 3)).astype(np.float32),
         "last": np.array(-1, np.int64)}
    lstm = testing.lstm_graph(rng, 4, 5)
    c.update(lstm.constants)
    node = lstm.nodes[0]
    take = (Node("last_step", Op.SLICE, ["ys"], ["yl3"],
                 {"starts": (-1,), "ends": (2 ** 63 - 1,), "axes": (0,), "steps": (1,)})
            if pick == "slice" else
            Node("last_step", Op.GATHER, ["ys", "last"], ["yl"], {"axis": 0}))
    nodes = [Node(node.name, Op.LSTM, ["x"], ["y", "y_h", "y_c"], dict(node.attrs),
                  dict(node.weights)),
             Node("sq", Op.SQUEEZE, ["y"], ["ys"], {"axes": (1,)}), take]
    if pick == "slice":
        nodes.append(Node("sq_t", Op.SQUEEZE, ["yl3"], ["yl"], {"axes": (0,)}))
    nodes += [Node("head", Op.MATMUL, ["yl", "w_out"], ["logits"]),
              Node("sm", Op.SOFTMAX, ["logits"], ["prob"], {"axis": -1}),
              Node("h_sq", Op.SQUEEZE, ["y_h"], ["h"], {"axes": (0,)}),
              Node("h_head", Op.MATMUL, ["h", "w_out"], ["h_logits"])]
    g = Graph("final", [Value("x", "float32", ("T", "N", 4))],
              [Value("prob", "float32", ()), Value("h_logits", "float32", ())], nodes, c)
    return g.validate()


@pytest.mark.parametrize("pick", ["slice", "gather"])
def test_outputs_of_final_values_stream(pick):
    """return_sequences=False / return_state: after every push the outputs are those of the
    sequence so far; after the last push, the whole run's (float64 reference)."""
    from edgeseq import reference
    rng = np.random.default_rng(5)
    g = _final_value_graph(rng, pick)
    x = rng.standard_normal((T_LEN, 2, 4)).astype(np.float32)
    stream = Model(g, warmup=False).stream()
    for sizes in ([1], [7], [2, 5, 1, 9]):
        stream.reset()
        seen = 0
        for a, b in _chunks(sizes, T_LEN):
            out = stream.push({"x": x[a:b]})
            seen = b
            if seen in (3, T_LEN):
                want = reference.run(g, {"x": x[:seen]})
                for name in ("prob", "h_logits"):
                    assert out[name].shape == want[name].shape
                    assert np.max(np.abs(out[name] - want[name])) <= 1e-5, (sizes, seen, name)


@pytest.mark.parametrize("start,end,match", [(0, 1, "slices along time"),
                                             (-2, 2 ** 63 - 1, "slices along time")])
def test_slices_of_other_steps_than_the_last_are_refused(start, end, match):
    rng = np.random.default_rng(5)
    g = _final_value_graph(rng, "slice")
    g.nodes[2].attrs.update(starts=(start,), ends=(end,))
    with pytest.raises(GraphError, match=f"cannot stream: node 'last_step'.*{match}"):
        Model(g.validate(), warmup=False).stream()


def test_a_final_value_mixed_into_a_time_value_is_refused():
    """y + y_h[-1] at every step: per chunk that would add the chunk's final state."""
    rng = np.random.default_rng(5)
    g = _final_value_graph(rng, "gather")
    g.nodes.append(Node("mix", Op.ADD, ["ys", "h"], ["mixed"]))
    g.outputs.append(Value("mixed", "float32", ()))
    with pytest.raises(GraphError, match="cannot stream: node 'mix'.*per-chunk value"):
        Model(g.validate(), warmup=False).stream()


def _keras_initial_state_graph(rng) -> Graph:
    """Keras' initial_state: h0, c0 given as [N, H] inputs, unsqueezed to [1, N, H]."""
    lstm = testing.lstm_graph(rng, 4, 5)
    node = lstm.nodes[0]
    nodes = [Node("h0_u", Op.UNSQUEEZE, ["h0"], ["h0_3"], {"axes": (0,)}),
             Node("c0_u", Op.UNSQUEEZE, ["c0"], ["c0_3"], {"axes": (0,)}),
             Node(node.name, Op.LSTM, ["x", "", "h0_3", "c0_3"], ["y", "y_h", "y_c"],
                  dict(node.attrs), dict(node.weights))]
    g = Graph("init", [Value("x", "float32", ("T", "N", 4)), Value("h0", "float32", ("N", 5)),
                       Value("c0", "float32", ("N", 5))],
              [Value("y", "float32", ())], nodes, dict(lstm.constants))
    return g.validate()


@pytest.mark.parametrize("codegen", [False, True], ids=["interp", "codegen"])
def test_initial_state_inputs_behind_glue_stream(codegen):
    """Given with the first chunk, the state inputs start the stream; later chunks leave them
    out (given again, they restart it: explicit wins); left out entirely, zeros."""
    from edgeseq import reference
    rng = np.random.default_rng(6)
    g = _keras_initial_state_graph(rng)
    x = rng.standard_normal((T_LEN, 2, 4)).astype(np.float32)
    h0, c0 = (rng.standard_normal((2, 5)).astype(np.float32) for _ in range(2))
    model = Model(g, warmup=False, codegen=codegen)
    assert {s.name for s in model.inputs if s.optional} == {"h0", "c0"}
    stream = model.stream()
    for sizes in ([1], [7], [2, 5, 1, 9]):
        stream.reset()
        ys = [stream.push({"x": x[a:b], **({"h0": h0, "c0": c0} if a == 0 else {})})["y"]
              for a, b in _chunks(sizes, T_LEN)]
        want = reference.run(g, {"x": x, "h0": h0, "c0": c0})["y"]
        assert np.max(np.abs(np.concatenate(ys) - want)) <= 1e-5, sizes
    restart = stream.push({"x": x[:4], "h0": c0, "c0": h0})["y"]
    want = reference.run(g, {"x": x[:4], "h0": c0, "c0": h0})["y"]
    assert np.max(np.abs(restart - want)) <= 1e-5
    zeros = np.zeros_like(h0)
    with pytest.warns(UserWarning, match="'h0' .*not given: starting from zeros"):
        got = model.run({"x": x})["y"]
    want = reference.run(g, {"x": x, "h0": zeros, "c0": zeros})["y"]
    assert np.max(np.abs(got - want)) <= 1e-5
    stream.reset()
    got = np.concatenate([stream.push({"x": x[a:b]})["y"] for a, b in _chunks([5], T_LEN)])
    assert np.max(np.abs(got - want)) <= 1e-5


def _conv_front_graph(rng, pads, dilation=1, stride=1) -> Graph:
    """Keras-style Conv1D front end: x [N, T, 3] -> NCW Conv1d (kernel 3) + Relu -> LSTM."""
    lstm = testing.lstm_graph(rng, 4, 5, batch_first=True)
    node = lstm.nodes[0]
    c = dict(lstm.constants)
    c.update(w=rng.standard_normal((4, 3, 3)).astype(np.float32),
             b=rng.standard_normal((4,)).astype(np.float32))
    nodes = [Node("to_ncw", Op.TRANSPOSE, ["x"], ["xc"], {"perm": (0, 2, 1)}),
             Node("conv", Op.CONV1D, ["xc", "w", "b"], ["yc"],
                  {"pads": pads, "dilation": dilation, "stride": stride}),
             Node("relu", Op.RELU, ["yc"], ["yr"]),
             Node("to_ntc", Op.TRANSPOSE, ["yr"], ["f"], {"perm": (0, 2, 1)}),
             Node(node.name, Op.LSTM, ["f"], ["y", "y_h", "y_c"], dict(node.attrs),
                  dict(node.weights))]
    g = Graph("conv_front", [Value("x", "float32", ("N", "T", 3))],
              [Value("y", "float32", ()), Value("y_h", "float32", ())], nodes, c)
    return g.validate()


@pytest.mark.parametrize("pads,dilation", [((0, 0), 1), ((2, 0), 1), ((0, 0), 2), ((1, 0), 2)],
                         ids=["valid", "causal", "valid_dilated", "part_left_dilated"])
def test_conv_over_time_streams_with_a_carried_window(pads, dilation):
    """Chunks shorter than the kernel yield no frames until the window fills; the
    concatenated outputs equal the whole run (float64 reference)."""
    from edgeseq import reference
    rng = np.random.default_rng(8)
    g = _conv_front_graph(rng, pads, dilation)
    x = rng.standard_normal((2, T_LEN, 3)).astype(np.float32)
    want = reference.run(g, {"x": x})
    stream = Model(g, warmup=False).stream()
    for sizes in ([1], [2, 1, 7], [T_LEN]):
        stream.reset()
        outs = [stream.push({"x": x[:, a:b]}) for a, b in _chunks(sizes, T_LEN)]
        y = np.concatenate([o["y"] for o in outs], axis=1)
        assert y.shape == want["y"].shape, sizes
        assert np.max(np.abs(y - want["y"])) <= 1e-5, sizes
        assert np.max(np.abs(outs[-1]["y_h"] - want["y_h"])) <= 1e-5, sizes
    # the window is part of the state: saved and restored mid-sequence, it resumes exactly
    stream.reset()
    first = stream.push({"x": x[:, :5]})["y"]
    saved = stream.state
    assert saved["conv"]["win"].shape == (2, 3, 2 * dilation)
    rest = stream.push({"x": x[:, 5:]})["y"]
    again = Model(g, warmup=False).stream()
    again.state = saved
    assert np.array_equal(again.push({"x": x[:, 5:]})["y"], rest)
    assert np.max(np.abs(np.concatenate([first, rest], axis=1) - want["y"])) <= 1e-5
    with pytest.raises(InputError, match="stream state of 'conv'.*win"):
        again.state = {"conv": {"win": np.zeros((2, 7, 2), np.float32)}}


@pytest.mark.parametrize("pads,stride,match", [((1, 1), 1, "right padding 1 needs future"),
                                               ((0, 0), 2, "stride 2 along time")])
def test_conv_over_time_that_needs_the_future_or_a_phase_is_refused(pads, stride, match):
    g = _conv_front_graph(np.random.default_rng(8), pads, stride=stride)
    with pytest.raises(GraphError, match=f"cannot stream: node 'conv'.*{match}"):
        Model(g, warmup=False).stream()


def test_delta_stream_refuses_conv_windows():
    g = _conv_front_graph(np.random.default_rng(8), (0, 0))
    with pytest.raises(GraphError, match="delta stream does not carry.*conv"):
        Model(g, warmup=False).stream(delta=0.01)
