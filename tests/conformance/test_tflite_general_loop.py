"""TFLite WHILE loops whose body is no known cell run as a general Loop node
(converters/tflite/general_loop.py) and stream (runtime/loop_stream.py).

Fixtures: tests/fixtures/loops (tools/make_loop_fixtures.py, TensorFlow 2.21): a Keras
`RNN(GatedCell)` with a custom cell h' = tanh(x W + h U) * sigmoid(h V) written by tf-keras
("k2") and Keras 3 ("k3") as TFLite and tf2onnx files, and a tf.while_loop whose condition
depends on the data; tests/fixtures/real_exports: Keras' own LSTM/GRU/SimpleRNN/Masking loops,
run here with the cell patterns disabled. References: Keras' outputs stored beside each file
and the file's own runtime (the TFLite interpreter, onnxruntime).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeseq import reference
from edgeseq.ops import RECURRENT, Op
from edgeseq.runtime import Model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TOL = 1e-5


def _convert(path: Path):
    if path.suffix == ".onnx":
        from edgeseq.converters.onnx import convert
    else:
        from edgeseq.converters.tflite import convert
    return convert(path)


def _own_runtime(path: Path, x: np.ndarray) -> np.ndarray:
    if path.suffix == ".onnx":
        ort = pytest.importorskip("onnxruntime")
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return s.run(None, {s.get_inputs()[0].name: x})[0]
    from edgeseq.converters.tflite.interpreter import interpreter_class
    it = interpreter_class()(model_path=str(path))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def _check(path: Path, chunks=(1, 2, 3)) -> None:
    """One general Loop and no recurrent node; the runtime and the reference match Keras and
    the file's own runtime; streamed in chunks it equals the whole run."""
    graph = _convert(path)
    assert any(n.op is Op.LOOP for n in graph.nodes)
    assert not any(n.op in RECURRENT for n in graph.nodes)
    ref = np.load(path.parent / (path.name.split(".")[0] + ".npz"))
    x, keras_y = ref["x"], ref["y0"]
    x_name, y_name = graph.inputs[0].name, graph.outputs[0].name
    m = Model(graph)
    whole = m.run({x_name: x})[y_name]
    peer = _own_runtime(path, x)
    for got in (whole, reference.run(graph, {x_name: x})[y_name]):
        assert np.max(np.abs(got - keras_y)) <= TOL
        assert np.max(np.abs(got - peer)) <= TOL
    for size in chunks:
        s = m.stream()
        ax = s.axes[y_name]
        parts = [s.push({x_name: x[:, t:t + size]})[y_name] for t in range(0, x.shape[1], size)]
        assert np.max(np.abs(np.concatenate(parts, axis=ax) - whole)) <= 1e-6


@pytest.mark.parametrize("name", ["k2_gated_cell.tflite", "k3_gated_cell.tflite",
                                  "k3_gated_cell.onnx"])
def test_a_custom_keras_cell_runs_as_a_general_loop_and_streams(name):
    if name.endswith(".onnx"):
        pytest.importorskip("onnx")
    _check(FIXTURES / "loops" / name)


@pytest.mark.parametrize("name", ["k3_lstm_dense.tflite_float.tflite",
                                  "k2_gru_ra.tflite_float.tflite",
                                  "k2_masking_lstm.tflite_float.tflite",
                                  "k3_hard_sigmoid.tflite_float.tflite"])
def test_keras_loops_with_the_cell_patterns_off_run_as_general_loops(monkeypatch, name):
    """The TensorList writes (buf[:j] ++ row ++ buf[j+1:]) become stacked rows, the GATHER
    of step j the Loop's iteration; RELU/MINIMUM (hard sigmoid) and SELECT_V2 (a mask) are
    converted inside the body."""
    from edgeseq.converters import loops
    monkeypatch.setattr(loops, "CELLS", {})
    _check(FIXTURES / "real_exports" / name, chunks=(2,))


