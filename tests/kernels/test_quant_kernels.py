"""Runtime kernels for compressed LSTM weights (int8 per-row, fp16, factored, projection)
against the float64 reference interpreter running the SAME compressed graph."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseq.quant import fp16, int8, lstmp, svd
from edgeseq.reference import run
from edgeseq.runtime import Model
from edgeseq.runtime.compressed import CompressedGru, CompressedLstm, CompressedRnn, pack
from edgeseq.runtime.kernels import quantized as q
from edgeseq.testing import (gru_graph, lstm_graph, lstm_weights, random_inputs, rnn_graph,
                             stacked_graph)
from edgeseq.graph import Node, Value
from edgeseq.ops import Op


def _err(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - b[k]))) for k in b)


def _norm(g, node, slot, order) -> float:
    """Largest row norm (1 or 2) of a dequantised weight slot, 0 when absent."""
    w = g.weight(node, slot)
    if w is None:
        return 0.0
    sc = g.scale(node, slot)
    w = np.abs(w.astype(np.float64)) * (1.0 if sc is None else sc[..., None])
    return float(np.linalg.norm(w, ord=order, axis=-1).max())


def act16_tol(g, x: dict, ref: dict, tol: dict, steps: int) -> float:
    """Tolerance for the int8 kernels, which quantise every vector v multiplied by an int8
    matrix (x_t, h_{t-1}, V·h) to int16 with step q = max|v|/32767, v's own maximum.

    Worst case (stated in docs/quant.md, checked per product by
    test_int16_products_within_rounding_bound): one product row moves by ≤ ||W_j||_1·q/2.
    That bound is far above what the LSTM tests see, so these tests use the statistical
    size instead: rounding errors are independent and uniform on ±q/2, so one row moves by a
    sum with standard deviation σ_W = ||W_j||_2·q/√12; per step the gates move by at most
    ε = 6·Σ σ_W over the int8 matrices (factored: U's own term plus ||U_j||_2·ε_V, with
    |V·h| ≤ ||V_j||_1·|h|; a projection W_proj: σ with |m| ≤ 1). sigmoid/tanh slopes are ≤ 1 and the cell contracts, so step
    errors add as a random walk over T steps; a factor 4 covers the cell (c = f·c + i·g and
    h = o·tanh(c) take gate errors up to ~2.5x): tol = float32 tolerance + 4·√T·ε.
    |x| and |h| are the largest values of the graph inputs and of the reference outputs (the
    hidden states the kernel quantises are outputs of the reference run; initial states are
    inputs)."""
    first = g.inputs[0].name
    b_x = float(np.max(np.abs(x[first])))
    b_h = max(float(np.max(np.abs(v))) for k, v in list(ref.items()) + list(x.items())
              if k != first and v.dtype.kind == "f")
    s_x, s_h = b_x / 32767 / np.sqrt(12.0), b_h / 32767 / np.sqrt(12.0)
    eps = 0.0
    for node in g.nodes:
        if not node.weights:
            continue
        e_v = 6 * _norm(g, node, "w_h_v", 2) * s_h
        s_vh = _norm(g, node, "w_h_v", 1) * s_h
        # the projection multiplies m = o·tanh(c), |m| ≤ 1, quantised the same way
        e_p = 6 * _norm(g, node, "w_proj", 2) / 32767 / np.sqrt(12.0)
        eps = max(eps, 6 * (s_x * _norm(g, node, "w_x", 2) + s_h * _norm(g, node, "w_h", 2))
                  + e_v + _norm(g, node, "w_h_u", 2) * (6 * s_vh + e_v) + e_p)
    return tol["float32"] + 4 * np.sqrt(steps) * eps


def _tol_for(g, x, ref, tol, steps, path):
    int8 = any(a.dtype == np.int8 for a in g.constants.values())
    return act16_tol(g, x, ref, tol, steps) if int8 and path == "int16" else tol["float32"]


@pytest.fixture(params=["float", "int16"])
def path(request, monkeypatch):
    """Both int8 product paths: "float" (widened int8 weights, exact to float32 rounding:
    small matrices by default) and "int16" (int16-quantised activations, forced for every
    size here; the default from 64 columns on)."""
    from edgeseq.runtime.compressed import _Compressed
    if request.param == "int16":
        monkeypatch.setattr(_Compressed, "int16_min_cols", 1)
    return request.param



COMPRESS = {
    "int8": lambda g: int8.apply(g)[0],
    "fp16": lambda g: fp16.apply(g)[0],
    "svd": lambda g: svd.apply(g, rank=5)[0],
    "svd+int8": lambda g: int8.apply(svd.apply(g, rank=5)[0])[0],
    "svd+fp16": lambda g: fp16.apply(svd.apply(g, rank=5)[0])[0],
}
FEATURES = [
    dict(),
    dict(direction="bidirectional", peephole=True, seq_lens=True),
    dict(direction="reverse", proj_size=7, proj_bias=True, layer_norm=True, batch_first=True),
    dict(coupled_gate="forget", cell_clip=0.5, initial_state=True),
]


@pytest.mark.parametrize("form", list(COMPRESS))
@pytest.mark.parametrize("feat", FEATURES, ids=lambda f: "-".join(f) or "plain")
def test_compressed_lstm_matches_reference(rng, form, feat, tol, path):
    g = COMPRESS[form](lstm_graph(rng, 6, 13, **feat))     # 13: exercises the 4-row tail
    model = Model(g)
    assert isinstance(model.plan.steps[0].kernel, CompressedLstm), model.describe()
    for n in (1, 6):
        x = random_inputs(g, rng, 8, n)
        ref = run(g, x)
        assert _err(ref, model.run(x)) <= _tol_for(g, x, ref, tol, 8, path)


GRU_RNN = [
    (gru_graph, CompressedGru, dict(linear_before_reset=False, seq_lens=True)),
    (gru_graph, CompressedGru, dict(linear_before_reset=True, direction="bidirectional")),
    (rnn_graph, CompressedRnn, dict(direction="reverse", batch_first=True, initial_state=True)),
]


@pytest.mark.parametrize("form", list(COMPRESS))
@pytest.mark.parametrize("make,cls,feat", GRU_RNN, ids=["gru-lbr0", "gru-lbr1-bi", "rnn"])
def test_compressed_gru_rnn_match_reference(rng, form, make, cls, feat, tol, path):
    g = COMPRESS[form](make(rng, 6, 13, **feat))
    model = Model(g)
    assert isinstance(model.plan.steps[0].kernel, cls), model.describe()
    for n in (1, 6):
        x = random_inputs(g, rng, 8, n)
        ref = run(g, x)
        assert _err(ref, model.run(x)) <= _tol_for(g, x, ref, tol, 8, path)


def test_lstmp_int8_stack_matches_reference(rng, tol, path):
    attrs = {"hidden_size": 16, "direction": "bidirectional"}
    g = stacked_graph(Op.LSTM, 5, attrs, [lstm_weights(rng, 5, 16, d=2),
                                          lstm_weights(rng, 32, 16, d=2)], seq_lens=True)
    g.nodes += [Node("t", Op.TRANSPOSE, ["y"], ["yt"], {"perm": (0, 2, 1, 3)}),
                Node("r", Op.RESHAPE, ["yt"], ["yr"], {"shape": (0, 0, -1)})]
    g.constants["head.w"] = rng.standard_normal((32, 3)).astype(np.float32)
    g.nodes.append(Node("head", Op.MATMUL, ["yr", "head.w"], ["logits"]))
    g.outputs = [Value("logits", "float32", ())]
    c = int8.apply(lstmp.apply(g.validate(), proj=6)[0])[0]
    x = random_inputs(c, rng, 9, 2)
    ref = run(c, x)
    # |h| of layer 1 (LSTMP: not bounded by 1) is not a graph output; |logits| stands in
    assert _err(ref, Model(c).run(x)) <= _tol_for(c, x, ref, tol, 9 * 2, path)   # 2 layers


def _matvec(m, v):
    out = np.zeros((v.shape[0], q.n_rows_of(m)), np.float32)
    q.matvec(m, v, np.arange(v.shape[0]), v.shape[0], out, False)
    return out


@pytest.mark.parametrize("rows", [1, 4, 9])
@pytest.mark.parametrize("batch", [1, 3, 6])
def test_matvec_forms_match_numpy(rng, rows, batch):
    w = rng.standard_normal((rows, 37)).astype(np.float32)
    v = rng.standard_normal((batch, 37)).astype(np.float32)
    qw, sc = int8.quantize_rows(w)
    cases = [(pack(w, None), w), (pack(w.astype(np.float16), None), w.astype(np.float16)),
             (pack(qw, sc), qw * sc[:, None].astype(np.float64))]
    for m, dense in cases:
        want = v.astype(np.float64) @ np.asarray(dense, np.float64).T
        np.testing.assert_allclose(_matvec(m, v), want, atol=1e-4, rtol=1e-5)


def test_int8_kernel_uses_every_row_scale(rng):
    """A kernel that applied the wrong row's scale (or none) would fail this."""
    w = rng.standard_normal((8, 16)).astype(np.float32) * np.logspace(-2, 1, 8)[:, None]
    qw, sc = int8.quantize_rows(w)
    v = rng.standard_normal((1, 16)).astype(np.float32)
    got = _matvec(pack(qw, sc), v)[0]
    np.testing.assert_allclose(got, (qw * sc[:, None]) @ v[0], rtol=1e-5, atol=1e-6)
    shifted = (qw * np.roll(sc, 1)[:, None]) @ v[0]
    assert np.max(np.abs(got - shifted)) > 1e-2


