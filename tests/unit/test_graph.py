"""Graph IR: validation errors name the node and say expected vs got; JSON round trip; shape
inference of every glue op on symbolic dims."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from edgeseq.errors import GraphError, ShapeError
from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import Op
from edgeseq.testing import gru_graph, lstm_graph, rnn_graph


def lstm(rng, **kw) -> Graph:
    """A valid 3-input, 4-unit LSTM graph (constants 'lstm.<slot>') to break on purpose."""
    return lstm_graph(rng, 3, 4, **kw)


def relu_chain() -> Graph:
    return Graph("chain", [Value("x", "float32", ("T", 3))], [Value("z", "float32", ())],
                 [Node("a", Op.RELU, ["x"], ["y"]), Node("b", Op.TANH, ["y"], ["z"])])


def raises(exc, *fragments):
    """pytest.raises matching every fragment literally, in order."""
    return pytest.raises(exc, match=".*".join(re.escape(f) for f in fragments))


# ---- validation errors ------------------------------------------------------------------------
def test_dangling_input_names_node_and_value():
    g = relu_chain()
    g.nodes[1].inputs = ["nowhere"]
    with raises(GraphError, "node 'b' (Tanh): input 'nowhere' is not a graph input, constant, "
                            "or the output of an earlier node"):
        g.validate()


def test_nodes_out_of_topological_order():
    g = relu_chain()
    g.nodes.reverse()
    with raises(GraphError, "node 'b' (Tanh): input 'y'", "output of an earlier node"):
        g.validate()


@pytest.mark.parametrize("case, exc, msg", [
    ("node", GraphError, "duplicate node name 'a'"),
    ("value", GraphError, "node 'b' (Tanh): output 'y' is already defined"),
    ("input", GraphError, "duplicate graph input 'x'"),
    ("input_vs_constant", GraphError, "graph input 'x' has the same name as a constant"),
    ("output_vs_constant", GraphError, "node 'a' (Relu): output 'y' is already defined"),
])
def test_duplicate_names(case, exc, msg):
    g = relu_chain()
    if case == "node":
        g.nodes[1].name = "a"
    elif case == "value":
        g.nodes[1].outputs = ["y"]
    elif case == "input":
        g.inputs.append(Value("x", "float32", (3,)))
    elif case == "input_vs_constant":
        g.constants["x"] = np.zeros(3, np.float32)
    else:
        g.constants["y"] = np.zeros(3, np.float32)
    with raises(exc, msg):
        g.validate()


@pytest.mark.parametrize("slot, shape, msg", [
    ("w_x", (1, 16, 5), "weight 'w_x': expected shape (1, 16, 3), got (1, 16, 5)"),
    ("w_h", (1, 12, 4), "weight 'w_h': expected shape (1, 16, 4), got (1, 12, 4)"),
    ("w_h", (16, 4), "weight 'w_h': expected shape (1, 16, 4), got (16, 4)"),
    ("b", (1, 32), "weight 'b': expected shape (1, 16), got (1, 32)"),
    ("peephole", (1, 4, 4), "weight 'peephole': expected shape (1, 3, 4), got (1, 4, 4)"),
    ("layer_norm", (1, 4, 3), "weight 'layer_norm': expected shape (1, 4, 4), got (1, 4, 3)"),
])
def test_wrong_weight_shape(slot, shape, msg, rng):
    g = lstm(rng, peephole=True, layer_norm=True)
    g.constants[f"lstm.{slot}"] = np.zeros(shape, np.float32)
    with raises(ShapeError, "node 'lstm' (LSTM): " + msg):
        g.validate()


def test_wrong_weight_shapes_of_gru_and_rnn(rng):
    g = gru_graph(rng, 3, 4)
    g.constants["gru.b_h"] = np.zeros((1, 8), np.float32)
    with raises(ShapeError, "node 'gru' (GRU): weight 'b_h': expected shape (1, 12), got (1, 8)"):
        g.validate()
    g = rnn_graph(rng, 3, 4, direction="bidirectional")
    g.constants["rnn.w_h"] = np.zeros((1, 4, 4), np.float32)
    with raises(ShapeError, "node 'rnn' (RNN): weight 'w_h': expected shape (2, 4, 4), got (1, 4, 4)"):
        g.validate()


def test_missing_required_slot(rng):
    g = lstm(rng)
    del g.nodes[0].weights["w_x"]
    with raises(GraphError, "node 'lstm' (LSTM): required weight slot 'w_x' is missing"):
        g.validate()


def test_unknown_slot_and_missing_constant(rng):
    g = lstm(rng)
    g.nodes[0].weights["w_y"] = "lstm.w_x"
    with raises(GraphError, "node 'lstm' (LSTM): unknown weight slot 'w_y'"):
        g.validate()
    g = lstm(rng)
    g.nodes[0].weights["b"] = "lstm.bias_typo"
    with raises(GraphError, "node 'lstm' (LSTM): weight 'b' refers to missing constant 'lstm.bias_typo'"):
        g.validate()


def test_recurrent_weight_given_twice_or_not_at_all(rng):
    g = lstm(rng)
    g.constants["u"] = np.zeros((1, 16, 2), np.float32)
    g.constants["v"] = np.zeros((1, 2, 4), np.float32)
    g.nodes[0].weights.update(w_h_u="u", w_h_v="v")
    with raises(ShapeError, "node 'lstm' (LSTM): exactly one of 'w_h' or the factor pair"):
        g.validate()
    del g.nodes[0].weights["w_h"]
    g.validate()                                            # the factored form alone is fine
    del g.nodes[0].weights["w_h_v"]
    with raises(ShapeError, "node 'lstm' (LSTM): factored recurrent weight needs both"):
        g.validate()


@pytest.mark.parametrize("attrs, msg", [
    ({"direction": "sideways"}, "attribute 'direction' must be one of "
                                "['forward', 'reverse', 'bidirectional'], got 'sideways'"),
    ({"coupled_gate": "output"}, "attribute 'coupled_gate' must be one of "
                                 "['none', 'input', 'forget'], got 'output'"),
    ({"activations": ("sigmoid", "tanh", "swish")}, "activation 'swish' is not supported"),
    ({"activations": ("sigmoid", "tanh")}, "activations: expected 3 names (3 per direction), got 2"),
    ({"activation_alpha": (1.0,)}, "activation_alpha: expected 3 values (one per activation), got 1"),
    ({"peepholes": True}, "unknown attribute(s) ['peepholes'] for LSTM"),
    ({"hidden_size": None}, "attribute 'hidden_size' is required for LSTM"),
])
def test_bad_attribute_value(attrs, msg, rng):
    g = lstm(rng)
    for k, v in attrs.items():
        if v is None:
            del g.nodes[0].attrs[k]
        else:
            g.nodes[0].attrs[k] = v
    with raises(GraphError, "node 'lstm' (LSTM): " + msg):
        g.validate()


@pytest.mark.parametrize("attrs, msg", [
    ({"hidden_size": 0}, "hidden_size must be positive, got 0"),
    ({"cell_clip": -1.0}, "cell_clip and proj_clip must be >= 0"),
    ({"gate_clip": -0.5}, "gate_clip must be >= 0"),
    ({"proj_size": 4}, "proj_size=4 but w_proj is absent"),
])
def test_bad_attribute_numbers(attrs, msg, rng):
    g = lstm(rng)
    g.nodes[0].attrs.update(attrs)
    with raises(ShapeError, "node 'lstm' (LSTM): " + msg):
        g.validate()


@pytest.mark.parametrize("attrs, msg", [
    ({"hidden_size": 4.5}, "attribute 'hidden_size' must be of kind int, got 4.5"),
    ({"batch_first": "false"}, "attribute 'batch_first' must be of kind bool, got 'false'"),
    ({"activations": "tanh"}, "attribute 'activations' must be of kind strs, got 'tanh'"),
    ({"cell_clip": [1.0]}, "attribute 'cell_clip' must be of kind float, got [1.0]"),
])
def test_attribute_of_wrong_kind_is_not_coerced_silently(attrs, msg, rng):
    g = lstm(rng)
    g.nodes[0].attrs.update(attrs)
    with raises(GraphError, "node 'lstm' (LSTM): " + msg):
        g.validate()


def test_ints_attribute_of_wrong_kind():
    g = relu_chain()
    g.nodes[1] = Node("t", Op.TRANSPOSE, ["y"], ["z"], {"perm": 3})
    with raises(GraphError, "node 't' (Transpose): attribute 'perm' must be of kind ints, got 3"):
        g.validate()


@pytest.mark.parametrize("value, exc, msg", [
    (Value("x", "float", ("T", 3)), GraphError,
     "graph input 'x': dtype 'float' is not one of ['float32'"),
    (Value("x", None, ("T", 3)), GraphError, "graph input 'x': dtype None is not one of"),
    (Value("x", "float32", (None, 3)), ShapeError,
     "graph input 'x': each dim must be a size >= 0 or a symbol name, got (None, 3)"),
    (Value("x", "float32", ("T", -1)), ShapeError, "got ('T', -1)"),
    (Value("x", "float32", ("T", 1.5)), ShapeError, "got ('T', 1.5)"),
    (Value("x", "float32", ("", 3)), ShapeError, "got ('', 3)"),
    (Value("", "float32", ("T", 3)), GraphError, "graph input name must be a non-empty string"),
])
def test_graph_input_needs_dtype_and_proper_dims(value, exc, msg):
    g = relu_chain()
    g.inputs = [value]
    g.nodes[0].inputs = [value.name]
    with raises(exc, msg):
        g.validate()


def test_declared_output_dims_must_be_sizes_or_symbols(rng):
    g = lstm(rng)
    g.outputs[0] = Value("y", "float32", (None, 1, "N", 4))
    with raises(ShapeError, "graph output 'y': each dim must be a size >= 0 or a symbol name"):
        g.validate()


def test_non_string_names_in_a_node_are_graph_errors(rng):
    g = lstm(rng)
    g.nodes[0].weights["w_x"] = ["lstm.w_x"]
    with raises(GraphError, "node 'lstm' (LSTM): name, inputs, outputs and weights must be strings"):
        g.validate()
    g = relu_chain()
    g.nodes[0].inputs = [["x"]]
    with raises(GraphError, "node 'a' (Relu): name, inputs, outputs and weights must be strings"):
        g.validate()


@pytest.mark.parametrize("v", [None, 1.5, [], 2])
def test_bool_attribute_accepts_only_truth_values(v, rng):
    g = lstm(rng)
    g.nodes[0].attrs["batch_first"] = v
    with raises(GraphError, "attribute 'batch_first' must be of kind bool"):
        g.validate()
    g.nodes[0].attrs["batch_first"] = np.False_     # numpy bools (from converters) are fine
    g.validate()


def test_bad_glue_attribute_names_node():
    g = relu_chain()
    g.nodes[1] = Node("cast", Op.CAST, ["y"], ["z"], {"to": "complex64"})
    with raises(GraphError, "node 'cast' (Cast): attribute 'to' must be one of", "got 'complex64'"):
        g.validate()


def _int8(rng, with_scale: bool, scale_shape=(1, 16)) -> Graph:
    g = lstm(rng)
    w_h = g.constants["lstm.w_h"]
    g.constants["lstm.w_h"] = np.clip(np.rint(w_h * 100), -127, 127).astype(np.int8)
    if with_scale:
        g.constants["lstm.w_h.scale"] = np.full(scale_shape, 0.01, np.float32)
    return g


def test_int8_weight_needs_its_scale(rng):
    _int8(rng, True).validate()
    with raises(ShapeError, "node 'lstm' (LSTM): weight 'w_h' is int8 but has no 'lstm.w_h.scale'"):
        _int8(rng, False).validate()
    with raises(ShapeError, "node 'lstm' (LSTM): scale of weight 'w_h': expected (1, 16) float32, "
                            "got (16) float32"):
        _int8(rng, True, (16,)).validate()


def test_bias_must_stay_float32(rng):
    g = lstm(rng)
    g.constants["lstm.b"] = g.constants["lstm.b"].astype(np.float16)
    with raises(ShapeError, "node 'lstm' (LSTM): weight 'b': dtype float16 not allowed"):
        g.validate()


def test_declared_output_shape_mismatch(rng):
    g = lstm(rng)
    g.outputs[0] = Value("y", "float32", ("T", 1, "N", 5))
    with raises(ShapeError, "output 'y': graph output declared as ('T', 1, 'N', 5) but computes "
                            "('T', 1, 'N', 4)"):
        g.validate()
    g.outputs[0] = Value("y", "float32", ("T", 1, "N"))
    with raises(ShapeError, "output 'y': graph output declared as ('T', 1, 'N')"):
        g.validate()


def test_declared_output_keeps_names_where_inference_has_none(rng):
    g = lstm(rng)
    g.outputs[0] = Value("y", "float32", ("time", 1, "batch", 4))
    g.validate()
    assert g.outputs[0].shape == ("time", 1, "batch", 4)


def test_output_not_produced():
    g = relu_chain()
    g.outputs.append(Value("w", "float32", ()))
    with raises(GraphError, "graph output 'w' is not produced by any node or input"):
        g.validate()


@pytest.mark.parametrize("x_shape, extra, msg", [
    (("T", 3), {}, "input x: expected rank 3, got (T, 3)"),
    (("T", "N", 3), {"h0": (1, "N", 5)}, "initial state 'h0': expected (1, N, 4), got (1, N, 5)"),
    (("T", "N", 3), {"lens": ("N", 2)}, "sequence_lens: expected (N,), got (N, 2)"),
])
def test_recurrent_input_errors(x_shape, extra, msg, rng):
    g = lstm(rng)
    g.inputs = [Value("x", "float32", x_shape)]
    if "h0" in extra:
        g.inputs.append(Value("h0", "float32", extra["h0"]))
        g.nodes[0].inputs = ["x", "", "h0"]
    if "lens" in extra:
        g.inputs.append(Value("lens", "int32", extra["lens"]))
        g.nodes[0].inputs = ["x", "lens"]
    with raises(ShapeError, "node 'lstm' (LSTM): " + msg):
        g.validate()


def test_too_many_inputs_and_too_few(rng):
    g = relu_chain()
    g.nodes[0].inputs = ["x", "x"]
    with raises(GraphError, "node 'a' (Relu): expected at most 1 inputs ['x'], got 2"):
        g.validate()
    g.nodes[0] = Node("mm", Op.MATMUL, ["x"], ["y"])
    with raises(GraphError, "node 'mm' (MatMul): expected at least 2 inputs ['a', 'b'], got ['x']"):
        g.validate()


# ---- JSON round trip --------------------------------------------------------------------------
def _full_graph(rng) -> Graph:
    g = lstm_graph(rng, 5, 6, direction="bidirectional", proj_size=3, proj_bias=True,
                   peephole=True, coupled_gate="forget", layer_norm=True, cell_clip=2.5,
                   gate_clip=4.0, seq_lens=True, initial_state=True,
                   activations=["hard_sigmoid", "tanh", "affine"] * 2,
                   activation_alpha=[0.3, 0.0, 2.0] * 2, activation_beta=[0.4, 0.0, 0.5] * 2)
    g.nodes += [Node("clip", Op.CLIP, ["y"], ["yc"], {"max": 1.0}),    # min stays -inf
                Node("tr", Op.TRANSPOSE, ["yc"], ["yt"], {"perm": (0, 2, 1, 3)}),
                Node("rs", Op.RESHAPE, ["yt"], ["f"], {"shape": (0, 0, -1)}),
                Node("fc", Op.GEMM, ["f2", "w", "c"], ["o"], {"alpha": 0.5, "trans_b": True})]
    g.nodes.insert(-1, Node("flat", Op.RESHAPE, ["f"], ["f2"], {"shape": (-1, 6)}))
    g.constants["w"] = rng.standard_normal((2, 6)).astype(np.float32)
    g.constants["c"] = np.zeros(2, np.float32)
    g.outputs = [Value("o", "float32", ("rows", 2))]
    g.metadata = {"labels": ["yes", "no"], "frame_ms": 10.0}
    return g.validate()


def test_json_round_trip_preserves_the_graph(rng):
    g = _full_graph(rng)
    text = g.dumps()
    h = Graph.from_json(json.loads(text), g.constants).validate()
    assert h.dumps() == text
    assert h.nodes[0].attrs == g.nodes[0].attrs
    assert h.node("clip").attrs["min"] == float("-inf")
    assert h.outputs[0].shape == ("rows", 2) and h.inputs[0].shape == ("T", "N", 5)
    assert h.values == g.values and h.metadata == g.metadata
    assert h.to_json()["constants"]["lstm.w_x"] == {"dtype": "float32", "shape": [2, 24, 5]}


def test_copy_shares_constants_and_is_independent(rng):
    g = _full_graph(rng)
    h = g.copy()
    assert h.constants["w"] is g.constants["w"]
    h.nodes[0].attrs["cell_clip"] = 9.0
    assert g.nodes[0].attrs["cell_clip"] == 2.5


def test_malformed_json_is_a_graph_error(rng):
    d = json.loads(_full_graph(rng).dumps())
    d["nodes"][0]["op"] = "Attention"
    with raises(GraphError, "node 'lstm': unknown op 'Attention'"):
        Graph.from_json(d, {})
    d["nodes"][0]["op"] = "LSTM"
    d["nodes"][0]["attrs"] = "x"
    with raises(GraphError, "malformed graph JSON"):
        Graph.from_json(d, {})
    del d["inputs"]
    with raises(GraphError, "malformed graph JSON: missing or bad field 'inputs'"):
        Graph.from_json(d, {})


# ---- shape inference on symbolic dims ---------------------------------------------------------
def infer(op: Op, shapes, attrs=None, *, n_out=1, dtypes=None):
    """Output (shape, dtype) of a one-node graph over inputs of the given shapes."""
    dtypes = dtypes or ["float32"] * len(shapes)
    ins = [Value(f"i{k}", dt, tuple(s)) for k, (s, dt) in enumerate(zip(shapes, dtypes))]
    outs = [f"o{k}" for k in range(n_out)]
    g = Graph("g", ins, [Value(o, "float32", ()) for o in outs],
              [Node("n", op, [v.name for v in ins], outs, dict(attrs or {}))]).validate()
    res = [(g.values[o].shape, g.values[o].dtype) for o in outs]
    return res[0] if n_out == 1 else res


F = "float32"


@pytest.mark.parametrize("op, shapes, attrs, want", [
    (Op.MATMUL, [("T", "N", 8), (8, 3)], {}, ("T", "N", 3)),
    (Op.MATMUL, [(8,), (8, 3)], {}, (3,)),
    (Op.MATMUL, [("T", 8), (8,)], {}, ("T",)),
    (Op.MATMUL, [("B", 1, "T", 8), (4, 8, 2)], {}, ("B", 4, "T", 2)),
    (Op.GEMM, [("N", 8), (3, 8), (3,)], {"trans_b": True}, ("N", 3)),
    (Op.ADD, [("T", 1, 4), (4,)], {}, ("T", 1, 4)),
    (Op.MUL, [("T", "N", 1), (1, "N", 6)], {}, ("T", "N", 6)),
    (Op.CONCAT, [("T", "N", 3), ("T", "N", 5)], {"axis": -1}, ("T", "N", 8)),
    (Op.CONCAT, [("T", "N", 3), ("T", "N", 3)], {"axis": 0}, ("n:0", "N", 3)),
    (Op.SLICE, [("T", "N", 8)], {"starts": (0, 2), "ends": (2 ** 63 - 1, -1), "axes": (0, 2),
                                 "steps": (1, 1)}, ("T", "N", 5)),
    (Op.SLICE, [("T", "N", 8)], {"starts": (1, -1), "ends": (2 ** 63 - 1, -100), "axes": (0, -1),
                                 "steps": (1, -2)}, ("n:0", "N", 4)),
    (Op.TRANSPOSE, [("T", "N", 2, 8)], {"perm": (0, 2, 1, 3)}, ("T", 2, "N", 8)),
    (Op.RESHAPE, [("T", "N", 2, 3)], {"shape": (0, 0, -1)}, ("T", "N", 6)),
    (Op.RESHAPE, [("T", 1, 8)], {"shape": (-1, 8)}, ("T", 8)),
    (Op.RESHAPE, [("T", "N", 8)], {"shape": (-1, 8)}, ("n:0", 8)),
    (Op.RESHAPE, [(2, 3, 4)], {"shape": (4, -1)}, (4, 6)),
    (Op.SQUEEZE, [("T", 1, 8)], {"axes": (1,)}, ("T", 8)),
    (Op.SQUEEZE, [("T", 1, 8, 1)], {"axes": ()}, ("T", 8)),
    (Op.UNSQUEEZE, [("T", 8)], {"axes": (0, -1)}, (1, "T", 8, 1)),
    (Op.PAD, [("N", 3, "L")], {"pads": (0, 0, 2, 0, 0, 1)}, ("N", 3, "n:2")),
    (Op.PAD, [("N", 3, "L")], {"pads": (0, 1, 0, 0, 1, 0)}, ("N", 5, "L")),
    (Op.REDUCE_MEAN, [("T", "N", 8)], {"axes": (-1,), "keepdims": False}, ("T", "N")),
    (Op.REDUCE_SUM, [("T", "N", 8)], {"axes": (), "keepdims": True}, (1, 1, 1)),
    (Op.CONV1D, [("N", 4, "L"), (6, 4, 3)], {"pads": (1, 1)}, ("N", 6, "n:2")),
    (Op.CONV1D, [("N", 4, 10), (6, 2, 3)], {"stride": 2, "group": 2, "dilation": 2}, ("N", 6, 3)),
    (Op.SOFTMAX, [("T", "N", 8)], {"axis": -1}, ("T", "N", 8)),
    (Op.CLIP, [("T", "N", 8)], {"min": 0.0}, ("T", "N", 8)),
])
def test_glue_shapes_on_symbolic_dims(op, shapes, attrs, want):
    assert infer(op, shapes, attrs) == (want, F)


def test_split_gather_cast_shapes():
    assert infer(Op.SPLIT, [("T", "N", 8)], {"axis": 2, "split": (3, 5)}, n_out=2) == \
        [(("T", "N", 3), F), (("T", "N", 5), F)]
    assert infer(Op.GATHER, [("T", "N", 8), (3,)], {"axis": 2}, dtypes=[F, "int64"]) == \
        (("T", "N", 3), F)
    assert infer(Op.GATHER, [("T", "N", 8), ()], {"axis": 0}, dtypes=[F, "int32"]) == (("N", 8), F)
    assert infer(Op.CAST, [("T", "N", 8)], {"to": "float16"}) == (("T", "N", 8), "float16")


@pytest.mark.parametrize("op, shapes, attrs, msg", [
    (Op.CONV1D, [("N", 4, 10), (6, 4, 3)], {"stride": 0},
     "stride, dilation and group must be >= 1, got 0, 1, 1"),
    (Op.CONV1D, [("N", 4, 10), (6, 4, 3)], {"dilation": 0},
     "stride, dilation and group must be >= 1, got 1, 0, 1"),
    (Op.CONV1D, [("N", 4, 10), (6, 4, 3)], {"pads": (1,)}, "pads: expected 2 values (begin, end), got [1]"),
    (Op.SOFTMAX, [("T", "N", 8)], {"axis": 3}, "axis 3 out of range for rank 3"),
    (Op.ADD, [("T", 3), (4,)], {}, "shapes (T, 3) and (4) do not broadcast"),
    (Op.TRANSPOSE, [("T", 3)], {"perm": (0, 0)}, "perm [0, 0] is not a permutation of rank 2"),
    (Op.RESHAPE, [(2, 3)], {"shape": (4, 2)}, "cannot reshape (2, 3) to (4, 2)"),
    (Op.RESHAPE, [(2, 3)], {"shape": (-1, -1)}, "shape [-1, -1] has more than one -1"),
    (Op.SQUEEZE, [("T", 2, 8)], {"axes": (1,)}, "cannot squeeze axis 1 of size 2"),
    (Op.CONCAT, [("T", 3), ("T", 3, 1)], {"axis": 0}, "input ranks differ"),
    (Op.MATMUL, [("T", 3), (4, 2)], {}, "inner dims differ: a (T, 3) @ b (4, 2)"),
    (Op.CONV1D, [("N", 4, 10), (6, 3, 3)], {}, "channels: x has 4, w expects 3 x group 1"),
    (Op.CONV1D, [("N", 4, 2), (6, 4, 5)], {}, "output length -2 <= 0"),
    (Op.SLICE, [("T", 3)], {"starts": (0,), "ends": (1,), "axes": (1,), "steps": (0,)},
     "Slice step must not be 0"),
    (Op.PAD, [("T", 3)], {"pads": (1, 1)}, "pads: expected 4 values, got 2"),
])
def test_glue_shape_errors_name_the_node(op, shapes, attrs, msg):
    with raises(ShapeError, f"node 'n' ({op.value}): {msg}"):
        infer(op, shapes, attrs)


def test_split_error_names_node():
    with raises(ShapeError, "node 'n' (Split): split sizes [3, 4] do not sum to 8"):
        infer(Op.SPLIT, [("T", 8)], {"axis": 1, "split": (3, 4)}, n_out=2)


def test_binary_dtype_mismatch_names_node():
    with raises(ShapeError, "node 'n' (Add): operand dtypes differ: float32 vs float16"):
        infer(Op.ADD, [("T", 3), (3,)], dtypes=[F, "float16"])


@pytest.mark.parametrize("kw, y, y_h, y_c", [
    ({}, ("T", 1, "N", 4), (1, "N", 4), (1, "N", 4)),
    ({"direction": "bidirectional", "proj_size": 2}, ("T", 2, "N", 2), (2, "N", 2), (2, "N", 4)),
    ({"batch_first": True}, ("N", "T", 1, 4), ("N", 1, 4), ("N", 1, 4)),
])
def test_recurrent_output_shapes(kw, y, y_h, y_c, rng):
    g = lstm(rng, **kw)
    assert (g.values["y"].shape, g.values["y_h"].shape, g.values["y_c"].shape) == (y, y_h, y_c)
    assert g.outputs[0].shape == y


def _leaf_paths(o, path=()):
    if isinstance(o, dict):
        for k, v in o.items():
            yield from _leaf_paths(v, path + (k,))
    elif isinstance(o, list):
        for i, v in enumerate(o):
            yield from _leaf_paths(v, path + (i,))
    if path:
        yield path


def _glue_zoo(rng) -> Graph:
    """One node of most glue ops, on concrete and symbolic dims."""
    g = lstm(rng)
    g.nodes += [
        Node("tr", Op.TRANSPOSE, ["y"], ["yt"], {"perm": (0, 2, 1, 3)}),
        Node("rs", Op.RESHAPE, ["yt"], ["feat"], {"shape": (0, 0, -1)}),
        Node("fc", Op.MATMUL, ["feat", "fc.w"], ["l0"]),
        Node("cat", Op.CONCAT, ["l0", "l0"], ["l1"], {"axis": -1}),
        Node("sp", Op.SPLIT, ["l1"], ["s0", "s1"], {"axis": -1, "split": (2, 4)}),
        Node("sl", Op.SLICE, ["s1"], ["s2"], {"starts": (0,), "ends": (2,), "axes": (-1,),
                                              "steps": (1,)}),
        Node("pad", Op.PAD, ["s2"], ["s3"], {"pads": (0, 0, 1, 0, 0, 1)}),
        Node("rm", Op.REDUCE_MEAN, ["s3"], ["s4"], {"axes": (-1,), "keepdims": True}),
        Node("sq", Op.SQUEEZE, ["s4"], ["s5"], {"axes": (-1,)}),
        Node("us", Op.UNSQUEEZE, ["s5"], ["s6"], {"axes": (0,)}),
        Node("ga", Op.GATHER, ["fc.w", "idx"], ["s7"], {"axis": 0}),
        Node("cv", Op.CONV1D, ["cx", "cw"], ["s8"], {"pads": (1, 1), "stride": 2}),
        Node("gm", Op.GEMM, ["fc.w", "fc.w"], ["s9"], {"trans_b": True}),
        Node("ca", Op.CAST, ["s9"], ["s10"], {"to": "float16"}),
        Node("cl", Op.CLIP, ["s9"], ["s11"], {"min": 0.0}),
        Node("sm", Op.SOFTMAX, ["s9"], ["s12"], {"axis": -1}),
    ]
    g.inputs.append(Value("cx", "float32", ("N", 4, 9)))
    g.constants.update({"fc.w": rng.standard_normal((4, 3)).astype(np.float32),
                        "idx": np.array([0, 2], np.int64), "cw": np.zeros((2, 4, 3), np.float32)})
    g.outputs = [Value(o, "float32", ()) for o in ("s6", "s7", "s8", "s10", "s11", "s12")]
    return g.validate()


@pytest.mark.parametrize("kind", ["lstm", "glue"])
def test_damaged_graph_json_gives_typed_errors_only(kind, rng):
    """Every field of a real graph's JSON replaced by values of the wrong kind: the result is
    a valid graph or a GraphError/ShapeError, never a raw TypeError/ValueError/KeyError."""
    from edgeseq.errors import EdgeseqError
    g = lstm(rng, peephole=True, proj_size=2, seq_lens=True, initial_state=True) \
        if kind == "lstm" else _glue_zoo(rng)
    base = json.loads(g.dumps())
    paths = [p for p in _leaf_paths(base) if p[0] != "constants"]
    assert len(paths) > 60
    raw = []
    for path in paths:
        for bad in (None, 0, -1, 1.5, "x", "", [], {}, [1, 2], True, 10 ** 9, [0] * 7):
            d = json.loads(json.dumps(base))
            o = d
            for k in path[:-1]:
                o = o[k]
            o[path[-1]] = bad
            try:
                Graph.from_json(d, g.constants).validate()
            except EdgeseqError:
                pass
            except Exception as e:   # noqa: BLE001 - the point of the test
                raw.append(f"{path} = {bad!r}: {type(e).__name__}: {e}")
    assert not raw, "\n".join(raw[:10])