def test_a_condition_computed_from_the_data_runs_as_it_is_and_does_not_stream(rng):
    """A tf.while_loop that stops when a running sum passes a bound is no scan over time: it
    runs as a Loop with its own condition (converted twice: on the operands, and inside the
    body on the new values), matching the TFLite interpreter whether it stops early or runs
    every step, and TF's own output (tools/make_loop_fixtures.py); it does not stream."""
    from edgeseq.errors import GraphError
    path = FIXTURES / "loops" / "tf_stop_early.tflite"
    graph = _convert(path)
    assert [n.op for n in graph.nodes].count(Op.LOOP) == 1
    assert "condition depends on the data" in " ".join(graph.metadata["conversion_notes"])
    ref = np.load(FIXTURES / "loops" / "tf_stop_early.npz")
    x_name, y_name = graph.inputs[0].name, graph.outputs[0].name
    m = Model(graph)
    assert np.max(np.abs(m.run({x_name: ref["x"]})[y_name] - ref["y0"])) <= TOL
    steps = set()
    for scale in (0.05, 0.12, 1.0):     # all six steps / stops after five / after one
        x = (scale * ref["x"]).astype(np.float32)
        want = _own_runtime(path, x)
        steps.add(int(np.searchsorted(np.abs(x).sum(axis=(1, 2)).cumsum(), 2.0)))
        assert np.max(np.abs(m.run({x_name: x})[y_name] - want)) <= TOL
        assert np.max(np.abs(reference.run(graph, {x_name: x})[y_name] - want)) <= TOL
    assert steps == {6, 4, 0}, "the inputs must stop the loop at different steps"
    with pytest.raises(GraphError, match=r"cannot stream: node '.*' \(Loop\): .*initial "
                                         r"condition"):
        m.stream()


def test_a_keras_loop_run_as_it_is_matches(monkeypatch):
    """The as-is path on a Keras LSTM loop (scan analysis and cell patterns off): counters
    carried, TensorList rows written by Where(rows == j, row, buf), the condition converted;
    it matches Keras and the interpreter."""
    from edgeseq.converters import loops
    from edgeseq.converters.tflite import general_loop
    from edgeseq.converters.tflite.context import Unsupported

    def no_scan(*args):
        raise Unsupported("scan analysis off")
    monkeypatch.setattr(loops, "CELLS", {})
    monkeypatch.setattr(general_loop, "_roles", no_scan)
    path = FIXTURES / "real_exports" / "k3_lstm_dense.tflite_float.tflite"
    graph = _convert(path)
    body = next(n for n in graph.nodes if n.op is Op.LOOP).attrs["body"]
    assert any(n.op is Op.WHERE for n in body.nodes)
    ref = np.load(FIXTURES / "real_exports" / "k3_lstm_dense.npz")
    got = Model(graph).run({graph.inputs[0].name: ref["x"]})[graph.outputs[0].name]
    assert np.max(np.abs(got - ref["y0"])) <= TOL
    assert np.max(np.abs(got - _own_runtime(path, ref["x"]))) <= TOL


def test_a_stateful_layer_as_a_general_loop_carries_its_variables(monkeypatch):
    """A stateful Keras LSTM keeps h and c in TFLite variables between invocations; run as a
    general Loop (cell patterns off) its carried state is the stream's: pushes equal the
    interpreter's successive invocations."""
    from edgeseq.converters import loops
    from edgeseq.converters.tflite.interpreter import interpreter_class
    monkeypatch.setattr(loops, "CELLS", {})
    path = FIXTURES / "real_exports" / "k2_stateful.tflite_float.tflite"
    graph = _convert(path)
    assert any(n.op is Op.LOOP for n in graph.nodes)
    x = np.load(FIXTURES / "real_exports" / "k2_stateful.npz")["x"]
    calls = [x, np.flip(x, axis=1).copy(), x]
    it = interpreter_class()(model_path=str(path))
    it.allocate_tensors()
    stream = Model(graph).stream()
    for k, c in enumerate(calls):
        it.set_tensor(it.get_input_details()[0]["index"], c)
        it.invoke()
        want = it.get_tensor(it.get_output_details()[0]["index"])
        got = stream.push({graph.inputs[0].name: c})[graph.outputs[0].name]
        assert np.max(np.abs(got - want)) <= TOL
        if k == 2:      # the same input as the first call: only the carried state differs
            first = Model(graph).run({graph.inputs[0].name: c})[graph.outputs[0].name]
            assert np.max(np.abs(got - first)) > 1e-3
