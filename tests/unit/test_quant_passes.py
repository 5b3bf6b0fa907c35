"""Compression passes checked with the float64 reference interpreter on the compressed graph.

Each check is also run on a deliberately broken graph (per-tensor scale, a scale off by one
row, round-toward-zero fp16, a transposed factor or projection) to show it can fail.
"""
from __future__ import annotations

import numpy as np
import pytest

from edgeseq.errors import GraphError, InputError
from edgeseq.graph import Node, Value
from edgeseq.ops import Op
from edgeseq.quant import fp16, int8, lstmp, svd
from edgeseq.quant.pipeline import compress, format_report
from edgeseq.reference import run
from edgeseq.testing import (gru_graph, lstm_graph, lstm_weights, random_inputs, rnn_graph,
                             stacked_graph)

MATRIX = ("w_x", "w_h", "w_h_u", "w_h_v", "w_proj")


def _spread_rows(g, rng):
    """Give every weight row its own magnitude (as trained nets have), so a scale that belongs
    to another row, or one scale for the whole tensor, is visibly wrong."""
    for node in g.recurrent_nodes():
        for slot in MATRIX:
            if slot in node.weights:
                w = g.constants[node.weights[slot]]
                f = 10.0 ** rng.uniform(-1.0, 0.5, size=w.shape[:-1] + (1,))
                g.constants[node.weights[slot]] = (w * f).astype(np.float32)
    return g


def _err(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - b[k]))) for k in a)


def check_int8(g, q, inputs, out_tol):
    """q is g with per-row symmetric int8 weights: per-element bound, exact scales, outputs."""
    for node, qnode in zip(g.recurrent_nodes(), q.recurrent_nodes()):
        for slot in MATRIX:
            if slot not in node.weights:
                continue
            w = g.constants[node.weights[slot]].astype(np.float64)
            qw = q.constants[qnode.weights[slot]]
            scale = q.constants[qnode.weights[slot] + ".scale"].astype(np.float64)
            assert qw.dtype == np.int8 and scale.shape == w.shape[:-1]
            amax = np.abs(w).max(-1)
            np.testing.assert_allclose(scale, np.where(amax > 0, amax / 127, 1.0), rtol=1e-6,
                                       err_msg=f"{slot}: scale is not max|row|/127")
            assert np.all(np.abs(qw * scale[..., None] - w) <= scale[..., None] * 0.5 + 1e-7), slot
        for slot in ("b", "peephole", "layer_norm", "b_x", "b_h", "b_proj"):
            if slot in node.weights:
                assert q.constants[qnode.weights[slot]].dtype == np.float32
                np.testing.assert_array_equal(q.constants[qnode.weights[slot]],
                                              g.constants[node.weights[slot]])
    assert _err(run(g, inputs), run(q, inputs)) <= out_tol


LSTM_CASES = [
    dict(direction="forward"),
    dict(direction="bidirectional", peephole=True),
    dict(direction="reverse", proj_size=6, layer_norm=True),
    dict(direction="forward", coupled_gate="input", batch_first=True, seq_lens=True),
]


