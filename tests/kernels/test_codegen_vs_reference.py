"""The whole-graph compiler (runtime/codegen) vs the float64 reference: glue ops and fused
elementwise chains, recurrent nodes with odd sizes, lengths, batch > 1, batch_first,
bidirectional and initial states, streaming in any chunking, silero-vad and the shipped
classifier; plus the fallback to the interpreter and errors on bad inputs."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edgeseq import reference, testing
from edgeseq.errors import InputError
from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import Op
from edgeseq.runtime import Model

R = np.random.default_rng(12)


def _f(*shape, scale=1.0):
    return (R.standard_normal(shape) * scale).astype(np.float32)


def _model(g: Graph) -> Model:
    m = Model(g, codegen=True)
    assert m.source() is not None, m.describe()
    return m


def _close(got: dict, want: dict, tol: float) -> None:
    for k, w in want.items():
        assert got[k].shape == w.shape, k
        scale = max(1.0, float(np.max(np.abs(w)))) if w.size else 1.0
        err = float(np.max(np.abs(got[k] - w))) if w.size else 0.0
        assert err <= tol * scale, (k, err)


def _one(op, arrays, attrs, out_dtype="float32"):
    inputs, consts, names = [], {}, []
    for key, a in arrays.items():
        name = key[2:] if key.startswith("c:") else key
        names.append(name)
        if key.startswith("c:"):
            consts[name] = a
        else:
            inputs.append(Value(name, str(a.dtype), a.shape))
    return Graph(op.value, inputs, [Value("y", out_dtype, ())],
                 [Node("n", op, names, ["y"], dict(attrs))], consts).validate()


# one graph per glue op, odd shapes (op, arrays ("c:" = constant), attrs)
GLUE = {
    "matmul": (Op.MATMUL, {"a": _f(3, 2, 5), "c:b": _f(5, 7)}, {}),
    "gemm": (Op.GEMM, {"a": _f(4, 3), "c:b": _f(5, 3), "c:c": _f(5)},
             {"trans_b": True, "alpha": 0.5, "beta": 2.0}),
    "gemm_ta": (Op.GEMM, {"a": _f(3, 6), "c:b": _f(3, 67)}, {"trans_a": True}),
    "conv": (Op.CONV1D, {"x": _f(2, 3, 13), "c:w": _f(5, 3, 4), "c:b": _f(5)},
             {"stride": 2, "pads": (2, 1), "dilation": 2}),
    "softmax": (Op.SOFTMAX, {"x": _f(2, 3, 5)}, {"axis": 1}),
    "logsoftmax": (Op.LOG_SOFTMAX, {"x": _f(3, 7)}, {"axis": -1}),
    "mean": (Op.REDUCE_MEAN, {"x": _f(2, 3, 4)}, {"axes": (1, 2), "keepdims": False}),
    "sum": (Op.REDUCE_SUM, {"x": _f(2, 3, 4)}, {"axes": (0,), "keepdims": True}),
    "concat": (Op.CONCAT, {"a": _f(2, 3, 2), "b": _f(2, 1, 2)}, {"axis": 1}),
    "slice": (Op.SLICE, {"x": _f(5, 6, 3)},
              {"starts": (-1, 1), "ends": (-2**62, 5), "axes": (0, 1), "steps": (-2, 2)}),
    "transpose": (Op.TRANSPOSE, {"x": _f(2, 3, 4)}, {"perm": (2, 0, 1)}),
    # one axis of a rank-3 value: the slice3_ws kernel (other slices are emitted inline)
    "slice_one_axis": (Op.SLICE, {"x": _f(4, 7, 3)},
                       {"starts": (6,), "ends": (0,), "axes": (-2,), "steps": (-2,)}),
    "reshape": (Op.RESHAPE, {"x": _f(2, 3, 4)}, {"shape": (0, -1)}),
    "pad_const": (Op.PAD, {"x": _f(2, 3)}, {"pads": (1, -1, 0, 2), "value": 0.5}),
    "pad_reflect": (Op.PAD, {"x": _f(2, 4)}, {"pads": (0, 3, 0, 2), "mode": "reflect"}),
    "pad_edge": (Op.PAD, {"x": _f(3, 2)}, {"pads": (1, 0, 1, 0), "mode": "edge"}),
    "gather": (Op.GATHER, {"x": _f(4, 3), "c:i": np.array([[0, -1], [2, 2]], np.int64)},
               {"axis": 0}),
    "gather_input": (Op.GATHER, {"c:x": _f(6, 3), "i": np.array([[5, 0, 1]], np.int64)},
                     {"axis": 0}),
}


@pytest.mark.parametrize("case", sorted(GLUE))
def test_glue_op_matches_reference(case, tol):
    op, arrays, attrs = GLUE[case]
    g = _one(op, arrays, attrs)
    feed = {k: v for k, v in arrays.items() if not k.startswith("c:")}
    _close(_model(g).run(feed), reference.run(g, feed), tol["float32"])


def test_split_matches_reference():
    x = _f(3, 7)
    g = Graph("split", [Value("x", "float32", (3, 7))], [Value("a", "float32", ()),
                                                          Value("b", "float32", ())],
              [Node("s", Op.SPLIT, ["x"], ["a", "b"], {"axis": 1, "split": (3, 4)})]).validate()
    _close(_model(g).run({"x": x}), reference.run(g, {"x": x}), 0.0)


def _chain_graph() -> Graph:
    """Every elementwise op in one chain with broadcast operands of lower rank (one loop)."""
    nodes, prev = [], "x"
    steps = [(Op.ADD, ["c:b3"], {}), (Op.MUL, ["row"], {}), (Op.RELU, [], {}),
             (Op.SUB, ["c:s"], {}), (Op.SIGMOID, [], {}), (Op.POW, ["c:two"], {}),
             (Op.SQRT, [], {}), (Op.DIV, ["c:b3"], {}), (Op.TANH, [], {}), (Op.EXP, [], {}),
             (Op.LOG, [], {}), (Op.NEG, [], {}), (Op.ABS, [], {}),
             (Op.CLIP, [], {"min": -0.5, "max": 0.7}), (Op.LEAKY_RELU, [], {"alpha": 0.1}),
             (Op.IDENTITY, [], {}), (Op.CAST, [], {"to": "float32"})]
    for k, (op, extra, attrs) in enumerate(steps):
        out = f"t{k}"
        nodes.append(Node(f"n{k}", op, [prev] + [e[2:] if e.startswith("c:") else e
                                                 for e in extra], [out], attrs))
        prev = out
    consts = {"b3": np.abs(_f(5)) + 0.5, "s": np.float32([0.25]), "two": np.float32([2.0])}
    return Graph("chain", [Value("x", "float32", ("T", 3, 5)), Value("row", "float32", (3, 1))],
                 [Value(prev, "float32", ())], nodes, consts).validate()


def test_elementwise_chain_is_one_loop_and_matches_reference(tol):
    g = _chain_graph()
    m = _model(g)
    src = m.source()
    # one buffer taken from the arena: K.take<rank>(kt[..], ...) (or G.take<rank> linked)
    assert src.count(".take") + src.count("np.empty(") == 1, "the chain should be one loop"
    feed = {"x": _f(7, 3, 5), "row": _f(3, 1)}
    _close(m.run(feed), reference.run(g, feed), tol["float32"])


@pytest.mark.parametrize("make", [
    lambda: testing.lstm_graph(R, 5, 13, peephole=True, proj_size=7, initial_state=True,
                               seq_lens=True),
    lambda: testing.lstm_graph(R, 4, 9, direction="bidirectional", batch_first=True,
                               initial_state=True, seq_lens=True),
    lambda: testing.gru_graph(R, 6, 11, direction="bidirectional", seq_lens=True,
                              initial_state=True),
    lambda: testing.gru_graph(R, 3, 5, linear_before_reset=True, batch_first=True),
    lambda: testing.gru_graph(R, 7, 19, direction="reverse"),
    lambda: testing.rnn_graph(R, 4, 70, direction="reverse", seq_lens=True),
], ids=["lstm_peep_proj_lens", "bilstm_batch_first", "bigru_lens", "gru_lbr_bf", "gru_plain_rev",
    "rnn_rev"])
def test_recurrent_node_matches_reference(make, tol):
    g = make()
    m = _model(g)
    for t_len, n in ((7, 3), (1, 1)):
        feed = testing.random_inputs(g, R, t_len, n)
        _close(m.run(feed), reference.run(g, feed), tol["float32"])


def _front_end_graph() -> Graph:
    """Conv1d + Relu -> Transpose -> LSTM (carried state) -> Squeeze -> Gemm head -> Softmax,
    the shape of a streaming tagger; time runs along axis 2 of x [N, C, T]."""
    lstm = testing.lstm_graph(R, 6, 10)
    w = {k: v for k, v in lstm.constants.items()}
    w.update({"cw": _f(6, 4, 1), "cb": _f(6), "hw": _f(3, 10), "hb": _f(3)})
    nodes = [Node("conv", Op.CONV1D, ["x", "cw", "cb"], ["c"], {}),
             Node("relu", Op.RELU, ["c"], ["r"], {}),
             Node("tr", Op.TRANSPOSE, ["r"], ["rt"], {"perm": (2, 0, 1)}),
             Node("lstm", Op.LSTM, ["rt"], ["y", "", ""], dict(lstm.nodes[0].attrs),
                  dict(lstm.nodes[0].weights)),
             Node("sq", Op.SQUEEZE, ["y"], ["ys"], {"axes": (1,)}),
             Node("head", Op.MATMUL, ["ys", "hwt"], ["z"], {}),
             Node("sm", Op.SOFTMAX, ["z"], ["p"], {"axis": -1})]
    w["hwt"] = np.ascontiguousarray(w.pop("hw").T)
    del w["hb"]
    return Graph("front", [Value("x", "float32", ("N", 4, "T"))], [Value("p", "float32", ())],
                 nodes, w).validate()


def test_stream_in_any_chunking_equals_full_run(tol):
    g = _front_end_graph()
    m = _model(g)
    x = _f(2, 4, 11)
    full = m.run({"x": x})["p"]
    _close({"p": full}, reference.run(g, {"x": x}), tol["float32"])
    for cuts in ([1] * 11, [3, 5, 2, 1], [11]):
        s = m.stream()
        got, at = [], 0
        for c in cuts:
            got.append(s.push({"x": x[:, :, at:at + c]})["p"])
            at += c
        assert np.max(np.abs(np.concatenate(got, axis=0) - full)) <= tol["float32"]


def test_stream_state_set_and_reset(tol):
    m = _model(_front_end_graph())
    s = m.stream()
    x = _f(1, 4, 5)
    s.push({"x": x[:, :, :2]})
    saved = s.state
    a = s.push({"x": x[:, :, 2:]})["p"]
    s.reset()
    s.state = saved
    b = s.push({"x": x[:, :, 2:]})["p"]
    assert np.array_equal(a, b)
    with pytest.raises(InputError, match="batch"):
        s.push({"x": _f(2, 4, 1)})


def test_unsupported_nodes_fall_back_and_describe_says_why(tol):
    arrays = {"x": _f(2, 4, 9), "c:w": _f(6, 2, 3)}
    g = _one(Op.CONV1D, arrays, {"group": 2})
    m = Model(g, codegen=True)
    assert m.source() is None
    assert "node 'n' (Conv1d): grouped convolution" in m.describe()
    _close(m.run({"x": arrays["x"]}), reference.run(g, {"x": arrays["x"]}), tol["float32"])


def test_a_very_long_generated_function_runs_on_the_interpreter(tol, monkeypatch):
    # compile time grows faster than the function: past the limit the default is the
    # interpreter (a 3500-line function compiled for over 20 minutes)
    from edgeseq.runtime import codegen
    monkeypatch.setenv("EDGESEQ_CODEGEN", "1")
    monkeypatch.setattr(codegen, "MAX_GENERATED_LINES", 3)
    arrays = {"x": _f(2, 4, 9)}
    g = _one(Op.RELU, arrays, {})
    m = Model(g)
    assert m.source() is None
    assert "lines (> 3" in m.describe()
    _close(m.run({"x": arrays["x"]}), reference.run(g, {"x": arrays["x"]}), tol["float32"])


def test_bad_indices_and_lengths_raise_input_error():
    op, arrays, attrs = GLUE["gather_input"]
    m = _model(_one(op, arrays, attrs))
    with pytest.raises(InputError, match="out of range"):
        m.run({"i": np.array([[6, 0, 1]], np.int64)})
    g = testing.rnn_graph(R, 4, 70, direction="reverse", seq_lens=True)
    feed = testing.random_inputs(g, R, 5, 2)
    feed["sequence_lens"] = np.array([6, 1], np.int32)
    with pytest.raises(InputError, match="sequence_lens"):
        _model(g).run(feed)


def test_generated_module_is_cached_on_disk_with_numba_cache():
    g = _chain_graph()
    m1, m2 = _model(g), _model(_chain_graph())
    path = m1._compiled.path
    assert path == m2._compiled.path and path.read_text() == m1.source()
    assert any(Path(path.parent, "__pycache__").glob(path.stem + "*.nbi")), \
        "no Numba cache index beside the generated module"


DEMO = Path(__file__).resolve().parents[2] / "edgeseq" / "data" / "demo_classifier.onnx"


def test_demo_classifier_matches_reference(tol):
    pytest.importorskip("onnx")
    from edgeseq.converters.onnx import convert
    g = convert(str(DEMO))
    x = {"x": _f(3, 29, 12)}
    _close(_model(g).run(x), reference.run(g, x), tol["float32"])


def test_silero_run_and_one_frame_stream_match_reference(tol):
    silero_vad = pytest.importorskip("silero_vad")
    from edgeseq.converters.onnx import convert
    path = os.path.join(os.path.dirname(silero_vad.__file__), "data",
                        "silero_vad_16k_sequence.onnx")
    g = convert(path)
    m = _model(g)
    frames = _f(6, 576, scale=0.1)
    h, c = _f(1, 1, 128, scale=0.1), _f(1, 1, 128, scale=0.1)
    feed = {"input": frames, "h": h, "c": c}
    want = reference.run(g, feed)
    got = m.run(feed)
    _close(got, want, tol["silero_prob"])
    s = m.stream()
    probs = [s.push({"input": frames[k:k + 1], **({"h": h, "c": c} if k == 0 else {})})
             ["speech_probs"] for k in range(6)]
    assert np.max(np.abs(np.concatenate(probs) - want["speech_probs"])) <= tol["silero_prob"]


def test_lengths_through_an_integer_cast(tol):
    """Exporters cast sequence lengths (int64 -> int32) before the LSTM: emitted as int64."""
    g0 = testing.lstm_graph(R, 3, 6, seq_lens=True, direction="bidirectional")
    node = g0.nodes[0]
    cast = Node("cast", Op.CAST, ["sequence_lens"], ["lens32"], {"to": "int32"})
    lstm = Node(node.name, node.op, ["x", "lens32"] + list(node.inputs[2:]), node.outputs,
                dict(node.attrs), dict(node.weights))
    g = Graph("cast_lens", g0.inputs, g0.outputs, [cast, lstm], g0.constants).validate()
    feed = testing.random_inputs(g, R, 6, 3)
    _close(_model(g).run(feed), reference.run(g, feed), tol["float32"])


def test_inspect_code_prints_the_generated_function(tmp_path, capsys):
    pytest.importorskip("onnx")
    from edgeseq import artifact
    from edgeseq.cli import main
    from edgeseq.converters.onnx import convert
    art = tmp_path / "demo.eseq"
    artifact.save(convert(str(DEMO)), str(art))
    assert main(["inspect", str(art), "--code"]) == 0
    out = capsys.readouterr().out
    # the kernels are called through their pointers (runtime/codegen/kernel_calls.py)
    assert "def graph_run(" in out and "K.lstm_plain_sequence(kt[" in out


def test_int8_head_weights_are_dequantised(tol):
    """A Gemm head quantised by the int8 pass (int8 rows + "<name>.scale") reads its
    dequantised weights, as the interpreter and the reference do."""
    w = R.integers(-127, 128, size=(5, 6)).astype(np.int8)
    consts = {"w": w, "w.scale": (np.abs(_f(5)) * 0.01 + 0.001), "c": _f(5)}
    g = Graph("q", [Value("a", "float32", ("N", 6))], [Value("y", "float32", ())],
              [Node("n", Op.GEMM, ["a", "w", "c"], ["y"], {"trans_b": True})], consts).validate()
    feed = {"a": _f(3, 6)}
    _close(_model(g).run(feed), reference.run(g, feed), tol["float32"])


def test_inconsistent_runtime_shapes_raise_instead_of_reading_out_of_bounds():
    """Dims the converter could only name symbolically are checked inside the generated
    function before a kernel reads with them (Concat of unequal rows, MatMul widths)."""
    g = Graph("cat", [Value("a", "float32", ("N", 3)), Value("b", "float32", ("M", 2))],
              [Value("y", "float32", ())],
              [Node("n", Op.CONCAT, ["a", "b"], ["y"], {"axis": 1})], {}).validate()
    with pytest.raises(InputError, match="Concat"):
        _model(g).run({"a": _f(4, 3), "b": _f(5, 2)})
    g = Graph("mm", [Value("a", "float32", ("N", "K"))], [Value("y", "float32", ())],
              [Node("n", Op.MATMUL, ["a", "w"], ["y"], {})], {"w": _f(4, 3)}).validate()
    with pytest.raises(InputError, match="inner dimensions|MatMul"):
        _model(g).run({"a": _f(2, 6)})


def test_left_out_optional_inputs_run_full_length_from_zeros(tol):
    # an optional graph input left out reaches the generated function as an empty dummy:
    # sequence_lens then means every row at full length (was refused as a wrong batch)
    rng = np.random.default_rng(11)
    g = testing.lstm_graph(rng, 4, 5, seq_lens=True, initial_state=True)
    x = rng.standard_normal((3, 2, 4)).astype(np.float32)
    full = {"x": x, "sequence_lens": np.array([3, 3], np.int32),
            "initial_h": np.zeros((1, 2, 5), np.float32),
            "initial_c": np.zeros((1, 2, 5), np.float32)}
    want = reference.run(g, full)
    m = _model(g)
    _close(m.run({"x": x}), want, tol["float32"])


def test_refused_inputs_get_the_interpreters_message():
    # generated code raises constant strings; the Model replays a refused call on the
    # interpreter so the message names the values given
    g = testing.lstm_graph(np.random.default_rng(12), 4, 5, seq_lens=True)
    feed = {"x": np.zeros((3, 2, 4), np.float32), "sequence_lens": np.array([1, 4], np.int32)}
    with pytest.raises(InputError, match=r"sequence_lens must be 2 values in \[0, 3\], got \[1, 4\]"):
        _model(g).run(feed)
    s = _model(testing.gru_graph(np.random.default_rng(13), 3, 4)).stream()
    s.push({"x": np.zeros((2, 2, 3), np.float32)})
    with pytest.raises(InputError, match="batch 2.*batch 3"):
        s.push({"x": np.zeros((2, 3, 3), np.float32)})


def test_cache_key_follows_the_kernel_sources(monkeypatch):
    # Numba's file cache checks only the generated file: a changed kernel (same edgeseq
    # version) must give the generated module another name, or stale code would run
    from edgeseq.runtime.codegen import cache
    before = cache.cache_key("src")
    monkeypatch.setattr(cache, "_kernels_digest", lambda: "a kernel changed")
    assert cache.cache_key("src") != before

