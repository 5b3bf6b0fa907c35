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
def test_compressed_lstm_matches_reference(rng, form, feat, tol):
    g = COMPRESS[form](lstm_graph(rng, 6, 13, **feat))     # 13: exercises the 4-row tail
    model = Model(g)
    assert isinstance(model.plan.steps[0].kernel, CompressedLstm), model.describe()
    for n in (1, 6):
        x = random_inputs(g, rng, 8, n)
        assert _err(run(g, x), model.run(x)) <= tol["float32"]


GRU_RNN = [
    (gru_graph, CompressedGru, dict(linear_before_reset=False, seq_lens=True)),
    (gru_graph, CompressedGru, dict(linear_before_reset=True, direction="bidirectional")),
    (rnn_graph, CompressedRnn, dict(direction="reverse", batch_first=True, initial_state=True)),
]


@pytest.mark.parametrize("form", list(COMPRESS))
@pytest.mark.parametrize("make,cls,feat", GRU_RNN, ids=["gru-lbr0", "gru-lbr1-bi", "rnn"])
def test_compressed_gru_rnn_match_reference(rng, form, make, cls, feat, tol):
    g = COMPRESS[form](make(rng, 6, 13, **feat))
    model = Model(g)
    assert isinstance(model.plan.steps[0].kernel, cls), model.describe()
    for n in (1, 6):
        x = random_inputs(g, rng, 8, n)
        assert _err(run(g, x), model.run(x)) <= tol["float32"]


def test_lstmp_int8_stack_matches_reference(rng, tol):
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
    assert _err(run(c, x), Model(c).run(x)) <= tol["float32"]


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
