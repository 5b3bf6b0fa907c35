"""The LSTMP projection on the integer path: an int8 W_proj with ≥ 64 columns multiplies an
int16-quantised m = o·tanh(c) (kernels.i8dot through quantized.matvec16_range), like W_x
and W_h; smaller ones keep the float product. Checked against the float64 reference of the
same int8 graph within the int16 tolerance (act16_tol: per step ε includes
6·||W_proj_j||_2·q/√12 with |m| ≤ 1)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeseq.quant import int8
from edgeseq.reference import run
from edgeseq.runtime import Model
from edgeseq.runtime.compressed import _Compressed
from edgeseq.runtime.kernels import quantized as q
from edgeseq.testing import lstm_graph, random_inputs

_spec = importlib.util.spec_from_file_location(
    "test_quant_kernels", Path(__file__).with_name("test_quant_kernels.py"))
_qk = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_qk)


@pytest.mark.parametrize("hidden,proj,want", [(67, 9, True), (13, 5, False)])
def test_projection_uses_int16_products_from_64_columns(rng, tol, hidden, proj, want):
    g = int8.apply(lstm_graph(rng, 5, hidden, proj_size=proj, proj_bias=True,
                              direction="bidirectional", seq_lens=True))[0]
    model = Model(g)
    k = model.plan.steps[0].kernel
    assert all((m[0] == q.I8Q16) == want for m in k.mp)
    assert ("int16-quantised" in model.describe()) == (want or hidden >= 64)
    for n in (1, 3):
        x = random_inputs(g, rng, 7, n)
        ref = run(g, x)
        got = model.run(x)
        limit = _qk.act16_tol(g, x, ref, tol, 7) if want else tol["float32"]
        assert _qk._err(ref, got) <= limit


def test_projection_int16_differs_from_float_product_only_by_rounding(rng, tol, monkeypatch):
    """The int16 projection is really used (its bits differ from the float product's), and
    the difference is the activation rounding's size, not a wrong scale."""
    g = int8.apply(lstm_graph(rng, 5, 70, proj_size=11))[0]
    x = random_inputs(g, rng, 6, 2)
    fast = Model(g).run(x)
    monkeypatch.setattr(_Compressed, "int16_min_cols", 10 ** 6)
    exact = Model(g).run(x)
    d = _qk._err(exact, fast)
    assert 0 < d <= _qk.act16_tol(g, x, run(g, x), tol, 6)


# ---- int8 activations: the projection multiplies int8-quantised m ---------------------------
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import make_tflite_fixtures as fx  # noqa: E402


@pytest.mark.parametrize("cell", [
    dict(),
    dict(cifg=True, peephole=True, layer_norm=True, n_output=9, proj_bias=True,
         cell_clip=10.0, proj_clip=3.0),
], ids=["plain", "android-nn-full"])
def test_int8_activations_equal_tflite_hybrid_lstm(tmp_path, rng, cell):
    """TFLite's hybrid LSTM quantises x_t, h_{t-1} and (before the projection) m_t to int8
    per vector, symmetric: the semantics of `--activations int8`. Converted and run with
    int8 activations (projection included), edgeseq equals the TFLite interpreter to float32
    rounding; with int16 activations it is ~1e-3 off (a different, finer quantisation)."""
    from edgeseq.converters.tflite import convert
    from edgeseq.converters.tflite.interpreter import TfliteSession
    from edgeseq.quant import activations
    s = fx.LstmSpec(n_input=6, n_cell=19, n_batch=3, n_time=8, time_major=True, hybrid="sym",
                    **cell)
    path = tmp_path / "h.tflite"
    path.write_bytes(fx.unidirectional_lstm(s, fx.random_lstm_weights(rng, s, scale=0.4)))
    want = TfliteSession(path).run(x := {"x": rng.standard_normal(fx._x_shape(s))
                                         .astype(np.float32)})["y"]
    g = activations.apply(convert(path), "int8")
    model = Model(g)
    if cell:
        assert "w_proj" in model.describe()
    assert np.max(np.abs(model.run(x)["y"] - want)) <= 1e-5
    assert np.max(np.abs(Model(activations.apply(g, "int16")).run(x)["y"] - want)) > 1e-4


# ---- delta kernels: their dense products take the int16 path too -------------------------
@pytest.mark.parametrize("make,feat", [
    (lstm_graph, dict(proj_size=9)),                         # W_proj 9 x 70
    ("svd", dict()),                                         # U 512 x 64 (rank 64)
    ("gru", dict(linear_before_reset=False)),                # candidate rows 70 x 70
], ids=["lstm-proj", "lstm-factored", "gru-lbr0"])
def test_delta_kernels_dense_products_use_int16(rng, tol, make, feat):
    """At θ = 0 the delta kernel computes the dense model's function; its dense products
    (W_proj, U of a factored W_h, a GRU's candidate rows) now multiply int16-quantised
    vectors (packed I8Q16, ≥ 64 columns) and stay within the int16 tolerance of the
    reference."""
    from edgeseq.quant import svd
    from edgeseq.runtime.plan import select
    from edgeseq.testing import gru_graph
    if make == "svd":
        g = int8.apply(svd.apply(lstm_graph(rng, 5, 128), rank=64)[0])[0]
    elif make == "gru":
        g = int8.apply(gru_graph(rng, 5, 70, **feat))[0]
    else:
        g = int8.apply(make(rng, 5, 70, **feat))[0]
    cls, _ = select(g, g.nodes[0], delta=True)
    kernel = cls(g, g.nodes[0])
    attr = {"svd": "mu", "gru": "mhh"}.get(make, "mp")
    assert all(m[0] == q.I8Q16 for m in getattr(kernel, attr))
    x = random_inputs(g, rng, 6, 2)
    ref = run(g, x)
    node = g.nodes[0]
    got = kernel([x.get(n) if n else None for n in node.inputs] + [None] * (4 - len(node.inputs)),
                 thresholds=(0.0, 0.0))
    err = max(float(np.max(np.abs(a - ref[name]))) for a, name in zip(got, node.outputs))
    assert err <= _qk.act16_tol(g, x, ref, tol, 6)
