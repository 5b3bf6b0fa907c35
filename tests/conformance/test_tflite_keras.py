"""Models made by TensorFlow's own converter from Keras LSTMs (tf-keras 2.21 with
TF_USE_LEGACY_KERAS=1; tools/make_keras_tflite_fixtures.py, run offline, wrote the files in
tests/fixtures/tflite/ together with Keras' own output on a fixed input). edgeseq is checked
against the TFLite interpreter and against Keras itself."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edgeseq import reference
from edgeseq.converters.tflite import convert
from edgeseq.converters.tflite.interpreter import run_tflite
from edgeseq.runtime import Model

# the hybrid bound lives with the other conformance tests; the fixture tool gives the spec type
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import make_tflite_fixtures as fx  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tflite"


def _case(name: str):
    path = FIXTURES / f"{name}.tflite"
    ref = np.load(FIXTURES / f"{name.rsplit('_', 1)[0]}.npz")
    g = convert(path)
    feeds = {g.inputs[0].name: ref["x"]}
    ours = reference.run(g, feeds)[g.outputs[0].name]
    theirs = next(iter(run_tflite(path, feeds).values()))
    return g, feeds, ours, theirs, ref["y"]


def _err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


@pytest.mark.parametrize("name", ["keras_stacked_float", "keras_bidi_float"])
def test_keras_float(tol, name):
    g, feeds, ours, theirs, keras_y = _case(name)
    assert "LSTM" in {n.op.value for n in g.nodes}
    assert g.inputs[0].shape[1] == "T"          # time axis left open
    assert _err(ours, theirs) <= tol["float32"]
    assert _err(ours, keras_y) <= tol["float32"]
    assert _err(Model(g).run(feeds)[g.outputs[0].name], theirs) <= tol["float32"]


@pytest.mark.parametrize("name", ["keras_stacked_fp16", "keras_bidi_fp16"])
def test_keras_float16_weights(tol, name):
    """float16 weights behind DEQUANTIZE are folded: TFLite and edgeseq use the same
    fp16-rounded values (1e-5), both ~1e-4 from Keras' float32 weights."""
    g, feeds, ours, theirs, keras_y = _case(name)
    assert _err(ours, theirs) <= tol["float32"]
    assert _err(ours, keras_y) <= 1e-3


@pytest.mark.parametrize("name", ["keras_stacked_int8", "keras_bidi_int8"])
def test_keras_integer_glue(name):
    """TF's full-integer conversion quantises the glue ops (int8 activations) and keeps the
    LSTM float; edgeseq runs the dequantised weights with float activations, so it stays
    closer to Keras than TFLite's int8 kernels do (measured 2.7e-4 vs 1.2e-3 and 2.5e-3 vs
    0.17)."""
    g, feeds, ours, theirs, keras_y = _case(name)
    assert g.inputs[0].shape[1] == "T"          # found through the QUANTIZE in front
    assert _err(ours, keras_y) <= min(1e-2, _err(theirs, keras_y))


def test_keras_hybrid_within_derived_bound(tol):
    """TF's dynamic-range quantiser: int8 LSTM weights (op version 3, asymmetric input
    quantisation). Step by step from TFLite's own state (its variable tensors, with the input
    resized to one step), the LSTM output is within the one-step hybrid bound of
    test_tflite_converter.hybrid_bound; whole sequences: edgeseq is as close to Keras as
    TFLite's hybrid kernel is."""
    from importlib.util import module_from_spec, spec_from_file_location
    from edgeseq.converters.tflite.interpreter import TfliteSession
    from edgeseq.graph import Value
    spec = spec_from_file_location("tflite_conformance",
                                   Path(__file__).with_name("test_tflite_converter.py"))
    conf = module_from_spec(spec)
    spec.loader.exec_module(conf)
    g, feeds, ours, theirs, keras_y = _case("keras_lstm40_hybrid")
    assert _err(ours, keras_y) <= 1.5 * _err(theirs, keras_y)
    lstm = next(n for n in g.nodes if n.op.value == "LSTM")
    assert g.weight(lstm, "w_x").dtype == np.int8 and g.weight(lstm, "w_h").dtype == np.int8
    h = lstm.attrs["hidden_size"]
    w_x, w_h = (reference.recurrent_weight(g, lstm, s)[0] for s in ("w_x", "w_h"))
    b = g.weight(lstm, "b")[0]
    w = {}
    for k in range(4):
        rows = slice(k * h, (k + 1) * h)
        w[1 + k], w[5 + k], w[12 + k] = w_x[rows], w_h[rows], b[rows]
    # the LSTM alone, its initial state as inputs h0, c0
    cell = g.copy()
    cell.nodes = [cell.node(lstm.name)]
    cell.outputs = [Value(lstm.outputs[0], "float32", ())]
    cell = conf.with_initial_state(cell)
    x = feeds[g.inputs[0].name]
    s = fx.LstmSpec(n_input=x.shape[2], n_cell=h, time_major=False, n_batch=1, n_time=1,
                    hybrid="asym")
    sess = TfliteSession(FIXTURES / "keras_lstm40_hybrid.tflite")
    sess.it.resize_tensor_input(sess.it.get_input_details()[0]["index"], [1, 1, x.shape[2]])
    sess.it.allocate_tensors()
    # the state operands 18 (output state) and 19 (cell state) of the fused op; interpreter
    # tensor indices are the file's tensor indices
    from edgeseq.converters.tflite import reader
    from edgeseq.converters.tflite.slots import LstmSlot
    loaded = reader.load(FIXTURES / "keras_lstm40_hybrid.tflite")
    op = next(o for o in loaded.model.subgraphs[0].operators
              if reader.op_name(reader.builtin_code(loaded.model.operatorCodes[o.opcodeIndex]))
              == "UNIDIRECTIONAL_SEQUENCE_LSTM")
    h_idx, c_idx = op.inputs[LstmSlot.OUTPUT_STATE], op.inputs[LstmSlot.CELL_STATE]
    worst = 0.0
    for t in range(x.shape[1]):
        h0, c0 = sess.it.get_tensor(h_idx).copy(), sess.it.get_tensor(c_idx).copy()
        sess.run({g.inputs[0].name: x[:, t:t + 1]})
        h1 = sess.it.get_tensor(h_idx)
        got = reference.run(cell, {g.inputs[0].name: x[:, t:t + 1], "h0": h0[:, None],
                                   "c0": c0[:, None]})[lstm.outputs[0]][:, 0, 0]
        _, bound = conf.hybrid_bound(s, w, x[:, t:t + 1], h0, c0)
        err = np.abs(got - h1)
        assert np.all(err <= bound[:, 0] + tol["float32"]), (t, err.max(), bound.max())
        worst = max(worst, float(err.max()))
    assert worst > 0


def test_keras3_while_loop_lifted():
    """Keras 3 turns an LSTM into a WHILE loop: lifted into one LSTM node (verified on a probe
    at conversion) that matches the TFLite interpreter on a random sequence."""
    path = FIXTURES / "keras3_lstm_while.tflite"
    g = convert(path)
    assert [n.op.value for n in g.nodes if n.op.value in ("LSTM", "GRU", "RNN")] == ["LSTM"]
    x = np.random.default_rng(5).standard_normal((1, 10, 8)).astype(np.float32)
    feeds = {g.inputs[0].name: x}
    theirs = next(iter(run_tflite(path, feeds).values()))
    assert _err(Model(g).run(feeds)[g.outputs[0].name], theirs) <= 1e-5