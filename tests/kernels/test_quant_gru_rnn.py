"""GRU and RNN with int8 activations (`--activations int8`): W_x and a dense W_h multiply
int8-quantised vectors in exact integer arithmetic (kernels.s8dot through
kernels.quantized_rnn8), the bits defined by the float64 reference (`int8_product`, with the
reference's GRU/RNN steps taking it as their product). Checked: runtime vs that reference
(odd sizes, padding past 16 rows, batch 1 and >1, lengths, both GRU reset forms, reverse and
bidirectional), streaming in chunks equal to the full run, and the activation quantisation's
error against the same graph with exact activations within its derived bound; a factored
W_h (svd) of LSTM, GRU and RNN likewise."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseq.quant import activations, int8, svd
from edgeseq.reference import run
from edgeseq.runtime import Model
from edgeseq.runtime.compressed import CompressedGru, CompressedRnn
from edgeseq.runtime.kernels import s8dot
from edgeseq.testing import gru_graph, lstm_graph, random_inputs, rnn_graph

CASES = {
    "gru-lbr0-lens": (gru_graph, CompressedGru, dict(linear_before_reset=False, seq_lens=True)),
    "gru-lbr1-bi": (gru_graph, CompressedGru, dict(linear_before_reset=True,
                                                   direction="bidirectional",
                                                   initial_state=True)),
    "gru-lbr0-rev-bf": (gru_graph, CompressedGru, dict(direction="reverse", batch_first=True)),
    "rnn-rev-bf": (rnn_graph, CompressedRnn, dict(direction="reverse", batch_first=True,
                                                  initial_state=True)),
    "rnn-bi-lens-relu": (rnn_graph, CompressedRnn, dict(direction="bidirectional",
                                                        seq_lens=True, activations=["relu"] * 2,
                                                        gate_clip=2.0)),
}


def _int8_act(g):
    return activations.apply(int8.apply(g)[0], "int8")


def _err(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - b[k]))) for k in a)


@pytest.mark.parametrize("case", sorted(CASES))
def test_int8_activation_gru_rnn_match_the_reference(rng, case, tol):
    """Products bit-identical given the same vector; the float32 cell vs float64 leaves
    ~1e-7 (an activation pushed across a rounding boundary by it would show as ~1e-3: none
    on these seeds). The int16 semantics on the same graph are further off than 1e-4, so
    the tolerance tells the two apart."""
    make, cls, feat = CASES[case]
    g = _int8_act(make(rng, 7, 21, **feat))        # 21 rows: panels of 16 padded
    model = Model(g)
    assert isinstance(model.plan.steps[0].kernel, cls)
    assert "int8 activations for w_x/w_h" in model.describe() and s8dot.CHOSEN.name in \
        model.describe()
    for n in (1, 5):
        x = random_inputs(g, rng, 9, n)
        ref = run(g, x)
        assert _err(ref, model.run(x)) <= 1e-5
    g16 = activations.apply(g, "int16")
    assert _err(ref, Model(g16).run(x)) > 1e-4


@pytest.mark.parametrize("case", ["gru-lbr0-lens", "rnn-rev-bf"])
def test_int8_activation_error_against_exact_activations_is_bounded(rng, case):
    """|int8-activation run - reference with dequantised float products| per step: each
    product row moves by a sum of independent roundings, σ = ||W_j||_2·q/√12 with
    q = max|v|/127 (v = x_t or h); gates move by ≤ ε = 6·Σσ, the GRU/RNN update contracts,
    and steps add as a random walk: bound 4·√T·ε (as the int16 path's tolerance, docs/quant.md)."""
    make, _, feat = CASES[case]
    g = _int8_act(make(rng, 7, 21, **feat))
    x = random_inputs(g, rng, 9, 3)
    got = Model(g).run(x)
    exact = run(activations.apply(g, "int16"), x)      # float64 products of the int8 weights
    node = g.nodes[0]
    sigma = 0.0
    for slot, v in (("w_x", np.abs(x[g.inputs[0].name]).max()), ("w_h", 1.0)):
        if slot == "w_h" and node.op.value == "RNN":
            v = max(float(np.abs(exact[k]).max()) for k in exact)
        w = g.weight(node, slot).astype(np.float64) * g.scale(node, slot)[..., None]
        sigma += np.linalg.norm(w, axis=-1).max() * v / 127 / np.sqrt(12)
    bound = 4 * np.sqrt(9) * 6 * sigma
    err = _err(exact, got)
    assert 0 < err <= bound, (err, bound)


@pytest.mark.parametrize("case", ["gru-lbr0-lens", "gru-lbr1-bi", "rnn-rev-bf"])
def test_int8_activation_streaming_chunks_equal_the_full_run(rng, case):
    make, _, feat = CASES[case]
    feat = {k: v for k, v in feat.items() if k not in ("seq_lens", "direction")}
    g = _int8_act(make(rng, 7, 21, **feat))
    model = Model(g)
    x = random_inputs(g, rng, 10, 2)
    full = model.run(x)
    name = g.inputs[0].name
    t_axis = 1 if feat.get("batch_first") else 0
    stream = model.stream()
    state = {k: v for k, v in x.items() if k != name}     # initial state: first push only
    ys = [stream.push({name: np.take(x[name], range(a, b), axis=t_axis)}
                      | (state if a == 0 else {}))
          for a, b in ((0, 3), (3, 4), (4, 10))]
    y_name = g.outputs[0].name
    got = np.concatenate([y[y_name] for y in ys], axis=t_axis)
    assert np.array_equal(got, full[y_name])


def test_generated_code_runs_the_same_kernels(rng):
    """The whole-graph compiler emits compressed kernels (codegen/compressed_ops.py; more
    cases in test_codegen_compressed.py): same results as the interpreter, bit for bit."""
    g = _int8_act(gru_graph(rng, 7, 21))
    x = random_inputs(g, rng, 5, 2)
    compiled = Model(g, codegen=True)
    assert "one compiled call" in compiled.describe() and "int8 activations" in \
        compiled.describe()
    want = Model(g).run(x)
    got = compiled.run(x)
    assert all(np.array_equal(got[k], want[k]) for k in want)


FACTORED = {
    "lstm-peep-bi": (lstm_graph, dict(peephole=True, direction="bidirectional", seq_lens=True)),
    "lstm-proj": (lstm_graph, dict(proj_size=6, proj_bias=True)),
    "gru-lbr0": (gru_graph, dict(linear_before_reset=False, seq_lens=True)),
    "gru-lbr1-rev": (gru_graph, dict(linear_before_reset=True, direction="reverse")),
    "rnn-bi": (rnn_graph, dict(direction="bidirectional")),
}


@pytest.mark.parametrize("case", sorted(FACTORED))
def test_int8_activation_factored_w_h_matches_the_reference(rng, case):
    """svd + int8 + int8 activations: W_h h = U (V h), V h quantised to int8 again before U
    (the reference composes two int8_products); bits as the reference's, cell in float32."""
    make, feat = FACTORED[case]
    g = activations.apply(int8.apply(svd.apply(make(rng, 7, 21, **feat), rank=5)[0])[0],
                          "int8")
    assert "w_h_u" in g.nodes[0].weights
    model = Model(g)
    assert "w_h_u/w_h_v" in model.describe()
    for n in (1, 4):
        x = random_inputs(g, rng, 9, n)
        ref = run(g, x)
        assert _err(ref, model.run(x)) <= 1e-5
    assert _err(ref, Model(activations.apply(g, "int16")).run(x)) > 1e-4