def test_no_dequantised_copy_is_kept(rng):
    g = int8.apply(lstm_graph(rng, 6, 32))[0]
    k = Model(g).plan.steps[0].kernel
    held = [a for m in k.mx + k.mh + k.mp for a in m[1:] if isinstance(a, np.ndarray)]
    assert max(a.nbytes for a in held if a.dtype == np.float32) < 32 * 4 * 4 + 1   # scales only
    assert sum(a.nbytes for a in held if a.dtype == np.int8) == 4 * 32 * (6 + 32)


def test_fp16_widening_is_exact(rng):
    bits = np.arange(0, 65536, 7, dtype=np.uint16)
    halves = bits.view(np.float16)
    finite = np.isfinite(halves)
    w = bits[finite][None, :]
    v = np.zeros((1, w.shape[1]), np.float32)
    m = pack(w.view(np.float16), None)
    # pick out each element with a one-hot vector: the product must be the exact half value
    for k in rng.choice(w.shape[1], size=64, replace=False):
        v[:] = 0
        v[0, k] = 1
        assert _matvec(m, v)[0, 0] == np.float32(w.view(np.float16)[0, k])


# ---- int16-activation products (kernels.i8dot) ----------------------------------------------
def _products(w, sc, v):
    from edgeseq.runtime.kernels import i8dot
    n_vec = v.shape[0]
    xq = np.empty(v.shape, np.int16)
    xs = np.empty(n_vec, np.float32)
    rows = np.arange(n_vec)
    i8dot.quantize16(v, rows, n_vec, xq, xs)
    out = np.zeros((n_vec, w.shape[0]), np.float32)
    i8dot.products(w, sc, xq, xs, n_vec, out, rows, False)
    return out, xq, xs


