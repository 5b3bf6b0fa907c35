"""ONNX `Loop` nodes whose body is no recurrent cell run as a general Loop node: hand-built
models (a custom gated cell, a cumulative sum that stops early with a run-time trip count, a
carried sequence that grows each step) checked against onnxruntime, on the reference and
the runtime, and through an artifact."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto as TP, helper, numpy_helper  # noqa: E402

from edgeseq import artifact, reference  # noqa: E402
from edgeseq.converters.onnx import convert  # noqa: E402
from edgeseq.errors import UnsupportedModelError  # noqa: E402
from edgeseq.ops import Op  # noqa: E402
from edgeseq.runtime import Model  # noqa: E402
from edgeseq.testing import onnx_model, onnx_value, onnxruntime_run  # noqa: E402


def _vi(name, elem, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def _gated_cell_model(rng, t=5, n=2, i=3, h=4):
    """h <- tanh(x_t W + h U) * sigmoid(h V): no cell edgeseq lifts."""
    w = {k: rng.standard_normal(s).astype(np.float32) * 0.6
         for k, s in (("W", (i, h)), ("U", (h, h)), ("V", (h, h)))}
    body = helper.make_graph([
        helper.make_node("Gather", ["x", "it"], ["xt"], axis=0),
        helper.make_node("MatMul", ["xt", "W"], ["a"]),
        helper.make_node("MatMul", ["h", "U"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["ab"]),
        helper.make_node("Tanh", ["ab"], ["th"]),
        helper.make_node("MatMul", ["h", "V"], ["hv"]),
        helper.make_node("Sigmoid", ["hv"], ["g"]),
        helper.make_node("Mul", ["th", "g"], ["h2"]),
        helper.make_node("Identity", ["c"], ["c2"]),
        helper.make_node("Identity", ["h2"], ["y"]),
    ], "body", [_vi("it", TP.INT64, []), _vi("c", TP.BOOL, []), _vi("h", TP.FLOAT)],
        [_vi("c2", TP.BOOL, []), _vi("h2", TP.FLOAT), _vi("y", TP.FLOAT)])
    inits = [numpy_helper.from_array(np.array(t, np.int64), "M")]
    inits += [numpy_helper.from_array(v, k) for k, v in w.items()]
    m = onnx_model([helper.make_node("Loop", ["M", "", "h0"], ["hT", "ys"], body=body,
                                     name="gated")],
                   [onnx_value("x", [t, n, i]), onnx_value("h0", [n, h])],
                   [onnx_value("hT", [n, h]), onnx_value("ys", [t, n, h])], inits)
    feeds = {"x": rng.standard_normal((t, n, i)).astype(np.float32),
             "h0": rng.standard_normal((n, h)).astype(np.float32)}
    return m, feeds


def _early_stop_model():
    """acc <- acc + x_t, y_t = acc; stops when sum(acc) > limit or after M (a graph input)."""
    body = helper.make_graph([
        helper.make_node("Gather", ["x", "it"], ["xt"], axis=0),
        helper.make_node("Add", ["acc", "xt"], ["acc2"]),
        helper.make_node("ReduceSum", ["acc2"], ["tot"], keepdims=0),
        helper.make_node("Less", ["tot", "limit"], ["go"]),
        helper.make_node("Identity", ["acc2"], ["y"]),
    ], "body", [_vi("it", TP.INT64, []), _vi("c", TP.BOOL, []), _vi("acc", TP.FLOAT)],
        [_vi("go", TP.BOOL, []), _vi("acc2", TP.FLOAT), _vi("y", TP.FLOAT)],
        [numpy_helper.from_array(np.array(6.0, np.float32), "limit")])
    return onnx_model([helper.make_node("Loop", ["M", "c0", "a0"], ["accT", "ys"], body=body,
                                        name="cumsum")],
                      [onnx_value("x", ["T", 2, 3]), onnx_value("a0", [2, 3]),
                       onnx_value("M", [], TP.INT64), onnx_value("c0", [], TP.BOOL)],
                      [onnx_value("accT", [2, 3]), onnx_value("ys", None)])


def _growing_model():
    """seq <- concat(seq, x_t * 2) along axis 0 each step (a carried value that grows)."""
    body = helper.make_graph([
        helper.make_node("Gather", ["x", "it"], ["xt"], axis=0),
        helper.make_node("Mul", ["xt", "two"], ["x2"]),
        helper.make_node("Unsqueeze", ["x2", "zero"], ["x3"]),
        helper.make_node("Concat", ["seq", "x3"], ["seq2"], axis=0),
        helper.make_node("Identity", ["c"], ["c2"]),
    ], "body", [_vi("it", TP.INT64, []), _vi("c", TP.BOOL, []), _vi("seq", TP.FLOAT)],
        [_vi("c2", TP.BOOL, []), _vi("seq2", TP.FLOAT)],
        [numpy_helper.from_array(np.array(2.0, np.float32), "two"),
         numpy_helper.from_array(np.array([0], np.int64), "zero")])
    return onnx_model([helper.make_node("Loop", ["M", "", "s0"], ["seqT"], body=body,
                                        name="grow")],
                      [onnx_value("x", [4, 3])], [onnx_value("seqT", None)],
                      [numpy_helper.from_array(np.array(4, np.int64), "M"),
                       numpy_helper.from_array(np.zeros((1, 3), np.float32), "s0")])


def _check(model, feeds, tol, graph=None):
    want = onnxruntime_run(model, feeds)
    graph = graph or convert(model)
    assert any(n.op == Op.LOOP for n in graph.nodes)
    ref = reference.run(graph, feeds)
    got = Model(graph).run(feeds)
    for k, w in want.items():
        if w.size == 0:       # no iteration: onnxruntime gives (0,), edgeseq (0, *step shape)
            assert ref[k].size == 0 and got[k].shape == ref[k].shape, k
            continue
        assert ref[k].shape == w.shape and got[k].shape == w.shape, k
        assert np.max(np.abs(ref[k] - w)) <= tol["float32"], k
        assert np.max(np.abs(got[k] - ref[k])) <= tol["float32"], k
    return graph


def test_custom_cell_runs_as_a_general_loop(rng, tol):
    model, feeds = _gated_cell_model(rng)
    graph = _check(model, feeds, tol)
    assert [n.op for n in graph.nodes] == [Op.LOOP]


@pytest.mark.parametrize("trips, go", [(9, True), (2, True), (9, False), (0, True)])
def test_early_stop_and_run_time_trip_count(rng, tol, trips, go):
    x = np.abs(rng.standard_normal((9, 2, 3))).astype(np.float32)
    feeds = {"x": x, "a0": np.zeros((2, 3), np.float32), "M": np.array(trips, np.int64),
             "c0": np.array(go)}
    _check(_early_stop_model(), feeds, tol)


def test_carried_value_that_grows(rng, tol):
    feeds = {"x": rng.standard_normal((4, 3)).astype(np.float32)}
    graph = _check(_growing_model(), feeds, tol)
    assert graph.value("seqT").shape[1] == 3


def test_converted_loop_survives_an_artifact(rng, tol, tmp_path):
    model, feeds = _gated_cell_model(rng, t=3, n=1, i=5, h=3)
    graph = convert(model)
    loaded = artifact.load(artifact.save(graph, tmp_path / "gated.eseq"))
    _check(model, feeds, tol, graph=loaded)


def test_a_body_with_an_unsupported_op_is_refused_naming_it(rng):
    model, _ = _gated_cell_model(rng)
    body = model.graph.node[0].attribute[0].g
    body.node[4].op_type = "Softsign"          # Tanh -> an op without a handler
    with pytest.raises(UnsupportedModelError, match=r"'gated' \(Loop\).*general loop.*"
                                                    r"Softsign"):
        convert(model)


def _scan_model():
    """acc <- acc + a_t * b_{T-1-t} (b scanned in reverse along its axis 1); y_t = tanh(acc)."""
    body = helper.make_graph([
        helper.make_node("Mul", ["a_t", "b_t"], ["ab"]),
        helper.make_node("Add", ["acc", "ab"], ["acc2"]),
        helper.make_node("Tanh", ["acc2"], ["y_t"]),
    ], "body", [_vi("acc", TP.FLOAT, [2, 3]), _vi("a_t", TP.FLOAT, [2, 3]),
                _vi("b_t", TP.FLOAT, [2, 3])],
        [_vi("acc2", TP.FLOAT, [2, 3]), _vi("y_t", TP.FLOAT, [2, 3])])
    node = helper.make_node("Scan", ["acc0", "a", "b"], ["accT", "ys"], body=body,
                            num_scan_inputs=2, scan_input_axes=[0, 1],
                            scan_input_directions=[0, 1], name="scan")
    return onnx_model([node], [onnx_value("acc0", [2, 3]), onnx_value("a", [5, 2, 3]),
                               onnx_value("b", [2, 5, 3])],
                      [onnx_value("accT", [2, 3]), onnx_value("ys", [5, 2, 3])])


def test_scan_runs_as_a_general_loop(rng, tol):
    feeds = {"acc0": rng.standard_normal((2, 3)).astype(np.float32),
             "a": rng.standard_normal((5, 2, 3)).astype(np.float32),
             "b": rng.standard_normal((2, 5, 3)).astype(np.float32)}
    _check(_scan_model(), feeds, tol)


def test_scan_output_along_another_axis_is_refused():
    model = _scan_model()
    model.graph.node[0].attribute.append(helper.make_attribute("scan_output_axes", [1]))
    with pytest.raises(UnsupportedModelError, match=r"'scan' \(Scan\).*another axis"):
        convert(model)


def test_loops_nested_beyond_the_limit_are_refused_before_recursing():
    """A file nesting Loop bodies deeper than Limits.loop_depth is refused with the reason,
    without converting (and recursing into) every level."""
    from edgeseq.limits import LIMITS
    body = helper.make_graph([helper.make_node("Identity", ["c"], ["c2"])], "b0",
                             [_vi("it", TP.INT64, []), _vi("c", TP.BOOL, [])],
                             [_vi("c2", TP.BOOL, [])])
    for k in range(LIMITS.loop_depth + 2):
        body = helper.make_graph(
            [helper.make_node("Loop", ["M", ""], [], body=body, name=f"inner{k}"),
             helper.make_node("Identity", ["c"], ["c2"])], f"b{k + 1}",
            [_vi("it", TP.INT64, []), _vi("c", TP.BOOL, [])], [_vi("c2", TP.BOOL, [])])
    model = onnx_model([helper.make_node("Loop", ["M", "", "x"], ["y"], body=helper.make_graph(
        list(body.node) + [helper.make_node("Identity", ["v"], ["v2"])], "top",
        [_vi("it", TP.INT64, []), _vi("c", TP.BOOL, []), _vi("v", TP.FLOAT, [2])],
        [_vi("c2", TP.BOOL, []), _vi("v2", TP.FLOAT, [2])]), name="outer")],
        [onnx_value("x", [2])], [onnx_value("y", [2])],
        [numpy_helper.from_array(np.array(2, np.int64), "M")])
    with pytest.raises(UnsupportedModelError, match=r"nest more than \d+ levels"):
        convert(model)
