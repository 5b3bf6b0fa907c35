"""Real converter outputs whose recurrent layers are loops (TFLite WHILE, ONNX Loop) convert into
LSTM/GRU/RNN nodes and match the references written beside them.

The fixtures (tests/fixtures/real_exports) were written by tools/real_exports.py with
TensorFlow 2.21's TFLite converter and tf2onnx 1.17 from tiny Keras models (tf-keras "k2",
Keras 3 "k3"); each `<model>.npz` holds the fixed inputs and Keras' own outputs y0, y1, ...
The file's own runtime (the TFLite interpreter, onnxruntime) is a second reference.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeseq.ops import RECURRENT, Op
from edgeseq.runtime import Model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "real_exports"
FILES = sorted(p.name for p in FIXTURES.glob("*") if p.suffix in (".tflite", ".onnx"))
FLOAT_TOL = 1e-5


def _convert(path: Path):
    if path.suffix == ".onnx":
        from edgeseq.converters.onnx import convert
    else:
        from edgeseq.converters.tflite import convert
    return convert(path)


def _reference(path: Path) -> tuple[dict, list]:
    ref = np.load(FIXTURES / (path.name.split(".")[0] + ".npz"))
    feeds = {k: ref[k] for k in ref.files if not k.startswith("y")}
    ys = [ref[k] for k in sorted(k for k in ref.files if k.startswith("y"))]
    return feeds, ys


def _feed(graph, feeds: dict) -> dict:
    """Graph input -> fixture array ('serving_default_h0:0' -> h0, anything else -> x)."""
    out = {}
    for v in graph.inputs:
        base = v.name.split(":")[0]
        key = next((k for k in sorted(feeds, key=len, reverse=True)
                    if base == k or base.endswith("_" + k) or base.endswith("/" + k)), "x")
        out[v.name] = feeds[key]
    return out


def _paired(got: list, want: list) -> list:
    """Outputs matched by shape (converters may reorder them)."""
    free, pairs = list(range(len(got))), []
    for w in want:
        k = next(k for k in free if np.shape(got[k]) == np.shape(w))
        free.remove(k)
        pairs.append((got[k], w))
    return pairs


def _peer(path: Path, graph, feeds: dict) -> list:
    if path.suffix == ".onnx":
        ort = pytest.importorskip("onnxruntime")
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return s.run(None, {i.name: _feed(graph, feeds)[i.name] if i.name in _feed(graph, feeds)
                            else feeds["x"] for i in s.get_inputs()})
    from edgeseq.converters.tflite.interpreter import interpreter_class
    it = interpreter_class()(model_path=str(path))
    it.allocate_tensors()
    fed = _feed(graph, feeds)
    for d, v in zip(it.get_input_details(), graph.inputs):
        it.set_tensor(d["index"], fed[v.name])
    it.invoke()
    return [it.get_tensor(d["index"]) for d in it.get_output_details()]


@pytest.mark.parametrize("name", FILES)
def test_loop_lifted_and_matches_keras_and_own_runtime(name):
    path = FIXTURES / name
    graph = _convert(path)
    assert any(n.op in RECURRENT for n in graph.nodes), "no recurrent node: the loop was not lifted"
    feeds, keras_y = _reference(path)
    out = Model(graph).run(_feed(graph, feeds))
    got = [out[v.name] for v in graph.outputs]
    assert len(got) == len(keras_y)
    for a, b in _paired(got, keras_y):
        assert np.max(np.abs(a - b)) <= FLOAT_TOL
    for a, b in _paired(got, _peer(path, graph, feeds)):
        assert np.max(np.abs(a - b)) <= FLOAT_TOL


def test_fixtures_cover_both_formats_and_every_cell():
    """The corpus subset keeps a loop of every lifted kind in both formats."""
    assert any(f.endswith(".tflite") for f in FILES) and any(f.endswith(".onnx") for f in FILES)
    ops = set()
    for name in FILES:
        ops |= {n.op.value for n in _convert(FIXTURES / name).nodes if n.op in RECURRENT}
    assert {"LSTM", "GRU", "RNN"} <= ops


def _first(suffix: str) -> Path:
    return FIXTURES / next(f for f in FILES if f.endswith(suffix) and "lstm_dense" in f)


@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
def test_a_body_no_cell_reproduces_runs_as_a_general_loop(monkeypatch, suffix):
    """Verification is what accepts a lift: with every candidate perturbed, the matched
    dataflow no longer reproduces the loop and no cell is lifted: the WHILE loop and the ONNX
    Loop run as a general Loop node (their bodies convert), which still matches Keras; the
    conversion notes say why no cell was lifted."""
    from edgeseq.converters import loops

    real = dict(loops.CELLS)

    def perturbed(match):
        def wrapped(step):
            cands = match(step)
            for c in cands:
                c.weights = {k: w * 1.001 for k, w in c.weights.items()}
            return cands
        return wrapped
    monkeypatch.setattr(loops, "CELLS", {k: perturbed(f) for k, f in real.items()})
    graph = _convert(_first(suffix))
    assert not any(n.op in RECURRENT for n in graph.nodes)
    assert any(n.op == Op.LOOP for n in graph.nodes)
    feeds, keras_y = _reference(_first(suffix))
    out = Model(graph).run(_feed(graph, feeds))
    for a, b in _paired([out[v.name] for v in graph.outputs], keras_y):
        assert np.max(np.abs(a - b)) <= FLOAT_TOL
    if suffix == ".tflite":
        notes = " ".join(graph.metadata["conversion_notes"])
        assert "operator #" in notes and "WHILE" in notes and "general Loop" in notes
        assert "no variant reproduced the loop" in notes


def test_probe_rejects_a_wrong_gate_order():
    """A candidate whose gates are permuted is rejected by the numeric probe (and the right
    one is accepted): the probe, not the pattern, decides."""
    from edgeseq.converters import loops

    rng = np.random.default_rng(3)
    hs, n_in = 4, 3
    w = {"w_x": rng.standard_normal((4 * hs, n_in)), "w_h": rng.standard_normal((4 * hs, hs)),
         "b": rng.standard_normal(4 * hs)}
    attrs = {"hidden_size": hs}
    right = loops.Candidate(Op.LSTM, attrs, w, 0, 1)
    perm = np.r_[hs:2 * hs, 0:hs, 2 * hs:4 * hs]       # i and f swapped
    wrong = loops.Candidate(Op.LSTM, attrs, {k: v[perm] for k, v in w.items()}, 0, 1)

    def loop(xs, init):   # the "model": the right cell, run by the reference
        return loops.run_candidate(right, xs, init)
    xs = rng.standard_normal((5, 1, n_in))
    init = [rng.standard_normal((1, hs)) * 0.5 for _ in range(2)]
    assert loops.verify(right, loop, xs, init) <= loops.TOLERANCE
    assert loops.verify(wrong, loop, xs, init) > 100 * loops.TOLERANCE


# Unidirectional fixtures: a stream fed in chunks reproduces the whole-sequence run.
STREAMS = ["k3_lstm_dense.tflite_float.tflite", "k3_lstm_dense.onnx13.onnx",
           "k3_gru_ra.tflite_float.tflite", "k3_gru_ra.onnx17.onnx",
           "k2_gru_rb.onnx13.onnx", "k2_simplernn.onnx13.onnx",
           "k2_simplernn.tflite_float.tflite", "k3_hard_sigmoid.tflite_float.tflite",
           "k2_stateful.tflite_float.tflite"]


@pytest.mark.parametrize("name", STREAMS)
def test_lifted_loop_streams(name):
    path = FIXTURES / name
    graph = _convert(path)
    feeds = _feed(graph, _reference(path)[0])
    model = Model(graph)
    whole = model.run(feeds)
    stream = model.stream()
    (x_name,) = feeds
    parts = [stream.push({x_name: feeds[x_name][:, lo:hi]}) for lo, hi in ((0, 2), (2, 3), (3, 6))]
    for v in graph.outputs:
        got = np.concatenate([p[v.name] for p in parts], axis=1)
        assert np.max(np.abs(got - whole[v.name])) <= FLOAT_TOL


def test_stateful_model_carries_state_like_the_interpreter():
    """A stateful Keras layer keeps h and c in TFLite variables between invocations; the
    converted model's stream carries them the same way (two calls, compared call by call)."""
    from edgeseq.converters.tflite.interpreter import interpreter_class
    path = FIXTURES / "k2_stateful.tflite_float.tflite"
    graph = _convert(path)
    x = _reference(path)[0]["x"]
    calls = [x, np.flip(x, axis=1).copy()]
    it = interpreter_class()(model_path=str(path))
    it.allocate_tensors()
    theirs = []
    for c in calls:
        it.set_tensor(it.get_input_details()[0]["index"], c)
        it.invoke()
        theirs.append(it.get_tensor(it.get_output_details()[0]["index"]).copy())
    assert np.max(np.abs(theirs[1] - Model(graph).run({graph.inputs[0].name: calls[1]})[
        graph.outputs[0].name])) > 1e-3, "the second call must depend on the carried state"
    stream = Model(graph).stream()
    for c, want in zip(calls, theirs):
        got = stream.push({graph.inputs[0].name: c})[graph.outputs[0].name]
        assert np.max(np.abs(got - want)) <= FLOAT_TOL


def test_a_loop_too_long_to_probe_is_refused_not_run(monkeypatch):
    """The probe's work is bounded: a loop longer than the limit is not lifted (the reason is
    noted; it runs as a general Loop), and a loop whose index arithmetic runs longer than the
    scan checker's bound is not checked further: it runs as it is, with its own condition
    (a hostile file may declare any length; the run is bounded by Limits.loop_iterations)."""
    from edgeseq.converters import loops
    from edgeseq.converters.tflite import general_loop
    monkeypatch.setattr(loops, "MAX_PROBE_STEPS", 3)
    graph = _convert(_first(".tflite"))
    assert not any(n.op in RECURRENT for n in graph.nodes)
    assert "too large to verify on a probe" in " ".join(graph.metadata["conversion_notes"])
    monkeypatch.setattr(general_loop, "_MAX_TRIPS", 3)
    graph = _convert(_first(".tflite"))
    loop = next(n for n in graph.nodes if n.op is Op.LOOP)
    assert not loop.inputs[0], "no trip count: the loop runs with its own condition"
    assert "still holds after 3 iterations" in " ".join(graph.metadata["conversion_notes"])