@pytest.mark.parametrize("case", LSTM_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_int8_lstm_matches_reference(rng, case, tol):
    g = _spread_rows(lstm_graph(rng, 7, 12, **case), rng)
    x = random_inputs(g, rng, 9, 3)
    q, report = int8.apply(g)
    check_int8(g, q, x, tol["int8_small_lstm"])
    assert report[0]["weights"] == "int8" and report[0]["bytes_after"] < 0.5 * report[0]["bytes_before"]
    # the input graph is untouched
    assert all(c.dtype != np.int8 for c in g.constants.values())


@pytest.mark.parametrize("make", [gru_graph, rnn_graph])
def test_int8_gru_rnn_matches_reference(rng, make, tol):
    g = _spread_rows(make(rng, 5, 10, direction="bidirectional", seq_lens=True), rng)
    q, _ = int8.apply(g)
    check_int8(g, q, random_inputs(g, rng, 8, 2), tol["int8_small_lstm"])


@pytest.mark.parametrize("mutation", ["per_tensor", "row_shift", "per_tensor_consistent"])
def test_int8_check_fails_on_wrong_scales(rng, mutation, tol):
    g = _spread_rows(lstm_graph(rng, 7, 12, direction="bidirectional"), rng)
    x = random_inputs(g, rng, 9, 3)
    q, _ = int8.apply(g)
    name = q.node("lstm").weights["w_h"]
    sc = q.constants[name + ".scale"]
    if mutation == "per_tensor":          # per-row codes read with one per-tensor scale
        q.constants[name + ".scale"] = np.full_like(sc, sc.max())
    elif mutation == "row_shift":         # every scale belongs to the neighbouring row
        q.constants[name + ".scale"] = np.roll(sc, 1, axis=-1)
    else:                                 # a self-consistent per-tensor quantisation
        w = g.constants[name]
        s = np.abs(w).max() / 127
        q.constants[name] = np.clip(np.rint(w / s), -127, 127).astype(np.int8)
        q.constants[name + ".scale"] = np.full_like(sc, s)
    with pytest.raises(AssertionError):
        check_int8(g, q, x, tol["int8_small_lstm"])


def test_int8_all_zero_row_and_glue_weights(rng):
    g = lstm_graph(rng, 4, 8, coupled_gate="forget")   # forget rows are zero
    q, _ = int8.apply(g)
    w = q.constants[q.node("lstm").weights["w_h"]]
    assert not w[:, 8:16].any() and np.all(np.isfinite(q.constants[q.node("lstm").weights["w_h"] + ".scale"]))


def test_fp16_round_to_nearest_even(rng, tol):
    g = lstm_graph(rng, 6, 10, direction="bidirectional", proj_size=5)
    x = random_inputs(g, rng, 8, 2)
    q, report = fp16.apply(g)

    def check(q):
        for slot in ("w_x", "w_h", "w_proj"):
            want = g.constants[g.node("lstm").weights[slot]].astype(np.float16)
            got = q.constants[q.node("lstm").weights[slot]]
            assert got.dtype == np.float16
            np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
        assert _err(run(g, x), run(q, x)) <= tol["fp16_small_lstm"]

    check(q)
    assert report[0]["weights"] == "fp16"
    # round toward zero instead of to nearest: the check must notice
    name = q.node("lstm").weights["w_h"]
    w = g.constants[name]
    bits = w.astype(np.float16).view(np.uint16)
    back = bits.view(np.float16).astype(np.float32)
    trunc = np.where(np.abs(back) > np.abs(w), bits - 1, bits).astype(np.uint16)
    q.constants[name] = trunc.view(np.float16)
    with pytest.raises(AssertionError):
        check(q)


def test_fp16_refuses_out_of_range(rng):
    g = lstm_graph(rng, 3, 4)
    g.constants[g.node("lstm").weights["w_x"]] = np.full((1, 16, 3), 1e6, np.float32)
    with pytest.raises(Exception, match="does not fit float16"):
        fp16.apply(g)


def _truncated(w: np.ndarray, r: int) -> np.ndarray:
    u, s, vt = np.linalg.svd(w.astype(np.float64), full_matrices=False)
    return (u[:, :r] * s[:r]) @ vt[:r]


@pytest.mark.parametrize("make,kw", [(lstm_graph, dict(direction="bidirectional", peephole=True)),
                                     (gru_graph, dict(linear_before_reset=True)),
                                     (rnn_graph, dict(direction="reverse"))])
def test_svd_equals_truncated_dense(rng, make, kw, tol):
    g = make(rng, 5, 16, **kw)
    x = random_inputs(g, rng, 8, 2)
    q, report = svd.apply(g, rank=4)
    node = q.recurrent_nodes().__next__()
    assert "w_h" not in node.weights and q.constants[node.weights["w_h_u"]].shape[-1] == 4
    assert report[0]["rank"] == 4
    # independent expectation: the same graph with W_h replaced by its rank-4 truncation
    dense = g.copy()
    name = dense.recurrent_nodes().__next__().weights["w_h"]
    w = g.constants[name]
    dense.constants[name] = np.stack([_truncated(w[d], 4) for d in range(w.shape[0])]).astype(np.float32)
    assert _err(run(dense.validate(), x), run(q, x)) <= tol["float32"]


def test_svd_check_fails_on_transposed_factors(rng, tol):
    g = rnn_graph(rng, 5, 16)       # square W_h: the transposed factor pair is shape-valid
    x = random_inputs(g, rng, 8, 2)
    q, _ = svd.apply(g, rank=4)
    node = q.node("rnn")
    u, v = q.constants[node.weights["w_h_u"]], q.constants[node.weights["w_h_v"]]
    q.constants[node.weights["w_h_u"]] = np.ascontiguousarray(np.swapaxes(v, 1, 2))
    q.constants[node.weights["w_h_v"]] = np.ascontiguousarray(np.swapaxes(u, 1, 2))
    dense = g.copy()
    dense.constants["rnn.w_h"] = _truncated(g.constants["rnn.w_h"][0], 4)[None].astype(np.float32)
    assert _err(run(dense.validate(), x), run(q.validate(), x)) > 100 * tol["float32"]


def test_svd_energy_and_break_even(rng):
    g = lstm_graph(rng, 5, 16)
    w = g.constants["lstm.w_h"][0].astype(np.float64)
    s = np.linalg.svd(w, compute_uv=False)
    q, rep = svd.apply(g, energy=0.6)
    r = rep[0]["rank"]
    assert np.sum(s[:r] ** 2) / np.sum(s ** 2) >= 0.6 > np.sum(s[:r - 1] ** 2) / np.sum(s ** 2)
    q, rep = svd.apply(g, energy=1.0)      # full rank saves nothing: stays dense
    assert "w_h" in q.node("lstm").weights and "dense" in rep[0]["note"]
    with pytest.raises(GraphError, match="exactly one"):
        svd.apply(g, rank=3, energy=0.9)


def _stack_with_head(rng, d=2, h=12, n_in=5, n_out=4, seq_lens=True, head=Op.MATMUL):
    attrs = {"hidden_size": h, "direction": "bidirectional" if d == 2 else "forward"}
    g = stacked_graph(Op.LSTM, n_in, attrs, [lstm_weights(rng, n_in, h, d=d, peephole=True),
                                             lstm_weights(rng, d * h, h, d=d)], seq_lens=seq_lens)
    g.nodes += [Node("t_out", Op.TRANSPOSE, ["y"], ["yt"], {"perm": (0, 2, 1, 3)}),
                Node("r_out", Op.RESHAPE, ["yt"], ["yr"], {"shape": (-1, d * h)})]
    if head is Op.MATMUL:
        g.constants["head.w"] = rng.standard_normal((d * h, n_out)).astype(np.float32)
        g.nodes.append(Node("head", Op.MATMUL, ["yr", "head.w"], ["logits"]))
    else:
        g.constants["head.w"] = rng.standard_normal((n_out, d * h)).astype(np.float32)
        g.constants["head.b"] = rng.standard_normal(n_out).astype(np.float32)
        g.nodes.append(Node("head", Op.GEMM, ["yr", "head.w", "head.b"], ["logits"],
                            {"trans_b": True}))
    g.outputs = [Value("logits", "float32", ())]
    return g.validate()


@pytest.mark.parametrize("d,head", [(2, Op.MATMUL), (1, Op.GEMM)])
def test_lstmp_full_rank_is_exact_and_error_shrinks(rng, d, head, tol):
    g = _stack_with_head(rng, d=d, head=head)
    x = random_inputs(g, rng, 7, 3)
    ref = run(g, x)
    q, report = lstmp.apply(g, proj=12)
    assert [r["proj"] for r in report if r["op"] == "LSTM"] == [12, 12]
    assert _err(ref, run(q, x)) <= tol["float32"]
    errs = [_err(ref, run(lstmp.apply(g, proj=r)[0], x)) for r in (2, 11)]
    assert errs[0] > errs[1] > tol["float32"]
    q6, rep6 = lstmp.apply(g, proj=6)
    assert q6.node("layer1").attrs["proj_size"] == 6
    assert q6.constants[q6.node("layer1").weights["w_x"]].shape == (d, 48, d * 6)
    assert sum(r["params_after"] for r in rep6) < sum(r["params_before"] for r in rep6)


def test_lstmp_check_fails_on_transposed_projection(rng, tol):
    g = _stack_with_head(rng, d=1)
    x = random_inputs(g, rng, 7, 3)
    q, _ = lstmp.apply(g, proj=12)        # w_proj is square [1, 12, 12]
    name = q.node("layer0").weights["w_proj"]
    q.constants[name] = np.ascontiguousarray(np.swapaxes(q.constants[name], 1, 2))
    assert _err(run(g, x), run(q, x)) > 100 * tol["float32"]


def test_lstmp_then_int8(rng):
    g = _stack_with_head(rng)
    x = random_inputs(g, rng, 7, 3)
    q, report = compress(g, weights="int8", lstmp=6, calibration=x)
    assert all(r["weights"] == "int8" for r in report)
    assert q.constants[q.node("layer0").weights["w_proj"]].dtype == np.int8
    lp, _ = lstmp.apply(g, proj=6)
    # int8 on top of lstmp adds only a small error to lstmp's own
    assert _err(run(lp, x), run(q, x)) < 0.05 * max(np.abs(run(lp, x)["logits"]).max(), 1)
    total = sum(r["bytes_after"] for r in report) / sum(r["bytes_before"] for r in report)
    assert total < 0.35
    assert report[0]["output_error"] > 0 and "total" in format_report(report)


def test_lstmp_refuses_clearly(rng):
    g = _stack_with_head(rng)
    g.outputs.append(Value("y_h_0", "float32", ()))      # layer0's final state is an output
    g.validate()
    q, report = lstmp.apply(g, proj=4)
    notes = {r["layer"]: r.get("note", "") for r in report}
    assert "y_h" in notes["layer0"] and q.node("layer1").attrs["proj_size"] == 4
    # a plain stack whose last y is the graph output: nothing can be projected
    plain = stacked_graph(Op.LSTM, 3, {"hidden_size": 6}, [lstm_weights(rng, 3, 6)])
    with pytest.raises(GraphError, match="no layer could be projected"):
        lstmp.apply(plain, proj=2)


def test_compress_calibration_errors_and_bad_options(rng):
    g = lstm_graph(rng, 4, 8)
    x = random_inputs(g, rng, 6, 2)
    q, report = compress(g, weights="fp16", svd_rank=2, calibration=x)
    assert report[0]["rank"] == 2 and report[0]["error"] > 0
    with pytest.raises(GraphError, match="weights must be one of"):
        compress(g, weights="int4")
    with pytest.raises(InputError, match="missing"):
        compress(g, calibration={"not_x": x["x"]})


def test_svd_budget_picks_smallest_energy_within_budget(rng):
    g = lstm_graph(rng, 4, 16)
    x = random_inputs(g, rng, 6, 2)
    q, report = svd.apply(g, budget=0.05, calibration=x)
    e = report[0]["chosen_energy"]
    from edgeseq.quant.calibrate import output_error
    assert output_error(g, q, x) <= 0.05
    lower = [v for v in svd.ENERGY_GRID if v < e]
    if lower:
        assert output_error(g, svd.apply(g, energy=lower[-1])[0], x) > 0.05
