"""Streaming a model on float-product compressed weights (float16, and int8 below the int16
path's 64 columns) in any chunking equals the full run bit for bit: the input projection
computes each vector's dot products with the same operations whether the call holds one
vector or many (`kernels.quantized._matvec_typed`)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgeseq.quant import fp16, int8
from edgeseq.runtime import Model
from edgeseq.testing import lstm_graph, random_inputs

CHUNKS = ((1,) * 10, (2,) * 5, (5, 5), (3, 2, 5))


def _streamed(model, x: dict, cuts) -> dict:
    """Outputs of a stream fed `x` (time-major, no state inputs) in chunks of `cuts` steps:
    y [T, D, N, H] concatenated over time, the final states from the last chunk."""
    s = model.stream()
    got, at = [], 0
    for c in cuts:
        got.append(s.push({k: a[at:at + c] for k, a in x.items()}))
        at += c
    return {k: np.concatenate([o[k] for o in got]) if k == "y" else got[-1][k]
            for k in got[-1]}


@pytest.mark.parametrize("codegen", [False, True])
@pytest.mark.parametrize("compress", ["fp16", "int8"])
def test_float_product_stream_chunks_equal_full_run(rng, compress, codegen):
    # 19 inputs: under 64 columns, so int8 W_x takes the float-product path too
    g = lstm_graph(rng, 19, 12)
    g = fp16.apply(g)[0] if compress == "fp16" else int8.apply(g)[0]
    model = Model(g, codegen=codegen)
    assert ("codegen: one compiled call" in model.describe()) == codegen, model.describe()
    for batch in (1, 3):
        x = random_inputs(g, rng, 10, batch)
        want = model.run(x)
        for cuts in CHUNKS:
            got = _streamed(model, x, cuts)
            assert got.keys() == want.keys()
            for k in want:
                assert np.array_equal(got[k], want[k]), (batch, cuts, k,
                                                          np.max(np.abs(got[k] - want[k])))


NO_F16C = textwrap.dedent("""
    import numpy as np
    from edgeseq.runtime.kernels import quantized as q

    rng = np.random.default_rng(0)
    w = rng.standard_normal((7, 37)).astype(np.float16)
    v = rng.standard_normal((5, 37)).astype(np.float32)
    m = (q.F16, np.zeros((0, 37), np.float32), w.view(np.uint16),
         np.zeros((0, 37), np.int8), np.zeros(0, np.float32))
    out = np.zeros((5, 7), np.float32)
    q.matvec(m, v, np.arange(5), 5, out, False)
    want = v.astype(np.float64) @ w.astype(np.float64).T      # numpy's widening
    assert np.max(np.abs(out - want)) < 1e-5, np.max(np.abs(out - want))
    print("ok")
""")


def test_float_tiles_run_without_f16c_or_fma(tmp_path):
    """The tiles' vector widening takes the integer route where `fpext half` would call a
    symbol no Numba JIT links (x86 without F16C), and runs without FMA."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), NUMBA_CPU_NAME="x86-64",
               NUMBA_CPU_FEATURES="+sse,+sse2,+cx8,+fxsr,+mmx")
    r = subprocess.run([sys.executable, "-c", NO_F16C], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


def test_strided_rows_are_refused_not_misread():
    # the float tiles read each row as one contiguous block
    from edgeseq.runtime.kernels import quantized as q
    w = np.ones((4, 6), np.float32)
    v = np.ones((1, 12), np.float32)[:, ::2]
    with pytest.raises(ValueError, match="contiguous"):
        q._matvec_typed(w, np.zeros(0, np.float32), v, np.arange(1), 1,
                        np.zeros((1, 4), np.float32), False)
