"""An int8 TFLite file of Keras `LSTM(unroll=True)` (tests/fixtures/real_exports/int8, written
by tools/real_exports.py with TF 2.21's converter; the .npz holds the input and Keras' output)
is re-rolled into one LSTM node although its per-step copies of the glue constants are
quantised at different scales: the re-rolled graph is checked against the unrolled one within
half the output's quantisation step (converters/reroll.py `_bounds`) instead of 1e-5.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseq import reference
from edgeseq.ops import RECURRENT, Op
from edgeseq.runtime import Model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "real_exports" / "int8"
FILE = FIXTURES / "k2_unroll.tflite_int8.tflite"


def _convert_unrolled(monkeypatch):
    """The file converted with re-rolling switched off, and the quantisation steps the
    converter hands to it."""
    from edgeseq.converters import reroll as reroll_mod
    from edgeseq.converters.tflite import convert
    seen = {}

    def keep(graph, steps=None):
        seen["steps"] = steps
        return graph
    monkeypatch.setattr(reroll_mod, "reroll", keep)
    graph = convert(FILE)
    monkeypatch.undo()
    return graph, seen["steps"]


def test_int8_unrolled_file_is_rerolled_and_streams():
    from edgeseq.converters.tflite import convert
    from edgeseq.converters.tflite.interpreter import interpreter_class
    graph = convert(FILE)
    assert [n.op for n in graph.nodes if n.op in RECURRENT] == [Op.LSTM]
    assert not any(n.op is Op.SPLIT for n in graph.nodes)
    ref = np.load(FIXTURES / "k2_unroll.npz")
    x, keras = ref["x"], ref["y0"]
    model = Model(graph)
    out = graph.outputs[0].name
    got = model.run({graph.inputs[0].name: x})[out]
    it = interpreter_class()(model_path=str(FILE))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    peer = it.get_tensor(it.get_output_details()[0]["index"])
    # docs/tflite.md's int8 bound: twice the interpreter's own deviation from Keras plus 0.05
    assert np.max(np.abs(got - peer)) <= 2 * np.max(np.abs(peer - keras)) + 0.05
    stream = model.stream()
    parts = [stream.push({graph.inputs[0].name: x[:, a:b]})[out] for a, b in ((0, 2), (2, 3), (3, 6))]
    assert np.max(np.abs(np.concatenate(parts, axis=stream.axes[out]) - got)) <= 1e-6


def test_the_bound_comes_from_the_output_scale(monkeypatch):
    """Without the file's quantisation steps the probe's 1e-5 keeps the copies; with them the
    re-rolled graph is further than 1e-5 from the unrolled one but within half an output step."""
    from edgeseq.converters.reroll import _bounds, reroll
    graph, steps = _convert_unrolled(monkeypatch)
    assert not any(n.op in RECURRENT for n in graph.nodes)
    assert not any(n.op in RECURRENT for n in reroll(graph.copy()).nodes)
    bound = _bounds(graph, steps)[graph.outputs[0].name]
    assert 0 < bound < 0.01
    rerolled = reroll(graph.copy(), steps)
    assert [n.op for n in rerolled.nodes if n.op in RECURRENT] == [Op.LSTM]
    x = np.random.default_rng(1).standard_normal(graph.inputs[0].shape).astype(np.float32)
    name = graph.outputs[0].name
    diff = np.max(np.abs(reference.run(rerolled, {graph.inputs[0].name: x})[name]
                         - reference.run(graph, {graph.inputs[0].name: x})[name]))
    assert 1e-5 < diff <= bound