@pytest.mark.parametrize("k_len", [6, 37, 64, 80, 545, 1024, 1030])   # 32/8-lane, scalar parts
@pytest.mark.parametrize("rows,n_vec", [(1, 1), (9, 6), (4, 4), (13, 1)])    # (·, 1): GEMV path
def test_int16_products_within_rounding_bound(rng, k_len, rows, n_vec):
    w = rng.integers(-128, 128, (rows, k_len)).astype(np.int8)
    sc = rng.uniform(0.001, 0.1, rows).astype(np.float32)
    v = (rng.standard_normal((n_vec, k_len)) * rng.uniform(0.01, 10, (n_vec, 1))
         ).astype(np.float32)
    out, xq, xs = _products(w, sc, v)
    wd = w * sc[:, None].astype(np.float64)
    # the integer arithmetic itself is exact: only float32 rounding of block sums and scales
    exact_q = (xq * xs[:, None].astype(np.float64)) @ wd.T
    np.testing.assert_allclose(out, exact_q, rtol=1e-5, atol=1e-6 * np.abs(exact_q).max())
    # int16 rounding moves each element by ≤ max|v|/65534, + the float32 rounding of v/step
    # (its ulp near 32767 is 2^-9 of a step, twice: 1/step and the product; 1 % of a half step)
    # each row by ≤ ||W_j||_1 of that
    q_err = np.abs(xq * xs[:, None].astype(np.float64) - v)
    assert np.all(q_err <= np.abs(v).max(axis=1, keepdims=True) / 65534 * 1.01)
    bound = np.abs(wd).sum(axis=1)[None, :] * np.abs(v).max(axis=1, keepdims=True) / 65534
    assert np.all(np.abs(out - v.astype(np.float64) @ wd.T) <= bound * 1.01 + 1e-6)


