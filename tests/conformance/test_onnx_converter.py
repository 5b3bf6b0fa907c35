"""The ONNX converter's own contract: one error for everything unsupported, the versioned
handler registry, folding (constant, --fix, --shape), external data, glue ops vs onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeseq import reference, testing
from edgeseq.converters.onnx import convert, registry
from edgeseq.errors import UnsupportedModelError
from edgeseq.ops import Op

F = TensorProto.FLOAT


model_of = testing.onnx_model
ort_run = testing.onnxruntime_run


def vi(name, shape, t=F):
    return testing.onnx_value(name, shape, t)


def test_two_unsupported_ops_fail_in_one_error_naming_both():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu0"),
             helper.make_node("Sin", ["a"], ["b"], name="sin_first"),
             helper.make_node("Sin", ["b"], ["c"], name="sin_second"),
             helper.make_node("NonZero", ["c"], ["d"], name="nz"),
             helper.make_node("Pad", ["x", "pads"], ["e"], name="bad_pad", mode="wrap")]
    pads = numpy_helper.from_array(np.zeros(4, np.int64), "pads")
    m = model_of(nodes, [vi("x", [2, 3])], [vi("d", None, TensorProto.INT64), vi("e", [2, 3])],
                 [pads])
    with pytest.raises(UnsupportedModelError) as e:
        convert(m)
    msg = str(e.value)
    for part in ("Sin (opset 17)", "'sin_first'", "'sin_second'", "NonZero (opset 17)", "'nz'",
                 "'bad_pad' (Pad)", "mode 'wrap'", "supported ONNX ops", "LSTM (opset>=7)"):
        assert part in msg, f"{part!r} missing from:\n{msg}"
    assert msg.count("\n") < 12, "one compact error expected"


def test_unsupported_attribute_values_are_listed():
    w = numpy_helper.from_array(np.zeros((1, 8, 3), np.float32), "W")
    r = numpy_helper.from_array(np.zeros((1, 8, 2), np.float32), "R")
    nodes = [helper.make_node("GRU", ["x", "W", "R"], ["y"], name="g", hidden_size=2,
                              activations=["Sigmoid", "Gelu"]),
             helper.make_node("GRU", ["x", "W", "R"], ["y2"], name="g2", hidden_size=2,
                              direction="sideways")]
    m = model_of(nodes, [vi("x", [4, 1, 3])], [vi("y", None), vi("y2", None)], [w, r])
    # W is [1, 8, 3] but GRU needs 3*H = 6 rows: reported too
    with pytest.raises(UnsupportedModelError) as e:
        convert(m)
    msg = str(e.value)
    assert "'g' (GRU)" in msg and "'g2' (GRU)" in msg and "sideways" in msg


def test_registry_picks_newest_handler_not_above_the_opset():
    assert registry.lookup("Squeeze", "", 11).since == 1
    assert registry.lookup("Squeeze", "", 13).since == 13
    assert registry.lookup("Squeeze", "ai.onnx", 21).since == 13
    assert registry.lookup("LSTM", "", 6) is None
    assert registry.lookup("LSTM", "com.microsoft", 14) is None


def test_registry_refuses_a_duplicate_key():
    with pytest.raises(AssertionError, match="duplicate"):
        registry.handler("LSTM", since=7)(lambda ctx, node: None)


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze_attribute_and_input_forms(opset):
    if opset < 13:
        nodes = [helper.make_node("Unsqueeze", ["x"], ["a"], axes=[0]),
                 helper.make_node("Squeeze", ["a"], ["y"], axes=[0])]
        inits = []
    else:
        nodes = [helper.make_node("Unsqueeze", ["x", "ax"], ["a"]),
                 helper.make_node("Squeeze", ["a", "ax"], ["y"])]
        inits = [numpy_helper.from_array(np.array([0], np.int64), "ax")]
    m = model_of(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])], inits, opset=opset)
    g = convert(m)
    assert [n.op for n in g.nodes] == [Op.UNSQUEEZE, Op.SQUEEZE]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(reference.run(g, {"x": x})["y"], x)


def _dynamic_reshape_model():
    """Reshape whose target is computed from a second input (a run-time shape)."""
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape_by_input")]
    return model_of(nodes, [vi("x", [2, 6]), vi("shape", [2], TensorProto.INT64)], [vi("y", None)])


def test_non_constant_operand_names_the_node_and_fix_resolves_it():
    m = _dynamic_reshape_model()
    with pytest.raises(UnsupportedModelError) as e:
        convert(m)
    assert "'reshape_by_input' (Reshape)" in str(e.value) and "--fix" in str(e.value)
    assert e.value.needs_fix == ["shape"]
    g = convert(m, fix={"shape": [3, 4]})
    assert [v.name for v in g.inputs] == ["x"]
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    np.testing.assert_array_equal(reference.run(g, {"x": x})["y"], x.reshape(3, 4))


def test_shape_option_folds_shape_arithmetic():
    """Shape(x)[1] * 2 used as a Reshape target: needs the dim; --shape provides it."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "one"], ["d"], axis=0),
             helper.make_node("Mul", ["d", "two"], ["d2"]),
             helper.make_node("Div", ["d0", "two"], ["half"]),
             helper.make_node("Gather", ["s", "zero"], ["d0"], axis=0),
             helper.make_node("Concat", ["half", "d2"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"], name="r")]
    nodes = nodes[:3] + [nodes[4], nodes[3]] + nodes[5:]
    inits = [numpy_helper.from_array(np.array([1], np.int64), "one"),
             numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([2], np.int64), "two")]
    m = model_of(nodes, [vi("x", ["A", "B"])], [vi("y", None)], inits)
    with pytest.raises(UnsupportedModelError, match="'r' \\(Reshape\\)"):
        convert(m)       # A/2 is not expressible with 0 / -1 alongside another symbol
    g = convert(m, shapes={"x": (4, 3)})
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_array_equal(reference.run(g, {"x": x})["y"], x.reshape(2, 6))


def test_external_data_is_loaded(tmp_path, rng):
    w = rng.standard_normal((64, 32)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    m = model_of(nodes, [vi("x", [2, 64])], [vi("y", [2, 32])], [numpy_helper.from_array(w, "w")])
    path = tmp_path / "ext.onnx"
    onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.onnx.data", size_threshold=0)
    assert (tmp_path / "ext.onnx.data").stat().st_size >= w.nbytes
    g = convert(path)
    x = rng.standard_normal((2, 64)).astype(np.float32)
    np.testing.assert_allclose(reference.run(g, {"x": x})["y"], x.astype(np.float64) @ w, atol=1e-5)


def test_glue_ops_match_onnxruntime(rng, tol):
    """Glue a real export meets, with constants folded (Where/Equal/Range/ConstantOfShape)."""
    c = lambda n, a: numpy_helper.from_array(np.asarray(a), n)  # noqa: E731
    inits = [
        c("wc", rng.standard_normal((6, 4, 3)).astype(np.float32)),
        c("bc", rng.standard_normal(6).astype(np.float32)),
        c("pads", np.array([0, 0, 1, 0, 0, 2], np.int64)),
        c("gw", rng.standard_normal((6, 5)).astype(np.float32)),
        c("gb", rng.standard_normal(5).astype(np.float32)),
        c("split", np.array([2, 3], np.int64)),
        c("lo", np.array(-0.5, np.float32)), c("hi", np.array(0.7, np.float32)),
        c("idx", np.array([2, 0], np.int64)), c("k", np.array(1, np.int64)),
        c("n3", np.array([3], np.int64)), c("flag", np.array([1], np.int64)),
        c("rm_axes", np.array([1], np.int64)), c("perm_shape", np.array([0, -1], np.int64)),
    ]
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["xp"], mode="reflect"),
        helper.make_node("Conv", ["xp", "wc", "bc"], ["cv"], kernel_shape=[3], strides=[2],
                         auto_pad="SAME_UPPER"),
        helper.make_node("LeakyRelu", ["cv"], ["lr"], alpha=0.2),
        helper.make_node("Transpose", ["lr"], ["tr"], perm=[0, 2, 1]),
        helper.make_node("Reshape", ["tr", "perm_shape"], ["fl"]),
        helper.make_node("Flatten", ["tr"], ["fl2"], axis=2),
        helper.make_node("Gemm", ["fl2", "gw", "gb"], ["gm"], alpha=0.5, beta=2.0),
        helper.make_node("Split", ["gm", "split"], ["s1", "s2"], axis=1),
        helper.make_node("Clip", ["s2", "lo", "hi"], ["cl"]),
        helper.make_node("Softmax", ["cl"], ["sm"], axis=-1),
        helper.make_node("LogSoftmax", ["s1"], ["ls"], axis=1),
        helper.make_node("Gather", ["sm", "idx"], ["ga"], axis=1),
        helper.make_node("Gather", ["sm", "k"], ["gk"], axis=1),
        helper.make_node("ReduceMean", ["tr", "rm_axes"], ["rm"], keepdims=0),
        # folded: Range(0, 3) == 1 -> Where(...) constant
        helper.make_node("Range", ["zero_s", "three_s", "one_s"], ["rg"]),
        helper.make_node("Equal", ["rg", "flag"], ["eq"]),
        helper.make_node("Where", ["eq", "two_f", "half_f"], ["wh"]),
        helper.make_node("Mul", ["ga", "wh_col"], ["out1"]),
        helper.make_node("Sqrt", ["wh"], ["sq"]),
        helper.make_node("Sub", ["gk", "sq_first"], ["out2"]),
        helper.make_node("Tanh", ["fl"], ["th"]),
        helper.make_node("Dropout", ["th"], ["out3"]),
        helper.make_node("Identity", ["rm"], ["out4"]),
        helper.make_node("Concat", ["ls", "ls"], ["out5"], axis=1),
    ]
    inits += [c("zero_s", np.array(0, np.int64)), c("three_s", np.array(3, np.int64)),
              c("one_s", np.array(1, np.int64)), c("two_f", np.array(2.0, np.float32)),
              c("half_f", np.array(0.5, np.float32))]
    # wh_col: the folded Where result reshaped to [1, 3] -> needs Slice of it to [1, 2]
    nodes.insert(17, helper.make_node("Slice", ["wh", "s0", "e2"], ["wh2"]))
    nodes.insert(18, helper.make_node("Unsqueeze", ["wh2", "ax0"], ["wh_col"]))
    nodes.insert(20, helper.make_node("Slice", ["sq", "s0", "s1e"], ["sq_first"]))
    inits += [c("s0", np.array([0], np.int64)), c("e2", np.array([2], np.int64)),
              c("s1e", np.array([1], np.int64)), c("ax0", np.array([0], np.int64))]
    outs = [vi(n, None) for n in ("out1", "out2", "out3", "out4", "out5")]
    m = model_of(nodes, [vi("x", [1, 4, 9])], outs, inits, opset=18)
    x = rng.standard_normal((1, 4, 9)).astype(np.float32)
    want = ort_run(m, {"x": x})
    g = convert(m)
    ops = {n.op for n in g.nodes}
    assert Op.CONV1D in ops and Op.PAD in ops and Op.GEMM in ops
    got = reference.run(g, {"x": x})
    for k, w in want.items():
        assert got[k].shape == w.shape, k
        assert float(np.max(np.abs(got[k] - w))) <= tol["float32"], k


