"""Every unidirectional real export streams: pushed in chunks (of 2, 1, 1, 2 steps: the
first too short for a Conv1D front end's first output), the outputs concatenated along their
time axis (or, for final values such as return_state or return_sequences=False, the last
push's) equal Keras' outputs stored beside the file (tests/fixtures/real_exports, written by
tools/real_exports.py; see test_real_exports.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeseq.errors import GraphError
from edgeseq.ops import RECURRENT, Op
from edgeseq.runtime import Model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "real_exports"
FILES = sorted(p.name for p in FIXTURES.glob("*") if p.suffix in (".tflite", ".onnx"))
TOL = 1e-5
# what does not stream, by design (backward layers, go_backwards) or not yet, and the reason
# the refusal must give
NOT_STREAMING = {"bidi": "only forward streams|reverses the time axis"}


def _convert(path: Path):
    if path.suffix == ".onnx":
        from edgeseq.converters.onnx import convert
    else:
        from edgeseq.converters.tflite import convert
    return convert(path)


def _feeds(graph, path: Path) -> tuple[dict, list]:
    ref = np.load(FIXTURES / (path.name.split(".")[0] + ".npz"))
    arrays = {k: ref[k] for k in ref.files if not k.startswith("y")}
    feeds = {}
    for v in graph.inputs:
        base = v.name.split(":")[0]
        key = next((k for k in sorted(arrays, key=len, reverse=True)
                    if base == k or base.endswith("_" + k) or base.endswith("/" + k)), "x")
        feeds[v.name] = arrays[key]
    return feeds, [ref[k] for k in sorted(k for k in ref.files if k.startswith("y"))]


def _streams(name: str) -> bool:
    return not any(k in name for k in NOT_STREAMING)


@pytest.mark.parametrize("name", FILES)
def test_unidirectional_exports_stream_and_match_keras(name):
    path = FIXTURES / name
    graph = _convert(path)
    backward = any((n.op in RECURRENT and n.attrs.get("direction", "forward") != "forward")
                   or (n.op is Op.SLICE and min(n.attrs["steps"]) < 0) for n in graph.nodes)
    if backward or not _streams(name):
        reason = next((v for k, v in NOT_STREAMING.items() if k in name),
                      NOT_STREAMING["bidi"])
        with pytest.raises(GraphError, match=f"cannot stream: node .*({reason})"):
            Model(graph).stream()
        return
    feeds, keras = _feeds(graph, path)
    x_name = max(feeds, key=lambda n: feeds[n].ndim)
    stream = Model(graph).stream()
    parts, lo = [], 0
    for size in (2, 1, 1, 2):
        chunk = dict(feeds) if lo == 0 else {}      # initial states start the stream only
        chunk[x_name] = feeds[x_name][:, lo:lo + size]
        parts.append(stream.push(chunk))
        lo += size
    assert lo == feeds[x_name].shape[1]
    got = []
    for v in graph.outputs:
        axis = stream.axes.get(v.name)
        got.append(np.concatenate([p[v.name] for p in parts], axis=axis) if axis is not None
                   else parts[-1][v.name])
    free = list(range(len(got)))
    for want in keras:      # outputs matched by shape (converters may reorder them)
        k = next(k for k in free if got[k].shape == want.shape)
        free.remove(k)
        assert np.max(np.abs(got[k] - want)) <= TOL, (name, k)


def test_the_streaming_corpus_covers_the_export_shapes_that_used_to_refuse():
    """Conv1D front ends, return_state, return_sequences=False, initial_state inputs and
    Masking."""
    for kind in ("conv_lstm", "return_state", "stacked", "initial_state", "masking"):
        assert any(kind in f and _streams(f) for f in FILES), kind


@pytest.mark.parametrize("name", [f for f in FILES if "masking" in f])
def test_masked_exports_hold_their_state_over_fully_masked_chunks(name):
    """Right-padded rows whose tail spans whole chunks (each a zero-length chunk for that
    node) equal the whole run (float64 reference of the converted graph, which matches
    Keras per test_real_exports); an unmasked step after a masked chunk is refused."""
    from edgeseq import reference
    from edgeseq.errors import InputError
    graph = _convert(FIXTURES / name)
    feeds, _ = _feeds(graph, FIXTURES / name)
    x_name = max(feeds, key=lambda n: feeds[n].ndim)
    x = np.array(feeds[x_name])
    x[:, 2:] = 0.0          # Keras' mask value: steps 2.. are padding
    want = reference.run(graph, {x_name: x})
    stream = Model(graph).stream()
    parts = [stream.push({x_name: x[:, a:b]}) for a, b in ((0, 1), (1, 3), (3, 4), (4, 6))]
    for v in graph.outputs:
        axis = stream.axes.get(v.name)
        got = np.concatenate([p[v.name] for p in parts], axis=axis) if axis is not None \
            else parts[-1][v.name]
        assert np.max(np.abs(got - want[v.name])) <= TOL, v.name
    with pytest.raises(InputError, match="not a right padding across the stream"):
        stream.push({x_name: np.array(feeds[x_name])[:, :1]})
    stream.reset()
    stream.push({x_name: x[:, 2:4]})


UNROLLED = [f for f in FILES if "unroll" in f]


@pytest.mark.parametrize("name", UNROLLED)
def test_an_unrolled_layer_is_rerolled_into_one_recurrent_node(name):
    """Keras LSTM(unroll=True): T copies of the cell's glue become one LSTM node (no per-step
    split is left), which matches Keras (and, in test_real_exports, the file's own runtime)
    and streams (test_unidirectional_exports_stream_and_match_keras)."""
    graph = _convert(FIXTURES / name)
    assert [n.op for n in graph.nodes if n.op in RECURRENT] == [Op.LSTM]
    assert not any(n.op is Op.SPLIT and len(n.outputs) > 2 for n in graph.nodes)
    feeds, keras = _feeds(graph, FIXTURES / name)
    got = Model(graph).run(feeds)
    assert np.max(np.abs(got[graph.outputs[0].name] - keras[0])) <= TOL


def _unrolled(monkeypatch, name: str):
    """The fixture converted with the re-rolling pass switched off (the T copies kept)."""
    from edgeseq.converters import reroll as reroll_mod
    from edgeseq.converters.onnx import converter as onnx_converter
    monkeypatch.setattr(onnx_converter, "reroll", lambda g: g)
    monkeypatch.setattr(reroll_mod, "reroll", lambda g: g)
    graph = _convert(FIXTURES / name)
    monkeypatch.undo()
    return graph


@pytest.mark.parametrize("step", [1, 3])
def test_a_chain_that_is_not_one_cell_stays_unrolled(monkeypatch, step):
    """One step's input weights perturbed (by 1 %): step 1 is not the step the body is read
    from (only the whole-graph probe sees the difference), step 3 is. Either way the graph
    keeps its T copies and still computes what it did; the unperturbed graph is re-rolled."""
    from edgeseq import reference
    from edgeseq.converters.reroll import _find_stack, _steps, reroll
    name = next(f for f in UNROLLED if f.endswith(".onnx"))
    control = reroll(_unrolled(monkeypatch, name))
    assert any(n.op in RECURRENT for n in control.nodes)
    graph = _unrolled(monkeypatch, name)
    assert not any(n.op in RECURRENT for n in graph.nodes)
    split = next(n for n in graph.nodes if n.op is Op.SPLIT and len(n.outputs) == 6)
    gemm = next(n for n in _steps(graph, split, _find_stack(graph, split))[step]
                if n.op is Op.GEMM)
    w = gemm.inputs[1]
    graph.constants[w + "/perturbed"] = graph.constants[w] * np.float32(1.01)
    gemm.inputs[1] = w + "/perturbed"
    graph.values = {}
    feeds, _ = _feeds(graph, FIXTURES / name)
    want = reference.run(graph, feeds)
    out = reroll(graph)
    assert not any(n.op in RECURRENT for n in out.nodes)
    got = reference.run(out, feeds)
    assert all(np.array_equal(got[k], want[k]) for k in want)


MAPPED = [f for f in FILES if "timedistributed" in f]


@pytest.mark.parametrize("name", MAPPED)
def test_a_per_step_map_is_applied_to_the_whole_sequence(name):
    """Keras 3 TimeDistributed(Dense): T slices, T equal Gemms, a stack become one MatMul on
    the [T, N, H] value (no time slice is left), matching Keras; streaming is checked by
    test_unidirectional_exports_stream_and_match_keras."""
    graph = _convert(FIXTURES / name)
    assert not any(n.op in (Op.SLICE, Op.CONCAT) for n in graph.nodes)
    assert sum(n.op in (Op.MATMUL, Op.GEMM) for n in graph.nodes) == 1
    feeds, keras = _feeds(graph, FIXTURES / name)
    got = Model(graph).run(feeds)
    assert np.max(np.abs(got[graph.outputs[0].name] - keras[0])) <= TOL


def test_copies_with_different_weights_stay_per_step(monkeypatch):
    """One step's Dense weight changed: the copies are not one map, the graph is unchanged."""
    from edgeseq import reference
    from edgeseq.converters.reroll import reroll
    name = next(f for f in MAPPED if f.endswith(".onnx"))
    graph = _unrolled(monkeypatch, name)
    gemms = [n for n in graph.nodes if n.op is Op.GEMM]
    assert len(gemms) == 6
    w = gemms[2].inputs[1]
    graph.constants[w + "/perturbed"] = graph.constants[w] * np.float32(1.01)
    gemms[2].inputs[1] = w + "/perturbed"
    graph.values = {}
    before = [n.name for n in graph.nodes]
    feeds, _ = _feeds(graph, FIXTURES / name)
    want = reference.run(graph, feeds)
    out = reroll(graph)
    assert [n.name for n in out.nodes] == before
    got = reference.run(out, feeds)
    assert all(np.array_equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("name", [f for f in FILES if "layernorm" in f])
def test_layer_norm_as_a_batch_norm_drops_its_unit_scale_and_zero_offset(name):
    """tf-keras LayerNormalization (tf2onnx, TF converter): a batch norm over [1, N*T, H, 1]
    with ones/zeros of size N*T; without those constants the model streams
    (test_unidirectional_exports_stream_and_match_keras) and still matches Keras."""
    graph = _convert(FIXTURES / name)
    for n in graph.nodes:
        if n.op in (Op.MUL, Op.ADD, Op.SUB):
            for i in n.inputs:
                c = graph.constants.get(i)
                assert c is None or c.size < 2 or not (np.all(c == 0) or np.all(c == 1)), n.name
    feeds, keras = _feeds(graph, FIXTURES / name)
    got = Model(graph).run(feeds)
    assert np.max(np.abs(got[graph.outputs[0].name] - keras[0])) <= TOL


def test_neutral_constants_are_dropped_only_where_they_change_nothing():
    """x * 1 and x + 0 become Identity, 0 - x Neg; ones that broadcast x wider and a constant
    that is not neutral stay (float64 reference before and after)."""
    from edgeseq import reference
    from edgeseq.converters.identities import drop_identities
    from edgeseq.graph import Graph, Node, Value
    consts = {"ones": np.ones(3, np.float32), "zeros": np.zeros(3, np.float32),
              "wide": np.ones((4, 2, 3), np.float32), "half": np.full(3, 0.5, np.float32)}
    nodes = [Node("m", Op.MUL, ["x", "ones"], ["a"], {}), Node("s", Op.SUB, ["zeros", "a"], ["b"], {}),
             Node("p", Op.ADD, ["b", "zeros"], ["c"], {}), Node("w", Op.MUL, ["c", "wide"], ["d"], {}),
             Node("h", Op.MUL, ["d", "half"], ["y"], {})]
    g = Graph("g", [Value("x", "float32", (2, 3))], [Value("y", "float32", ())], nodes, consts)
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    want = reference.run(g.copy(), {"x": x})["y"]
    out = drop_identities(g)
    assert [n.op for n in out.nodes] == [Op.IDENTITY, Op.NEG, Op.IDENTITY, Op.MUL, Op.MUL]
    assert np.array_equal(reference.run(out, {"x": x})["y"], want)
