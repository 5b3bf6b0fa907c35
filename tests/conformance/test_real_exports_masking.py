"""Keras `Masking` + LSTM as TFLite writes it (NOT_EQUAL/REDUCE_ANY masks feeding a WHILE loop
that reads the mask as a second sequence) and as tf2onnx writes it (Equal/Not/ReduceSum/Greater
feeding a Loop) converts into an LSTM with `sequence_lens`.

References are independent: Keras' outputs stored beside each fixture (tools/real_exports.py)
and the file's own runtime (the TFLite interpreter, onnxruntime). The mapping is exact only
for right-padded masks; any other mask is refused on every call (InputError), not answered
differently.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeseq import reference
from edgeseq.errors import InputError
from edgeseq.ops import Op
from edgeseq.runtime import Model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "real_exports"
FILES = ["k2_masking_lstm.tflite_float.tflite", "k3_masking_lstm.tflite_float.tflite",
         "k2_masking_lstm.onnx13.onnx", "k3_masking_lstm.onnx17.onnx"]
TOL = 1e-5


def _convert(name: str):
    if name.endswith(".onnx"):
        from edgeseq.converters.onnx import convert
    else:
        from edgeseq.converters.tflite import convert
    return convert(FIXTURES / name)


def _own_runtime(name: str, x: np.ndarray) -> np.ndarray:
    if name.endswith(".onnx"):
        ort = pytest.importorskip("onnxruntime")
        s = ort.InferenceSession(str(FIXTURES / name), providers=["CPUExecutionProvider"])
        return s.run(None, {s.get_inputs()[0].name: x})[0]
    from edgeseq.converters.tflite.interpreter import interpreter_class
    it = interpreter_class()(model_path=str(FIXTURES / name))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def _run(graph, x: np.ndarray) -> np.ndarray:
    return Model(graph).run({graph.inputs[0].name: x})[graph.outputs[0].name]


@pytest.mark.parametrize("name", FILES)
def test_masking_loop_becomes_lstm_with_lengths_matching_keras(name):
    graph = _convert(name)
    (lstm,) = [n for n in graph.nodes if n.op == Op.LSTM]
    assert lstm.inputs[1], "the mask did not become sequence_lens"
    ref = np.load(FIXTURES / (name.split(".")[0] + ".npz"))
    x, keras_y = ref["x"], ref["y0"]
    assert np.all(x[0, -2:] == 0) and np.any(x[0, :-2] != 0), "the fixture must be padded"
    got = _run(graph, x)
    assert np.max(np.abs(got - keras_y)) <= TOL
    # Keras repeats the last output on padded steps (not zeros, as sequence_lens alone gives)
    assert np.max(np.abs(got[0, -1] - got[0, -3])) == 0 and np.any(got[0, -1] != 0)


@pytest.mark.parametrize("name", FILES)
def test_every_right_padding_matches_the_files_own_runtime(name):
    """Lengths 0..T (0: every step masked, T: none), by the runtime and the reference."""
    graph = _convert(name)
    rng = np.random.default_rng(7)
    t_len = graph.inputs[0].shape[1]
    for length in range(t_len + 1):
        x = rng.standard_normal(graph.inputs[0].shape).astype(np.float32)
        x[:, length:] = 0.0
        want = _own_runtime(name, x)
        assert np.max(np.abs(_run(graph, x) - want)) <= TOL, length
        got = reference.run(graph, {graph.inputs[0].name: x})[graph.outputs[0].name]
        assert np.max(np.abs(got - want)) <= TOL, length


@pytest.mark.parametrize("name", FILES)
def test_a_mask_that_is_not_a_right_padding_is_refused(name):
    graph = _convert(name)
    x = np.load(FIXTURES / (name.split(".")[0] + ".npz"))["x"].copy()
    x[0, 1] = 0.0          # step 1 masked, steps 2 and 3 not: Keras holds the state over a gap
    with pytest.raises(InputError, match="not a right padding"):
        _run(graph, x)
    with pytest.raises(InputError, match="not a right padding"):
        reference.run(graph, {graph.inputs[0].name: x})


@pytest.mark.parametrize("name", [FILES[0], FILES[2]])
def test_the_masked_probe_rejects_a_lift_without_lengths(monkeypatch, name):
    """The masked loop is verified on a right-padded probe: a node run without the lengths
    (every step taken) does not reproduce it, so no LSTM is lifted: the WHILE loop and the
    ONNX Loop run as a general Loop node, which matches their own runtime."""
    from edgeseq.converters import masks
    real = masks.run_with_lengths
    monkeypatch.setattr(masks, "run_with_lengths", lambda cand, xs, init, lens: real(
        cand, xs, init, np.full_like(lens, xs.shape[0])))
    graph = _convert(name)
    if name.endswith(".tflite"):
        assert "right-padded probe" in " ".join(graph.metadata["conversion_notes"])
    ops = {n.op for n in graph.nodes}
    assert Op.LSTM not in ops and Op.LOOP in ops
    x = np.load(FIXTURES / (name.split(".")[0] + ".npz"))["x"]
    assert np.max(np.abs(_run(graph, x) - _own_runtime(name, x))) <= TOL


def test_right_padding_check_looks_at_every_batch_row():
    from edgeseq import input_checks
    x = np.ones((3, 4, 2), np.float32)
    x[0, 2:] = 0.0                  # padded after 2 steps
    x[1] = 0.0                      # every step masked
    meta: dict = {}
    input_checks.add(meta, "x", "right_padded:0.0@1")

    class G:
        inputs, metadata = [], meta
    input_checks.check(G, {"x": x})
    x[2, 1, :] = 0.0                # row 2: a masked step between unmasked ones
    with pytest.raises(InputError, match=r"batch row \[2\] step 2"):
        input_checks.check(G, {"x": x})
    x[2, 1, 0] = 5.0                # one feature differs from the mask value: unmasked again
    input_checks.check(G, {"x": x})


def test_a_mask_not_computed_from_a_graph_input_is_not_lifted(tmp_path):
    """Right padding can only be checked on a graph input: a loop masked by an intermediate
    value (here any(|x| != 0)) is not lifted into an LSTM with lengths; it runs as a general
    Loop node, exact for any mask (checked on a mask with a hole, against onnxruntime)."""
    onnx = pytest.importorskip("onnx")
    from edgeseq.converters.onnx import convert
    m = onnx.load(FIXTURES / "k2_masking_lstm.onnx13.onnx")
    eq = next(n for n in m.graph.node if n.op_type == "Equal")
    eq.input[0] = "x_abs"
    m.graph.node.insert(0, onnx.helper.make_node("Abs", ["x"], ["x_abs"], name="abs"))
    path = tmp_path / "masked_abs.onnx"
    onnx.save(m, path)
    graph = convert(path)
    ops = {n.op for n in graph.nodes}
    assert Op.LSTM not in ops and Op.LOOP in ops
    x = np.load(FIXTURES / "k2_masking_lstm.npz")["x"].copy()
    x[0, 1] = 0.0                                # a masked step between unmasked ones
    ort = pytest.importorskip("onnxruntime")
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {graph.inputs[0].name: x})[0]
    assert np.max(np.abs(_run(graph, x) - want)) <= TOL
