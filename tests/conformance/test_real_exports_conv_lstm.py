"""Keras ConvLSTM1D / ConvLSTM2D as real converter outputs (TFLite WHILE loops whose body
convolves x_t and h): the loop lifts into one ConvLSTM node (converters/loops_conv.py) that
matches Keras' own outputs (stored in the fixture .npz) and the file's own runtime, and a
forward one streams in chunks like the whole run. Fixtures: tools/real_exports.py (tf-keras
"k2", Keras 3 "k3"), padding same / valid, hard_sigmoid, dilation, go_backwards, last step
only."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeseq.ops import Op
from edgeseq.runtime import Model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "real_exports"
FILES = sorted(p.name for p in FIXTURES.glob("k*_convlstm*") if p.suffix in (".tflite", ".onnx"))
TOL = 1e-5


def _convert(path: Path):
    if path.suffix == ".onnx":
        from edgeseq.converters.onnx import convert
    else:
        from edgeseq.converters.tflite import convert
    return convert(path)


def _peer(path: Path, x: np.ndarray) -> np.ndarray:
    if path.suffix == ".onnx":
        import onnxruntime as ort
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return s.run(None, {s.get_inputs()[0].name: x})[0]
    from edgeseq.converters.tflite.interpreter import interpreter_class
    it = interpreter_class()(model_path=str(path))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def test_fixtures_present():
    assert {"k2_convlstm2d", "k3_convlstm2d", "k2_convlstm1d", "k3_convlstm1d"} <= \
        {f.split(".")[0] for f in FILES}


@pytest.mark.parametrize("name", FILES)
def test_conv_lstm_loop_lifted_matches_keras_and_own_runtime(name):
    path = FIXTURES / name
    ref = np.load(FIXTURES / (name.split(".")[0] + ".npz"))
    graph = _convert(path)
    assert [n.op for n in graph.nodes].count(Op.CONV_LSTM) == 1
    model = Model(graph)
    x_name = graph.inputs[0].name
    got = model.run({x_name: ref["x"]})[graph.outputs[0].name]
    assert got.shape == ref["y0"].shape
    assert np.max(np.abs(got - ref["y0"])) <= TOL
    assert np.max(np.abs(got - _peer(path, ref["x"]))) <= TOL
    if "dilated" in name:        # go_backwards: the loop reads the reversed input
        return
    stream = model.stream()
    parts = [stream.push({x_name: ref["x"][:, lo:hi]})[graph.outputs[0].name]
             for lo, hi in ((0, 2), (2, 3), (3, ref["x"].shape[1]))]
    if got.ndim == ref["x"].ndim:    # return_sequences: the chunks' steps
        assert np.max(np.abs(np.concatenate(parts, axis=1) - got)) <= 1e-6
    else:                            # the last step: the final push's
        assert np.max(np.abs(parts[-1] - got)) <= 1e-6


def test_a_conv_body_no_candidate_reproduces_runs_as_a_general_loop(monkeypatch):
    """Verification decides: with every ConvLSTM candidate's weights perturbed by 0.1 %, the
    lifted node no longer reproduces the loop and no ConvLSTM is lifted (the notes say why):
    the WHILE runs as a general Loop whose body convolves, which matches Keras."""
    from edgeseq.converters import loops, loops_conv  # noqa: F401  (registers conv_lstm)

    real = loops.CELLS["conv_lstm"]

    def perturbed(step):
        cands = real(step)
        for c in cands:
            c.weights = {k: w * 1.001 for k, w in c.weights.items()}
        return cands
    monkeypatch.setitem(loops.CELLS, "conv_lstm", perturbed)
    name = next(f for f in FILES if f.startswith("k3_convlstm2d.") and f.endswith(".tflite"))
    graph = _convert(FIXTURES / name)
    assert not any(n.op is Op.CONV_LSTM for n in graph.nodes)
    assert any(n.op is Op.LOOP for n in graph.nodes)
    msg = " ".join(graph.metadata["conversion_notes"])
    assert "WHILE" in msg and "conv_lstm: the dataflow matched but no variant reproduced" in msg
    ref = np.load(FIXTURES / (name.split(".")[0] + ".npz"))
    got = Model(graph).run({graph.inputs[0].name: ref["x"]})[graph.outputs[0].name]
    assert np.max(np.abs(got - ref["y0"])) <= TOL


def test_feature_map_loops_are_not_bounded_as_unit_vector_probing():
    """A 48x40 ConvLSTM2D (15 360 state values) is read from its convolutions, not probed
    feature by feature: the width-squared bound of unit-vector probing does not refuse it
    (a vector cell of that width still is)."""
    from edgeseq.converters import loops, loops_conv  # noqa: F401  (registers conv_lstm)
    size = 48 * 40 * 8
    step = loops.Step(lambda x, s, o: {}, [], "x", ["h", "c"], ["h1", "c1"], None, 1,
                      48 * 40 * 4, [size, size], (1, 48, 40, 4), [(1, 48, 40, 8)] * 2)
    with pytest.raises(loops.NoMatch) as e:
        loops.lift(step, None, 4)
    assert "too large" not in str(e.value) and "0 convolutions of x_t" in str(e.value)
    step.x_shape = step.state_shapes = None
    with pytest.raises(loops.NoMatch, match="too large to verify"):
        loops.lift(step, None, 4)
