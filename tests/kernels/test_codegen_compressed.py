"""The whole-graph compiler on compressed recurrent weights (runtime/codegen/compressed_ops.py):
int8 with int16 and with int8 activations, float16, a factored W_h (svd), an LSTMP
projection, for LSTM, GRU (both reset forms) and RNN. The generated code calls the kernels
the interpreter calls, so its results are the interpreter's bit for bit (whole sequences and
streams in two chunkings), and within the compression tolerances of the float graph's
reference. To keep compile time small, each check builds one graph holding several
independent nodes side by side (one generated function each)."""
from __future__ import annotations

import numpy as np

from edgeseq import reference
from edgeseq.graph import Graph, Node, Value
from edgeseq.quant import activations, fp16, int8, svd
from edgeseq.runtime import Model
from edgeseq.testing import gru_graph, lstm_graph, random_inputs, rnn_graph


def _side_by_side(parts: list[tuple[str, Graph]], acts: str) -> Graph:
    """One graph running each part's (one-node) graph on its own inputs, names prefixed by
    the part's key; int8 products with `acts` activations."""
    ins, outs, nodes, consts = [], [], [], {}

    def ren(p, n):
        return p + n if n else n
    for p, g in parts:
        p += "_"
        ins += [Value(p + v.name, v.dtype, v.shape) for v in g.inputs]
        outs += [Value(p + v.name, v.dtype, v.shape) for v in g.outputs]
        nodes += [Node(p + n.name, n.op, [ren(p, i) for i in n.inputs],
                       [ren(p, o) for o in n.outputs], dict(n.attrs),
                       {s: p + c for s, c in n.weights.items()}) for n in g.nodes]
        consts.update({p + k: v for k, v in g.constants.items()})
    return activations.apply(Graph("side_by_side", ins, outs, nodes, consts).validate(), acts)


def _q8(g):
    return int8.apply(g)[0]


def _build(parts: dict) -> tuple[list, list, dict]:
    """([(key, float graph)], [(key, compressed graph)], {key: tolerance key}) of parts
    {key: (float graph, compress fn, tolerance key)}."""
    floats = [(k, f) for k, (f, _, _) in parts.items()]
    return floats, [(k, c(f)) for k, (f, c, _) in parts.items()], \
        {k: t for k, (_, _, t) in parts.items()}


def _streamed(model, g, x, cuts) -> dict:
    """Outputs of a stream fed in chunks of the given lengths along each input's time axis
    (initial states with the first chunk only)."""
    s = model.stream()
    got, at = [], 0
    timed = {v.name: (v.shape.index("T") if "T" in v.shape else None) for v in g.inputs}
    for c in cuts:
        feed = {k: (np.take(a, range(at, at + c), axis=timed[k]) if timed[k] is not None else a)
                for k, a in x.items() if timed[k] is not None or at == 0}
        got.append(s.push(feed))
        at += c
    time_axis = {v.name: v.shape.index("T") for v in g.outputs if "T" in v.shape}
    # outputs over time concatenated, final states from the last chunk
    return {k: np.concatenate([o[k] for o in got], axis=time_axis[k]) if k in time_axis
            else got[-1][k] for k in got[-1]}


def _check(rng, parts, acts, tol, stream: bool):
    """stream: also push the inputs in two chunkings, which must equal the full run bit for
    bit (integer and float products alike compute each vector the same way however many
    vectors a call holds)."""
    floats, compressed, tols = _build(parts)
    g = _side_by_side(compressed, acts)
    gen, interp = Model(g, codegen=True), Model(g, codegen=False)
    assert "codegen: one compiled call" in gen.describe(), gen.describe()
    assert "QUANT." in gen.source()
    x = random_inputs(g, rng, 7, 3)
    want = interp.run(x)
    got = gen.run(x)
    for k in want:
        assert np.array_equal(got[k], want[k]), (k, np.max(np.abs(got[k] - want[k])))
    # the compression's error against the float graph's reference
    ref = reference.run(_side_by_side(floats, "int16"), x)
    for k in want:
        assert np.max(np.abs(got[k] - ref[k])) <= tol[tols[k.split("_")[0]]], k
    if not stream:
        return
    for cuts in ((1, 3, 3), (4, 2, 1)):
        got, same = _streamed(gen, g, x, cuts), _streamed(interp, g, x, cuts)
        assert got.keys() == want.keys()
        assert all(np.array_equal(got[k], same[k]) for k in got), cuts
        for k in got:
            assert np.array_equal(got[k], want[k]), (cuts, k)


def test_int16_activations_fp16_svd_lstmp_generated_equal_interpreter(rng, tol):
    """int8 weights with int16 activations (64 columns: integer products), float16, an int8
    factored W_h, an int8 LSTMP projection; GRU and RNN; streamed in two chunkings equal to
    the interpreter's stream and to the full run bit for bit."""
    parts = {
        "lstm8": (lstm_graph(rng, 64, 64), _q8, "int8_small_lstm"),
        "lstm16": (lstm_graph(rng, 5, 9, peephole=True, batch_first=True,
                              initial_state=True), lambda g: fp16.apply(g)[0],
                   "fp16_small_lstm"),
        "svd": (svd.apply(lstm_graph(rng, 6, 64), rank=48)[0], _q8, "int8_small_lstm"),
        "lstmp": (lstm_graph(rng, 6, 64, proj_size=8), _q8, "int8_small_lstm"),
        "gru": (gru_graph(rng, 7, 11), _q8, "int8_small_lstm"),
        "rnn16": (rnn_graph(rng, 7, 11), lambda g: fp16.apply(g)[0], "fp16_small_lstm"),
    }
    _check(rng, parts, "int16", tol, stream=True)


def test_int8_activations_generated_equal_interpreter(rng, tol):
    """int8 activations (kernels.s8dot): LSTM with a projection, GRU both reset forms (one
    factored: U, V pairs), RNN; streamed in two chunkings equal to the full run bit for bit
    (integer products)."""
    parts = {
        "lstmp": (lstm_graph(rng, 7, 21, proj_size=6, proj_bias=True), _q8, "int8_small_lstm"),
        "gru0": (svd.apply(gru_graph(rng, 7, 21), rank=16)[0], _q8, "int8_small_lstm"),
        "gru1": (gru_graph(rng, 7, 21, linear_before_reset=True, batch_first=True,
                           initial_state=True), _q8, "int8_small_lstm"),
        "rnn": (rnn_graph(rng, 7, 21), _q8, "int8_small_lstm"),
    }
    _check(rng, parts, "int8", tol, stream=True)


def test_bidirectional_lengths_batch_first_generated_equal_interpreter(rng, tol):
    """The second direction, lengths and batch_first through the shared frame (one small
    node: every generated function links its kernels, and compiling is what costs)."""
    parts = {"rnn": (rnn_graph(rng, 7, 21, direction="bidirectional", batch_first=True,
                               seq_lens=True), _q8, "int8_small_lstm")}
    _check(rng, parts, "int8", tol, stream=False)
