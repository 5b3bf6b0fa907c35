"""Delta kernels (docs/design.md, delta-based zero skipping): θ = 0 reproduces the dense result for every variant and
weight form; θ > 0 matches an independent float64 NumPy delta network written from the spec;
streaming in chunks equals one full delta run; statistics and threshold errors."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseq import testing
from edgeseq.errors import InputError
from edgeseq.ops import Op
from edgeseq.quant import fp16, int8, svd
from edgeseq.runtime import Model
from edgeseq.runtime.delta import is_delta_kernel
from edgeseq.runtime.plan import select

VARIANTS = {
    "lstm": lambda r: testing.lstm_graph(r, 5, 9),
    "lstm_peep_bidir_lens": lambda r: testing.lstm_graph(
        r, 5, 9, peephole=True, direction="bidirectional", seq_lens=True),
    "lstm_cifg_input_init": lambda r: testing.lstm_graph(
        r, 5, 9, coupled_gate="input", initial_state=True),
    "lstm_cifg_forget_peep": lambda r: testing.lstm_graph(r, 5, 9, coupled_gate="forget",
                                                         peephole=True),
    "lstmp_ln_clips_bf_rev": lambda r: testing.lstm_graph(
        r, 5, 9, proj_size=4, proj_bias=True, layer_norm=True, cell_clip=0.5, proj_clip=0.4,
        gate_clip=2.0, batch_first=True, direction="reverse"),
    "lstm_relu_acts": lambda r: testing.lstm_graph(r, 5, 9, activations=("sigmoid", "relu",
                                                                         "tanh")),
    "gru_lbr0_bidir_lens": lambda r: testing.gru_graph(r, 5, 9, direction="bidirectional",
                                                       seq_lens=True),
    "gru_lbr1_init_bf": lambda r: testing.gru_graph(r, 5, 9, linear_before_reset=True,
                                                    initial_state=True, batch_first=True),
    "gru_lbr1_clip_rev": lambda r: testing.gru_graph(r, 5, 9, linear_before_reset=True,
                                                     gate_clip=1.5, direction="reverse"),
    "rnn_relu_init": lambda r: testing.rnn_graph(r, 5, 9, activations=("relu",),
                                                 initial_state=True),
    "rnn_bidir_lens_bf": lambda r: testing.rnn_graph(r, 5, 9, direction="bidirectional",
                                                     seq_lens=True, batch_first=True),
}

COMPRESSED = {
    "lstm_int8": lambda r: int8.apply(testing.lstm_graph(r, 5, 9, peephole=True))[0],
    "lstm_int8_plain": lambda r: int8.apply(testing.lstm_graph(r, 5, 9))[0],   # fused cell
    "lstm_fp16_proj": lambda r: fp16.apply(testing.lstm_graph(r, 5, 9, proj_size=4))[0],
    "lstm_svd": lambda r: svd.apply(testing.lstm_graph(r, 5, 9), rank=4)[0],
    "lstm_svd_int8_bidir": lambda r: int8.apply(svd.apply(
        testing.lstm_graph(r, 5, 9, direction="bidirectional", initial_state=True),
        rank=4)[0])[0],
    "lstm_svd_fp16": lambda r: fp16.apply(svd.apply(testing.lstm_graph(r, 5, 9), rank=4)[0])[0],
    "lstmp_int8": lambda r: int8.apply(testing.lstm_graph(r, 5, 9, proj_size=4,
                                                          proj_bias=True))[0],
    "gru_lbr0_int8": lambda r: int8.apply(testing.gru_graph(r, 5, 9))[0],
    "gru_lbr1_fp16": lambda r: fp16.apply(testing.gru_graph(r, 5, 9,
                                                            linear_before_reset=True))[0],
    "rnn_int8": lambda r: int8.apply(testing.rnn_graph(r, 5, 9, initial_state=True))[0],
}

ALL = {**VARIANTS, **COMPRESSED}


def _err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _node_inputs(g, x: dict) -> list:
    node = g.nodes[0]
    ins = [x.get(n) if n else None for n in node.inputs]
    return ins + [None] * (4 - len(ins))


@pytest.mark.parametrize("name", list(ALL))
def test_delta_kernel_at_zero_threshold_equals_dense(rng, name, tol):
    """The delta kernel itself (not the θ = 0 dispatch) reproduces the dense kernel."""
    g = ALL[name](rng)
    model = Model(g)
    cls, _ = select(g, g.nodes[0], delta=True)
    kernel = cls(g, g.nodes[0])
    for n in (1, 3):
        x = testing.random_inputs(g, rng, 11, n)
        dense = model.run(x)
        got = kernel(_node_inputs(g, x), thresholds=(0.0, 0.0))
        for out, name_ in zip(got, [o for o in g.nodes[0].outputs]):
            assert _err(out, dense[name_]) <= tol["float32"], (name, name_, n)


@pytest.mark.parametrize("name", ["lstm_peep_bidir_lens", "gru_lbr0_bidir_lens", "lstm_svd"])
def test_zero_threshold_dispatches_to_dense(rng, name):
    g = ALL[name](rng)
    model = Model(g)
    x = testing.random_inputs(g, rng, 10, 2)
    dense = model.run(x)
    got = model.run(x, delta=0.0)
    for k in dense:
        np.testing.assert_array_equal(got[k], dense[k])      # the same kernel ran
    s = model.last_stats.layers[g.nodes[0].name]
    assert s.skipped_input == 0 and s.skipped_recurrent == 0 and s.macs == s.macs_dense > 0


# ---- an independent float64 delta network, written from docs/design.md (delta) -------

def _sig(v):
    return 1.0 / (1.0 + np.exp(-v))


def _keep(v, vhat, th):
    d = v - vhat
    k = np.abs(d) > th
    vhat[k] = v[k]
    return np.where(k, d, 0.0), int(k.sum())


def np_delta(op: Op, w: dict, x: np.ndarray, th: tuple, lbr: bool = False):
    """Forward, batch 1, default activations, float64. x [T, I] -> (y [T, H], kept_x, kept_h)."""
    wx, wh = (np.asarray(w[k], np.float64)[0] for k in ("w_x", "w_h"))
    hs = wh.shape[1]
    xhat, hhat = np.zeros(x.shape[1]), np.zeros(hs)
    h, c = np.zeros(hs), np.zeros(hs)
    mx, mh = np.zeros(wx.shape[0]), np.zeros(wh.shape[0])
    ys, kx, kh = [], 0, 0
    for t in range(x.shape[0]):
        dx, nx = _keep(x[t].astype(np.float64), xhat, th[0])
        dh, nh = _keep(h, hhat, th[1])
        kx, kh = kx + nx, kh + nh
        mx += wx @ dx
        if op is Op.GRU and not lbr:
            mh[:2 * hs] += wh[:2 * hs] @ dh[:]
        else:
            mh += wh @ dh
        if op is Op.LSTM:
            a = mx + mh + np.asarray(w["b"], np.float64)[0]
            i, f, g, o = np.split(a, 4)
            c = _sig(f) * c + _sig(i) * np.tanh(g)
            h = _sig(o) * np.tanh(c)
        elif op is Op.GRU:
            bx, bh = (np.asarray(w[k], np.float64)[0] for k in ("b_x", "b_h"))
            zr = _sig(mx[:2 * hs] + bx[:2 * hs] + mh[:2 * hs] + bh[:2 * hs])
            z, r = zr[:hs], zr[hs:]
            if lbr:
                n = np.tanh(mx[2 * hs:] + bx[2 * hs:] + r * (mh[2 * hs:] + bh[2 * hs:]))
            else:
                n = np.tanh(mx[2 * hs:] + bx[2 * hs:] + wh[2 * hs:] @ (r * h) + bh[2 * hs:])
            h = (1 - z) * n + z * h
        else:
            h = np.tanh(mx + mh + np.asarray(w["b"], np.float64)[0])
        ys.append(h.copy())
    return np.array(ys), kx, kh


def _smooth(rng, t_len, n_in):
    """A temporally correlated input (random walk), so thresholds skip a real share."""
    return np.cumsum(0.15 * rng.standard_normal((t_len, n_in)), axis=0).astype(np.float32)


CASES = [(Op.LSTM, False), (Op.GRU, False), (Op.GRU, True), (Op.RNN, False)]


@pytest.mark.parametrize("op,lbr", CASES, ids=["lstm", "gru_lbr0", "gru_lbr1", "rnn"])
@pytest.mark.parametrize("th", [(0.05, 0.05), (0.2, 0.1), (0.0, 0.3)])
def test_delta_matches_numpy_delta_network(rng, op, lbr, th):
    if op is Op.LSTM:
        g = testing.lstm_graph(rng, 6, 16)
    elif op is Op.GRU:
        g = testing.gru_graph(rng, 6, 16, linear_before_reset=lbr)
    else:
        g = testing.rnn_graph(rng, 6, 16)
    w = {s: g.constants[n] for s, n in g.nodes[0].weights.items()}
    x = _smooth(rng, 40, 6)
    want, kx, kh = np_delta(op, w, x, th, lbr)
    model = Model(g)
    got = model.run({"x": x[:, None, :]}, delta=th)["y"][:, 0, 0]
    assert _err(got, want) <= 1e-5
    s = model.last_stats.layers[g.nodes[0].name]
    assert (s.kept_input, s.kept_recurrent, s.row_steps) == (kx, kh, 40)
    assert s.skipped_recurrent > 0.05 or th[1] == 0.0     # the case does skip something
    # the delta result differs from the dense one (a test of skipping that can fail)
    assert _err(got, Model(g).run({"x": x[:, None, :]})["y"][:, 0, 0]) > 1e-4


def test_int8_delta_matches_numpy_delta_on_dequantised_weights(rng):
    g = int8.apply(testing.lstm_graph(rng, 6, 16))[0]
    node = g.nodes[0]
    w = {s: g.constants[n] for s, n in node.weights.items()}
    for s in ("w_x", "w_h"):
        w[s] = w[s].astype(np.float64) * g.scale(node, s)[..., None]
    x = _smooth(rng, 40, 6)
    want, kx, kh = np_delta(Op.LSTM, w, x, (0.1, 0.05))
    got = Model(g).run({"x": x[:, None, :]}, delta=(0.1, 0.05))["y"][:, 0, 0]
    assert _err(got, want) <= 1e-5


# ---- streaming ---------------------------------------------------------------------------

STREAMABLE = ["lstm", "lstm_cifg_forget_peep", "lstm_relu_acts", "gru_lbr1_init_bf",
              "rnn_relu_init", "lstm_int8", "lstm_int8_plain", "lstm_svd", "gru_lbr0_int8",
              "lstmp_int8"]


@pytest.mark.parametrize("name", STREAMABLE)
@pytest.mark.parametrize("sizes", [(1,), (3, 1, 7), (40,)], ids=["1", "3-1-7", "all"])
def test_stream_chunks_equal_full_delta_run(rng, name, sizes):
    g = ALL[name](rng)
    if g.nodes[0].attrs["direction"] != "forward":
        pytest.fail("streaming case must be forward")
    model = Model(g)
    bf = g.nodes[0].attrs["batch_first"]
    x = testing.random_inputs(g, rng, 23, 2)
    x["x"] = np.cumsum(0.2 * x["x"], axis=1 if bf else 0).astype(np.float32)
    th = {g.nodes[0].name: (0.1, 0.05)}
    full = model.run(x, delta=th)
    s = model.stream(delta=th)
    ys, start, k = [], 0, 0
    while start < 23:
        n = min(sizes[k % len(sizes)], 23 - start)
        sl = (slice(None), slice(start, start + n)) if bf else (slice(start, start + n),)
        chunk = {"x": x["x"][sl]}
        chunk.update({kk: v for kk, v in x.items() if kk.startswith("initial")} if start == 0
                     else {})
        out = s.push(chunk)
        ys.append(out["y"])
        start, k = start + n, k + 1
    y = np.concatenate(ys, axis=1 if bf else 0)
    assert _err(y, full["y"]) <= 1e-6
    assert _err(out["y_h"], full["y_h"]) <= 1e-6
    assert s.stats.layers[g.nodes[0].name].kept_recurrent == \
        model.last_stats.layers[g.nodes[0].name].kept_recurrent


def test_stream_state_checkpoint_resumes_exactly(rng):
    g = testing.lstm_graph(rng, 5, 9)
    model = Model(g)
    x = np.cumsum(0.2 * rng.standard_normal((30, 1, 5)), axis=0).astype(np.float32)
    s = model.stream(delta=0.1)
    s.push({"x": x[:12]})
    saved = s.state
    assert set(saved["lstm"]) == {"h", "c", "x_hat", "h_hat", "m_x", "m_h"}
    tail = s.push({"x": x[12:]})["y"]
    s2 = model.stream(delta=0.1)
    s2.state = saved
    np.testing.assert_array_equal(s2.push({"x": x[12:]})["y"], tail)
    s.reset()
    np.testing.assert_array_equal(s.push({"x": x})["y"], model.run({"x": x}, delta=0.1)["y"])


# ---- statistics and errors ---------------------------------------------------------------

def test_stats_count_macs_of_a_two_layer_stack(rng):
    attrs = {"hidden_size": 8}
    g = testing.stacked_graph(Op.LSTM, 4, attrs, [testing.lstm_weights(rng, 4, 8),
                                                  testing.lstm_weights(rng, 8, 8)])
    model = Model(g)
    names = [n.name for n in g.nodes if n.op is Op.LSTM]
    x = {"x": np.cumsum(0.1 * rng.standard_normal((20, 3, 4)), axis=0).astype(np.float32)}
    model.run(x, delta={names[1]: 1e9})       # layer 1 skips everything, layer 0 runs dense
    st = model.last_stats
    assert set(st.layers) == {names[1]}
    s = st.layers[names[1]]
    assert s.row_steps == 60 and s.kept_input == 0 and s.kept_recurrent == 0
    assert s.macs == 0 and s.macs_dense == 60 * (8 * 32 + 8 * 32)
    assert s.skipped_input == 1.0 and "skip" in str(st)


def test_bad_thresholds_are_input_errors(rng):
    model = Model(testing.gru_graph(rng, 3, 4))
    x = {"x": np.zeros((2, 1, 3), np.float32)}
    for bad, what in [(-0.1, ">= 0"), ({"nope": 0.1}, "unknown recurrent node"),
                      ("big", "number or a pair"), (float("nan"), "finite")]:
        with pytest.raises(InputError, match=what):
            model.run(x, delta=bad)


def test_model_built_with_delta_plan_uses_delta_kernel(rng, tol):
    g = testing.rnn_graph(rng, 3, 6)
    model = Model(g, delta={"rnn": {"theta_x": 0.0, "theta_h": 0.0}})
    assert is_delta_kernel(model.plan.steps[0].kernel), model.describe()
    x = testing.random_inputs(g, rng, 9, 2)
    assert _err(model.run(x)["y"], Model(g).run(x)["y"]) <= tol["float32"]


def test_model_built_with_delta_streams_like_its_full_run(rng):
    # the plan's delta state is carried between pushes (a fresh one per push drifted)
    g = testing.rnn_graph(rng, 3, 6)
    model = Model(g, delta={"rnn": {"theta_x": 0.05, "theta_h": 0.02}})
    x = testing.random_inputs(g, rng, 9, 2)
    want = model.run(x)["y"]
    stream = model.stream()
    got = np.concatenate([stream.push({"x": x["x"][a:b]})["y"]
                          for a, b in ((0, 3), (3, 4), (4, 9))])
    assert np.array_equal(got, want)