def test_int16_products_do_not_overflow(rng):
    """Extreme operands: |w| = 128, |v| at its max everywhere, 8200 terms (one 8192-term
    block, whose total is far beyond 2^31, and a rest); every integer sum stays exact."""
    w = np.full((4, 8200), -128, np.int8)
    w[1] = 127
    v = np.ones((5, 8200), np.float32)
    v[2] = -1.0
    out, xq, xs = _products(w, np.ones(4, np.float32), v)
    want = (w.astype(np.int64) @ xq.T.astype(np.int64)).T * xs[:, None].astype(np.float64)
    np.testing.assert_allclose(out, want, rtol=1e-6)
    assert abs(out[0, 0] + 128 * 8200) < 1e-2


def _exact16(w, sc, xq, xs):
    """The int16 path's bits: the integer total exact, then float32(float32(total)·scale)·step
    (kernels.strict), independent of the row order and the code path."""
    total = xq.astype(np.int64) @ w.astype(np.int64).T
    return (total.astype(np.float32) * sc[None, :]).astype(np.float32) * xs[:, None]


def test_int16_products_backward_row_order_is_identical(rng):
    """The recurrent GEMV alternates row order per step: both orders, and the general loop
    and the one-vector GEMV, give the same bits, those of `_exact16` (before the integer
    total and the flag-free scaling, the two orders differed in the last bit on AArch64)."""
    from edgeseq.runtime.kernels import i8dot
    w = rng.integers(-128, 128, (4 * 9 + 3, 100)).astype(np.int8)
    sc = rng.uniform(0.01, 1, w.shape[0]).astype(np.float32)
    v = rng.standard_normal((6, 100)).astype(np.float32)
    fwd, xq, xs = _products(w, sc, v)
    assert np.array_equal(fwd, _exact16(w, sc, xq, xs))
    rows = np.arange(6)
    for n_vec in (1, 5, 6):
        bwd = np.zeros((6, w.shape[0]), np.float32)
        i8dot.products(w, sc, xq, xs, n_vec, bwd, rows, False, True)
        assert np.array_equal(bwd[:n_vec], fwd[:n_vec]) and not bwd[n_vec:].any()
    # one vector of a multiple of 32 elements (the scalar-bookkeeping GEMV), either order,
    # and 8200 columns (two blocks): the same bits as the general loop's
    for k_len in (128, 8200):
        w = rng.integers(-128, 128, (4 * 9 + 3, k_len)).astype(np.int8)
        v = rng.standard_normal((2, k_len)).astype(np.float32)
        want, xq, xs = _products(w, sc, v)
        assert np.array_equal(want, _exact16(w, sc, xq, xs))
        for backward in (False, True):
            got = np.zeros((2, w.shape[0]), np.float32)
            i8dot.products(w, sc, xq, xs, 1, got, rows, False, backward)
            assert np.array_equal(got[0], want[0]) and not got[1].any()


