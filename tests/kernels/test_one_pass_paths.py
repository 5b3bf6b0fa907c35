"""The one-pass recurrent paths (kernels/lstm._plain_sequence, gru_plain.plain_gru_sequence)
and the row-blocked panel GEMM (panels.panel_gemv_rows_acc) vs independent references: the
float64 reference interpreter and a float64 matrix product.

These paths take every call whose batch rows share one length (batch 1 always), with
peepholes for the LSTM; rows of different lengths keep the general per-row kernel. Checked
on the interpreter and the generated code, forward/reverse/bidirectional, lengths 0, 1, T
and in between, batch 1 and 3, odd sizes."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseq import reference, testing
from edgeseq.runtime import Model
from edgeseq.runtime.kernels.panels import ROW_BLOCK, panel_gemv_rows_acc, to_panels


@pytest.mark.parametrize("rows,k_len,out_rows", [(0, 5, 7), (1, 3, 64), (3, 17, 130),
                                                 (5, 1, 65), (ROW_BLOCK + 7, 29, 100),
                                                 (2 * ROW_BLOCK + 4, 40, 200)])
def test_blocked_projection_matches_a_float64_product(rows, k_len, out_rows):
    """Row counts below, at and across the 4-row groups and ROW_BLOCK-row blocks."""
    rng = np.random.default_rng(rows * 1000 + k_len)
    w = rng.standard_normal((out_rows, k_len)).astype(np.float32)
    v = rng.standard_normal((rows + 2, k_len)).astype(np.float32)   # rows past n_rows: unread
    wp = to_panels(w)
    out = np.full((rows + 2, wp.shape[0] * 16), 0.5, dtype=np.float32)
    order = np.arange(rows + 2)[::-1].copy()        # any row order: the last rows first
    panel_gemv_rows_acc(wp, v, order[2:], rows, out)
    want = 0.5 + v[:rows].astype(np.float64) @ w.T.astype(np.float64)
    assert np.max(np.abs(out[:rows, :out_rows] - want), initial=0.0) <= 1e-4
    assert np.all(out[:rows, out_rows:] == 0.5)          # padding rows: zero weights
    assert np.all(out[rows:] == 0.5)                     # rows not asked for: untouched


def _uniform_lengths(graph, rng, t_len, n_batch, length):
    ins = testing.random_inputs(graph, rng, t_len, n_batch)
    ins["sequence_lens"] = np.full(n_batch, length, np.int32)
    return ins


CELLS = {
    "lstm_peephole": lambda rng, d: testing.lstm_graph(rng, 7, 25, peephole=True, direction=d,
                                                      seq_lens=True, initial_state=True),
    "lstm": lambda rng, d: testing.lstm_graph(rng, 5, 19, direction=d, seq_lens=True),
    "gru_lbr0": lambda rng, d: testing.gru_graph(rng, 6, 21, direction=d, seq_lens=True,
                                                 initial_state=True),
    "gru_lbr1": lambda rng, d: testing.gru_graph(rng, 6, 17, direction=d, seq_lens=True,
                                                 linear_before_reset=True),
}


# the generated code calls the same sequence kernels when lengths are given: one case of it
# suffices (each compiled graph costs seconds of Numba time)
PATHS = [(c, d, False) for c in sorted(CELLS) for d in ("forward", "reverse", "bidirectional")]
PATHS.append(("lstm_peephole", "bidirectional", True))


@pytest.mark.parametrize("cell,direction,codegen", PATHS,
                         ids=[f"{c}-{d}-{'codegen' if g else 'interp'}" for c, d, g in PATHS])
def test_one_length_for_every_row_matches_reference(cell, direction, codegen, tol):
    """lengths 0, 1, an inner one and T, shared by every row (batch 1 and 3)."""
    rng = np.random.default_rng(sum(map(ord, cell + direction)))
    graph = CELLS[cell](rng, direction)
    model = Model(graph, warmup=False, codegen=codegen)
    if codegen:
        assert model.source() is not None, model.describe()
    t_len = 11
    for n_batch, length in [(1, t_len), (1, 0), (1, 1), (3, 6), (3, t_len)]:
        ins = _uniform_lengths(graph, rng, t_len, n_batch, length)
        want = reference.run(graph, ins)
        got = model.run(ins)
        for name, w in want.items():
            err = float(np.max(np.abs(got[name] - w))) if w.size else 0.0
            assert err <= tol["float32"], (name, n_batch, length, err)


def test_peephole_lstm_without_lengths_takes_the_one_pass_path_in_generated_code(tol):
    """A bidirectional peephole LSTM over full lengths is emitted as the one-pass kernel
    (it used to take the general per-row step) and matches the reference."""
    rng = np.random.default_rng(8)
    graph = testing.lstm_graph(rng, 9, 25, peephole=True, direction="bidirectional")
    model = Model(graph, warmup=False, codegen=True)
    assert model.source().count("K.lstm_plain_sequence(") == 2     # called through its pointer
    ins = testing.random_inputs(graph, rng, 13, 2)
    want = reference.run(graph, ins)
    got = model.run(ins)
    for name, w in want.items():
        assert np.max(np.abs(got[name] - w)) <= tol["float32"], name