def test_backend_run_node_and_run_model(rng, tol):
    """The Backend's other entry points: run_node (weights as inputs) and run_model."""
    from edgeseq.converters.onnx import backend
    h, i = 3, 2
    x = rng.standard_normal((4, 2, i)).astype(np.float32)
    w = rng.standard_normal((1, 3 * h, i)).astype(np.float32)
    r = rng.standard_normal((1, 3 * h, h)).astype(np.float32)
    node = helper.make_node("GRU", ["X", "W", "R"], ["Y", "Y_h"], hidden_size=h,
                            linear_before_reset=1)
    got = backend.run_node(node, [x, w, r])
    m = model_of([node], [vi("X", list(x.shape)), vi("W", list(w.shape)), vi("R", list(r.shape))],
                 [vi("Y", None), vi("Y_h", None)], opset=14)
    want = ort_run(m, {"X": x, "W": w, "R": r})
    assert float(np.max(np.abs(got[0] - want["Y"]))) <= tol["float32"]
    assert float(np.max(np.abs(got[1] - want["Y_h"]))) <= tol["float32"]
    assert backend.supports_device("CPU") and not backend.supports_device("CUDA")


def test_symbolic_shapes_fold_to_reshape_and_zero_states(rng, tol):
    """Exporter idioms on dynamic dims T, N: zero initial states from
    ConstantOfShape([1, Shape(x)[1], H]) (legacy) and Expand(0, ...) (dynamo), and
    Reshape(y, [Shape(y)[0], Shape(y)[2], D*H])."""
    h, i = 4, 3
    c = lambda n, a: numpy_helper.from_array(np.asarray(a), n)  # noqa: E731
    inits = [c("W", rng.uniform(-.5, .5, (1, 4 * h, i)).astype(np.float32)),
             c("R", rng.uniform(-.5, .5, (1, 4 * h, h)).astype(np.float32)),
             c("one", np.array([1], np.int64)), c("hid", np.array([h], np.int64)),
             c("i1", np.array(1, np.int64)), c("ax0", np.array([0], np.int64)),
             c("s0", np.array([0], np.int64)), c("s1", np.array([1], np.int64)),
             c("s2", np.array([2], np.int64)), c("s3", np.array([3], np.int64)),
             c("s4", np.array([4], np.int64)), c("zero_f", np.array(0.0, np.float32))]
    nodes = [
        helper.make_node("Shape", ["x"], ["xs"]),
        helper.make_node("Gather", ["xs", "i1"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
        helper.make_node("Concat", ["one", "n1", "hid"], ["h0_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["h0_shape"], ["h0"]),
        helper.make_node("Expand", ["zero_f", "h0_shape"], ["c0"]),      # dynamo's torch.zeros
        helper.make_node("LSTM", ["x", "W", "R", "", "", "h0", "c0"], ["y"], hidden_size=h),
        helper.make_node("Transpose", ["y"], ["yt"], perm=[0, 2, 1, 3]),
        helper.make_node("Shape", ["yt"], ["ys"]),
        helper.make_node("Slice", ["ys", "s0", "s2"], ["tn"]),
        helper.make_node("Slice", ["ys", "s2", "s3"], ["d"]),
        helper.make_node("Slice", ["ys", "s3", "s4"], ["hh"]),
        helper.make_node("Mul", ["d", "hh"], ["dh"]),
        helper.make_node("Concat", ["tn", "dh"], ["target"], axis=0),
        helper.make_node("Reshape", ["yt", "target"], ["out"]),
    ]
    m = model_of(nodes, [vi("x", ["T", "N", i])], [vi("out", None)], inits, opset=14)
    g = convert(m)
    lstm = next(g.recurrent_nodes())
    assert not lstm.input("initial_h") and not lstm.input("initial_c")
    reshape = next(n for n in g.nodes if n.op is Op.RESHAPE)
    assert reshape.attrs["shape"] == (0, 0, 4)
    for t, n in ((5, 2), (9, 3)):
        x = rng.standard_normal((t, n, i)).astype(np.float32)
        want = ort_run(m, {"x": x})["out"]
        got = reference.run(g, {"x": x})["out"]
        assert got.shape == want.shape == (t, n, h)
        assert float(np.max(np.abs(got - want))) <= tol["float32"]


def _sorted_batch_model(rng, mix_batch: bool):
    """What the legacy exporter writes for pack_padded_sequence(enforce_sorted=False): sort
    the batch by length (TopK), run the LSTM on the sorted batch with the sorted lengths,
    unsort (Gather with the inverse from ScatterElements over a Range). With `mix_batch`, a
    ReduceMean over the batch axis sits between sort and unsort."""
    h, i = 4, 3
    c = lambda n, a: numpy_helper.from_array(np.asarray(a), n)  # noqa: E731
    inits = [c("W", rng.uniform(-.5, .5, (1, 4 * h, i)).astype(np.float32)),
             c("R", rng.uniform(-.5, .5, (1, 4 * h, h)).astype(np.float32)),
             c("zero", np.array(0, np.int64)), c("one", np.array(1, np.int64))]
    nodes = [
        helper.make_node("Shape", ["lengths"], ["ls"]),
        helper.make_node("TopK", ["lengths", "ls"], ["sorted_lens", "perm"], axis=-1),
        helper.make_node("Gather", ["x", "perm"], ["xs"], axis=1),
        helper.make_node("Cast", ["sorted_lens"], ["sl32"], to=TensorProto.INT32),
        helper.make_node("LSTM", ["xs", "W", "R", "", "sl32"], ["y"], hidden_size=h,
                         name="lstm"),
        helper.make_node("Shape", ["perm"], ["ps"]),
        helper.make_node("ReduceProd", ["ps"], ["n"], keepdims=0),
        helper.make_node("Range", ["zero", "n", "one"], ["iota"]),
        helper.make_node("ConstantOfShape", ["ps"], ["zeros"],
                         value=helper.make_tensor("v", TensorProto.INT64, [1], [0])),
        helper.make_node("ScatterElements", ["zeros", "perm", "iota"], ["inv"], axis=0),
    ]
    last = "y"
    if mix_batch:
        nodes += [helper.make_node("ReduceMean", ["y"], ["m"], axes=[2], keepdims=1,
                                   name="batch_mean"),
                  helper.make_node("Sub", ["y", "m"], ["centred"])]
        last = "centred"
    nodes.append(helper.make_node("Gather", [last, "inv"], ["out"], axis=2))
    return model_of(nodes, [vi("x", ["T", "N", i]), vi("lengths", ["N"], TensorProto.INT64)],
                    [vi("out", None)], inits, opset=17)


def test_sort_unsort_of_the_batch_is_dropped(rng, tol):
    m = _sorted_batch_model(rng, mix_batch=False)
    g = convert(m)
    assert [n.op for n in g.nodes] == [Op.LSTM, Op.IDENTITY]     # identity: the output name
    assert g.nodes[0].input("sequence_lens") == "lengths"
    for t, lens in ((6, [2, 6, 4]), (5, [5, 1, 3, 2, 4])):
        feeds = {"x": rng.standard_normal((t, len(lens), 3)).astype(np.float32),
                 "lengths": np.array(lens, np.int64)}
        want = ort_run(m, feeds)["out"]
        got = reference.run(g, feeds)["out"]
        assert float(np.max(np.abs(got - want))) <= tol["float32"]


def test_sort_unsort_is_refused_when_an_op_mixes_batch_items(rng):
    with pytest.raises(UnsupportedModelError) as e:
        convert(_sorted_batch_model(rng, mix_batch=True))
    assert "'batch_mean' (ReduceMean)" in str(e.value)
    assert "keep batch items apart" in str(e.value)