def test_int16_products_use_every_row_scale(rng):
    w = rng.integers(-127, 128, (8, 64)).astype(np.int8)
    sc = np.logspace(-2, 1, 8).astype(np.float32)
    v = rng.standard_normal((1, 64)).astype(np.float32)
    got = _products(w, sc, v)[0][0]
    np.testing.assert_allclose(got, (w * sc[:, None]) @ v[0], rtol=1e-3, atol=1e-4)
    assert np.max(np.abs(got - (w * np.roll(sc, 1)[:, None]) @ v[0])) > 1e-2


def test_int8_lstm_with_wrong_scale_fails_the_tolerance(rng, tol, monkeypatch):
    """The act16 tolerance must still catch a wrong per-row scale of W_h or W_x."""
    from edgeseq.runtime.compressed import _Compressed
    monkeypatch.setattr(_Compressed, "int16_min_cols", 1)
    g = int8.apply(lstm_graph(rng, 6, 13))[0]
    assert "int16" in Model(g).describe()
    x = random_inputs(g, rng, 8, 2)
    ref = run(g, x)
    limit = act16_tol(g, x, ref, tol, 8)
    assert _err(ref, Model(g).run(x)) <= limit
    for slot in ("w_x", "w_h"):
        bad = int8.apply(lstm_graph(np.random.default_rng(0), 6, 13))[0]
        bad.constants = dict(g.constants)
        name = g.nodes[0].weights[slot] + ".scale"
        bad.constants[name] = np.roll(g.constants[name], 1, axis=-1).copy()
        assert _err(ref, Model(bad).run(x)) > limit, slot


def test_int16_products_compile_to_integer_multiply_add():
    """On x86 the tiles must become vpmaddwd (or VNNI vpdpwssd): the point of the int16 path.
    (A fresh uncached compile: Numba cannot show the assembly of cached code.) Elsewhere only
    the results are checked (the tests above)."""
    import platform

    from numba import njit

    from edgeseq.runtime.kernels import i8dot

    def body(w, x, acc):
        i8dot._tile44(w, 0, x, 0, 0, 64, acc, 0)
        i8dot._tile11(w, 0, x, 0, 0, 64, acc, 0)

    fn = njit(cache=False)(body)
    w = np.ones((4, 64), np.int8)
    x = np.full((4, 64), 3, np.int16)
    acc = np.zeros((4, 4), np.int64)
    fn(w, x, acc)
    assert acc[0, 0] == 192 and np.all(acc[1:] == 192)
    if platform.machine() in ("x86_64", "AMD64"):
        asm = fn.inspect_asm(fn.signatures[0])
        assert "pmaddwd" in asm or "vpdpwssd" in asm


def test_int16_path_is_chosen_from_64_columns(rng, tol):
    """Default choice: int16 products for int8 matrices with ≥ 64 columns (W_x of a 64-input
    layer, W_h of a 64-unit one), the float path below; both within their tolerances."""
    for n_in, hidden, want in ((8, 16, (False, False)), (64, 16, (True, False)),
                               (8, 64, (False, True))):
        g = int8.apply(lstm_graph(rng, n_in, hidden))[0]
        k = Model(g).plan.steps[0].kernel
        assert (k.mx[0][0] == q.I8Q16, k.mh[0][0] == q.I8Q16) == want, (n_in, hidden)
        x = random_inputs(g, rng, 6, 2)
        ref = run(g, x)
        limit = act16_tol(g, x, ref, tol, 6) if any(want) else tol["float32"]
        assert _err(ref, Model(g).run(x)) <= limit
