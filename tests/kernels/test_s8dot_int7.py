"""7-bit activations ("int7", runtime/kernels/s8dot.py quantize7 / products7): the bits of the
float64 reference (edgeseq.reference.quantize_activations8(v, 63) / int7_product) in both row
orders and in every runnable formulation, the avx2-u7 formulation's instructions (onnxruntime's
vpmaddubsw + vpmaddwd + vpaddd, no sign handling), and LSTM/GRU runs and streams."""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from edgeseq.quant import activations, int8
from edgeseq.reference import INT7, int7_product, int8_product, quantize_activations8, run
from edgeseq.runtime import Model
from edgeseq.runtime.kernels import cpu, s8dot
from edgeseq.testing import gru_graph, lstm_graph, random_inputs


def _quantize7(v):
    n = v.shape[0]
    xq = np.zeros((n, 4 * -(-v.shape[1] // 4)), np.int8)
    xs = np.empty(n, np.float32)
    s8dot.quantize7(v, np.arange(n), n, xq, xs)
    q = xq[:, :v.shape[1]].view(np.uint8).astype(np.int64) - s8dot.OFFSET7 if s8dot.OFFSET7 \
        else xq[:, :v.shape[1]].astype(np.int64)
    return xq, xs, q


def test_quantize7_bits_equal_the_reference(rng):
    v = (rng.standard_normal((5, 301)) * rng.uniform(0.01, 10, (5, 1))).astype(np.float32)
    v[1, :5] = np.float32(63.5) * np.float32(0.01) * np.arange(5)       # rounding ties
    v[2] = 0.0                                                          # step 1, q = 0
    xq, xs, q = _quantize7(v)
    want_q, want_s = quantize_activations8(v, 63)
    assert np.array_equal(q, want_q) and np.array_equal(xs, want_s[:, 0])
    assert np.abs(q).max() == 63 and xs[2] == 1.0


@pytest.mark.parametrize("rows,k_len,n_vec", [(13, 301, 1), (70, 101, 9), (9, 1030, 6),
                                              (1601, 1030, 1)])
def test_products7_bits_equal_the_reference_in_both_row_orders(rng, rows, k_len, n_vec):
    """Odd sizes (padded panels and column groups), one and many vectors (9 = 5 + 4 and
    6 = 5 + 1 on avx2-u7's one-panel tiles, 4 + 4 + 1 and 4 + 1 elsewhere), and a 1.65 MB
    matrix (avx2-u7's GEMV walks it one panel at a time); the int8 product of the same
    vectors differs (so the comparison can fail)."""
    w = rng.integers(-127, 128, (rows, k_len)).astype(np.int8)
    w[0] = 127                                      # |pair| 2·127·127 on avx2-u7
    sc = rng.uniform(0.001, 0.1, rows).astype(np.float32)
    v = rng.standard_normal((n_vec, k_len)).astype(np.float32)
    v[0, 3] = np.abs(v[0]).max() + 1                # q = +63 (u = 127)
    p = s8dot.packed8_int7(w, sc)
    xq, xs, _ = _quantize7(v)
    want = int7_product(v, w, sc).astype(np.float32)
    assert not np.array_equal(want, int8_product(v, w, sc).astype(np.float32))
    for backward in (False, True):
        for accumulate in (False, True):
            out = np.full((n_vec, p.scale.shape[0]), 0.5, np.float32)
            s8dot.products7(p.blocks, p.scale, p.sums, p.groups, xq, xs, n_vec, out,
                            np.arange(n_vec), accumulate, backward)
            expect = (want + np.float32(0.5)) if accumulate else want
            assert np.array_equal(out[:, :rows], expect), (backward, accumulate)


HOST = cpu.numba_target()
RUNNABLE = [f for f in s8dot.FORMULATIONS if f.usable(HOST)]


@pytest.mark.parametrize("form", RUNNABLE, ids=lambda f: f.name)
def test_every_runnable_formulation_gives_the_int7_bits(rng, form):
    """7-bit activations (q at ±63, w at ±127) through each formulation this CPU can execute,
    offset applied as that formulation expects: the reference's bits. (avx2-u7 is only
    exact for |q| <= 63: it is never chosen for int8.)"""
    t41, t11 = s8dot.make_tile(form, 4, 1), s8dot.make_tile(form, 1, 1)

    @njit(cache=False)
    def run_tiles(bp, groups, xq, dst, out, scale, wsum, xs):
        t41(bp, 0, groups, xq, 0, dst, out, scale, wsum, xs, False, 0)
        t11(bp, 4, groups, xq, 0, dst, out, scale, wsum, xs, False, 0)

    w = rng.integers(-127, 128, (80, 200)).astype(np.int8)
    w[0], w[1] = 127, -127
    sc = rng.uniform(0.01, 0.1, 80).astype(np.float32)
    v = np.abs(rng.standard_normal((1, 200))).astype(np.float32) + 1
    v[0, 7] = -v[0].max()
    q, step = quantize_activations8(v, 63)
    assert q.min() == -63 and q.max() == 63
    xq = ((q + form.offset) % 256).astype(np.uint8).view(np.int8)
    p = s8dot.packed8_int7(w, sc)
    out = np.zeros((1, p.scale.shape[0]), np.float32)
    run_tiles(p.blocks, p.groups, np.ascontiguousarray(xq), np.zeros(1, np.int64), out,
              p.scale, p.sums, step[:, 0].astype(np.float32))
    assert np.array_equal(out[0, :80], int7_product(v, w, sc)[0].astype(np.float32))


@pytest.mark.parametrize("form", [f for f in RUNNABLE if f.panel_vectors],
                         ids=lambda f: f.name)
def test_the_one_panel_many_vector_tile_gives_the_int7_bits(rng, form):
    """avx2-u7's many-vector tile (1 panel x `panel_vectors`, what `products7` runs only when
    Numba compiles for an AVX2-only CPU) on this CPU: q at ±63 in every vector, w at ±127,
    a padded panel: the reference's bits for each vector."""
    n = form.panel_vectors
    tile = s8dot.make_tile(form, 1, n)

    @njit(cache=False)
    def run_tile(bp, groups, xq, dst, out, scale, wsum, xs):
        tile(bp, 0, groups, xq, 0, dst, out, scale, wsum, xs, False, 0)

    w = rng.integers(-127, 128, (11, 203)).astype(np.int8)
    w[0], w[1] = 127, -127
    sc = rng.uniform(0.01, 0.1, 11).astype(np.float32)
    v = rng.standard_normal((n, 203)).astype(np.float32)
    v[:, 5] = np.abs(v).max(axis=1) + 1
    v[:, 9] = -v[:, 5]
    q, step = quantize_activations8(v, 63)
    xq = np.zeros((n, 204), np.int8)
    xq[:, :203] = ((q + form.offset) % 256).astype(np.uint8).view(np.int8)
    p = s8dot.packed8_int7(w, sc)
    out = np.zeros((n, p.scale.shape[0]), np.float32)
    run_tile(p.blocks, p.groups, xq, np.arange(n)[::-1].copy(), out, p.scale, p.sums,
             step[:, 0].astype(np.float32))
    assert np.array_equal(out[::-1, :11], int7_product(v, w, sc).astype(np.float32))


def test_avx2_u7_is_onnxruntimes_three_instructions():
    """The haswell block loop of avx2-u7: vpmaddubsw + vpmaddwd + vpaddd per 32 bytes, no
    sign handling (vpxor / vpsignb / vpabsb) and no VNNI; int7 picks it on AVX2 only."""
    import llvmlite.binding as llvm
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    form = s8dot.BY_NAME["avx2-u7"]
    triple = "x86_64-unknown-linux-gnu"
    mod = llvm.parse_assembly(s8dot.block_ir(form))
    mod.triple = triple
    asm = llvm.Target.from_triple(triple).create_target_machine(
        cpu="haswell", features="", opt=3).emit_assembly(mod)
    loop = asm.split(".LBB0_2:")[1].split(".LBB0_3:")[0]       # the block loop's body
    ops = [line.split()[0] for line in loop.splitlines() if line.startswith("\t")
           and not line.strip().startswith(".")]
    assert ops.count("vpmaddubsw") == 2 and ops.count("vpmaddwd") == 2, loop
    assert not {"vpxor", "vpsignb", "vpabsb", "vpdpbusd"} & set(ops), loop
    haswell = cpu.Target(triple, "haswell", cpu.parse_features("+avx2,+fma"))
    znver4 = cpu.Target(triple, "znver4", cpu.parse_features(
        "+avx2,+avx512f,+avx512bw,+avx512vl,+avx512vnni"))
    assert s8dot.choose(haswell, 63) is form and s8dot.choose(haswell).name == "avx2"
    assert s8dot.choose(znver4, 63).name == "avx512vnni"


# ---- LSTM / GRU ------------------------------------------------------------------------------
def _int7(g):
    return activations.apply(int8.apply(g)[0], INT7)


def _err(a, b):
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


@pytest.mark.parametrize("codegen", [False, True], ids=["interpreter", "codegen"])
def test_int7_lstm_matches_the_reference_and_streams_as_the_full_run(rng, codegen):
    """13 units (a padded panel), projection and peepholes, batch 3: the runtime equals the
    reference to the float32 cell's rounding; the int8 semantics miss it. Pushed in chunks
    of 1, 2 and 5 steps, a stream gives the full run's bits."""
    g = _int7(lstm_graph(rng, 6, 13, peephole=True, proj_size=7))
    model = Model(g, codegen=codegen)
    assert f"int7 activations for w_x/w_h/w_proj ({s8dot.CHOSEN7.name} kernels)" in \
        model.describe()
    x = random_inputs(g, rng, 8, 3)
    ref, got = run(g, x), model.run(x)
    assert _err(ref, got) <= 1e-5
    assert _err(ref, run(activations.apply(g, "int8"), x)) > 1e-4
    xname = g.inputs[0].name
    for size in (1, 2, 5):
        stream = model.stream()
        ys = [stream.push({xname: x[xname][t:t + size]})["y"] for t in range(0, 8, size)]
        np.testing.assert_array_equal(np.concatenate(ys, 0), got["y"])


def test_int7_gru_matches_the_reference(rng):
    """A GRU with linear_before_reset=0 (W_h as z/r rows and candidate rows, r ⊙ h quantised
    on its own) and lengths, 21 units: ≤ 1e-5 from the reference, int8 semantics > 1e-4."""
    g = _int7(gru_graph(rng, 7, 21, linear_before_reset=False, seq_lens=True))
    model = Model(g, codegen=False)
    assert "int7 activations" in model.describe()
    x = random_inputs(g, rng, 9, 2)
    ref = run(g, x)
    assert _err(ref, model.run(x)) <= 1e-5
    assert _err(ref, run(activations.apply(g, "int8"), x)) > 1e-4


def test_int7_survives_the_artifact_and_the_cli(tmp_path):
    """`edgeseq convert --weights int8 --activations int7` records the mode in the artifact."""
    from importlib.resources import files

    from edgeseq import artifact
    from edgeseq.cli import main
    from edgeseq.reference import INT8_ACTIVATIONS

    src = str(files("edgeseq") / "data" / "demo_classifier.onnx")
    out = tmp_path / "c.eseq"
    assert main(["convert", src, "-o", str(out), "--weights", "int8",
                 "--activations", "int7"]) == 0
    assert artifact.load(out).metadata[INT8_ACTIVATIONS] == INT7    # (runs: the tests above)
