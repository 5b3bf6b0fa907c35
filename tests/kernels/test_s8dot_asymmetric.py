"""int8 activations with a zero point (runtime/kernels/s8dot_asymmetric.py, TFLite's hybrid
kernels with asymmetric_quantize_inputs): the kernels' bits equal the float64 reference's
(edgeseq.reference.quantize_activations8_asymmetric / int8_product_asymmetric) in both row
orders and on every formulation this CPU runs (q = -128 included), and an LSTM with these
activations matches the reference on the interpreter and the generated code, streams equal to
its full run. Against the TFLite interpreter: tests/conformance/test_tflite_runtime.py."""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from edgeseq.quant import activations, int8
from edgeseq.reference import (INT8_ASYMMETRIC, int8_product, int8_product_asymmetric,
                               quantize_activations8_asymmetric, run)
from edgeseq.runtime import Model
from edgeseq.runtime.kernels import cpu, s8dot, s8dot_asymmetric as s8a
from edgeseq.testing import lstm_graph, random_inputs


def _quantize(v):
    n = v.shape[0]
    xq = np.zeros((n, 4 * -(-v.shape[1] // 4)), np.int8)
    xs = np.empty(n, np.float32)
    zp = np.empty(n, np.int32)
    s8a.quantize8_asymmetric(v, np.arange(n), n, xq, xs, zp)
    q = xq[:, :v.shape[1]].view(np.uint8).astype(np.int64) - 128 if s8dot.OFFSET \
        else xq[:, :v.shape[1]].astype(np.int64)
    return xq, xs, zp, q


def _vectors(rng, n, k):
    """Mixed signs at several magnitudes, a zero vector (q = 0, step 1, zp 0), an all-positive
    one (zp = -128), an all-negative one (zp = 127), a constant one, -0.0."""
    v = (rng.standard_normal((n, k)) * rng.uniform(0.01, 10, (n, 1))).astype(np.float32)
    v[0] = np.abs(v[0])
    v[1] = -np.abs(v[1]) - 0.5
    v[2] = 0.0
    v[2, 1] = -0.0
    v[3] = np.float32(0.3)
    v[4, :k // 2] += 3.0
    return v


def test_quantize8_asymmetric_bits_equal_the_reference(rng):
    v = _vectors(rng, 9, 301)
    xq, xs, zp, q = _quantize(v)
    want_q, want_s, want_z = quantize_activations8_asymmetric(v)
    assert np.array_equal(q, want_q) and np.array_equal(xs, want_s[:, 0])
    assert np.array_equal(zp, want_z[:, 0])
    assert zp[0] == -128 and zp[1] == 127 and (xs[2], zp[2]) == (1.0, 0) and not q[2].any()
    assert q.min() == -128 and q.max() == 127


def test_reference_quantisation_dequantises_to_within_half_a_step(rng):
    """The reference itself (independent of the kernels): (q - zp)·step recovers v within
    half a step, the range spans [-128, 127] and 0 is exact."""
    v = _vectors(rng, 9, 64)
    q, step, zp = quantize_activations8_asymmetric(v)
    back = (q - zp) * step.astype(np.float64)
    assert np.all(np.abs(back - v) <= 0.5 * step * (1 + 1e-6))
    assert np.all((q[v == 0] == np.broadcast_to(zp, v.shape)[v == 0]))


@pytest.mark.parametrize("k_len,rows,n_vec", [(6, 13, 1), (100, 70, 1), (1030, 39, 5),
                                               (64, 9, 6)])
def test_products8_asymmetric_bits_equal_the_reference_in_both_row_orders(rng, k_len, rows,
                                                                          n_vec):
    w = rng.integers(-127, 128, (rows, k_len)).astype(np.int8)
    sc = rng.uniform(0.001, 0.1, rows).astype(np.float32)
    v = _vectors(rng, max(n_vec, 5), k_len)[-n_vec:]      # one vector: the mixed, shifted one
    p = s8a.packed8_asymmetric(w, sc)
    xq, xs, zp, _ = _quantize(v)
    want = int8_product_asymmetric(v, w, sc).astype(np.float32)
    assert not np.array_equal(want, int8_product(v, w, sc).astype(np.float32))
    for backward in (False, True):
        for accumulate in (False, True):
            out = np.full((n_vec, p.scale.shape[0]), 0.5, np.float32)
            s8a.products8_asymmetric(p.blocks, p.scale, p.sums, p.groups, xq, xs, zp, n_vec,
                                     out, np.arange(n_vec), accumulate, backward)
            expect = (want + np.float32(0.5)) if accumulate else want
            assert np.array_equal(out[:, :rows], expect), (backward, accumulate)


HOST = cpu.numba_target()
RUNNABLE = [f for f in s8dot.FORMULATIONS if f.usable(HOST) and f.max_q >= 127]   # int8 q


@pytest.mark.parametrize("form", RUNNABLE, ids=lambda f: f.name)
def test_every_runnable_formulation_with_zero_points_gives_the_same_bits(rng, form):
    """The zero-point tiles of each formulation this CPU executes (fresh uncached compile),
    q at -128 and 127 against w at ±127: AVX2's vpmaddubsw reads |-128| as the unsigned 128,
    a pair 2·128·127 below int16 saturation."""
    t41 = s8dot.make_tile(form, 4, 1, zero_points=True)
    t11 = s8dot.make_tile(form, 1, 1, zero_points=True)

    @njit(cache=False)
    def run_tiles(bp, groups, xq, dst, out, scale, wsum, xs, zp):
        t41(bp, 0, groups, xq, 0, dst, out, scale, wsum, xs, False, 0, zp)
        t11(bp, 4, groups, xq, 0, dst, out, scale, wsum, xs, False, 0, zp)

    w = rng.integers(-127, 128, (80, 200)).astype(np.int8)
    w[0], w[1] = 127, -127
    w[2, ::2], w[2, 1::2] = 127, -127
    sc = rng.uniform(0.01, 0.1, 80).astype(np.float32)
    v = np.abs(rng.standard_normal((1, 200))).astype(np.float32) + 1
    v[0, 7] = -v[0].max() * 0.999          # q = -128 at the most negative entry
    q, step, zp = quantize_activations8_asymmetric(v)
    assert q.min() == -128 and q.max() == 127
    xq = ((q[:, :] + form.offset) % 256).astype(np.uint8).view(np.int8)
    p = s8a.packed8_asymmetric(w, sc)
    out = np.zeros((1, p.scale.shape[0]), np.float32)
    run_tiles(p.blocks, p.groups, np.ascontiguousarray(xq), np.zeros(1, np.int64), out,
              p.scale, p.sums, step[:, 0].astype(np.float32), zp[:, 0].astype(np.int32))
    assert np.array_equal(out[0, :80], int8_product_asymmetric(v, w, sc)[0].astype(np.float32))


# ---- the LSTM ------------------------------------------------------------------------------
def _asym(g):
    return activations.apply(int8.apply(g)[0], INT8_ASYMMETRIC)


@pytest.mark.parametrize("codegen", [False, True], ids=["interpreter", "codegen"])
def test_asymmetric_lstm_matches_the_reference_and_streams_as_the_full_run(rng, codegen):
    """13 units (a padded panel), projection and peepholes (W_x, W_h and W_proj with zero
    points), batch 3: the runtime equals the reference to the float32 cell's rounding (every
    product bit-identical given the same operands); the symmetric int8 semantics miss it.
    Pushed in chunks of 1, 2 and 5 steps, a stream gives the full run's bits."""
    g = _asym(lstm_graph(rng, 6, 13, peephole=True, proj_size=7))
    model = Model(g, codegen=codegen)
    assert "int8 activations with zero points for w_x/w_h/w_proj" in model.describe()
    x = random_inputs(g, rng, 8, 3)
    ref, got = run(g, x), model.run(x)
    assert max(float(np.max(np.abs(ref[k] - got[k]))) for k in ref) <= 1e-5
    sym = run(activations.apply(g, "int8"), x)
    assert max(float(np.max(np.abs(ref[k] - sym[k]))) for k in ref) > 1e-4
    xname = g.inputs[0].name
    for size in (1, 2, 5):
        stream = model.stream()
        ys = [stream.push({xname: x[xname][t:t + size]})["y"] for t in range(0, 8, size)]
        np.testing.assert_array_equal(np.concatenate(ys, 0), got["y"])


def test_asymmetric_gru_and_factored_rnn_match_the_reference(rng):
    """The other packings take the zero-point records too: a GRU with linear_before_reset=0
    (W_h as its z/r rows and its candidate rows, r ⊙ h quantised on its own) and an RNN with
    a factored W_h = U (V h) (V h quantised again), each ≤ 1e-5 from the reference at 21 units
    (interpreter)."""
    from edgeseq.quant import svd
    from edgeseq.testing import gru_graph, rnn_graph
    gru = _asym(gru_graph(rng, 7, 21, linear_before_reset=False, seq_lens=True))
    rnn = activations.apply(int8.apply(svd.apply(rnn_graph(rng, 7, 21), rank=9)[0])[0],
                            INT8_ASYMMETRIC)
    for g in (gru, rnn):
        model = Model(g, codegen=False)
        assert "int8 activations with zero points" in model.describe()
        x = random_inputs(g, rng, 9, 2)
        ref = run(g, x)
        assert max(float(np.max(np.abs(ref[k] - model.run(x)[k]))) for k in ref) <= 1e-5
        sym = run(activations.apply(g, "int8"), x)
        assert max(float(np.max(np.abs(ref[k] - sym[k]))) for k in ref) > 1e-4
