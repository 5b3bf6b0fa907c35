"""Runtime recurrent kernels vs the float64 reference interpreter, over a seeded grid of
every feature x direction x layout, with per-batch lengths and initial states."""
from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest

from edgeseq import reference, testing
from edgeseq.ops import Op
from edgeseq.runtime import Model

DIRECTIONS = ("forward", "reverse", "bidirectional")

LSTM_FEATURES = {
    "plain": {},
    "peephole": {"peephole": True},
    "cifg_input": {"coupled_gate": "input", "peephole": True},
    "cifg_forget": {"coupled_gate": "forget"},
    "proj": {"proj_size": 4, "proj_bias": True, "proj_clip": 0.3},
    "layer_norm": {"layer_norm": True, "peephole": True},
    "clips": {"cell_clip": 0.4, "gate_clip": 1.5},
    "acts": {"activations": ("hard_sigmoid", "softsign", "relu"),
             "activation_alpha": (0.3, 0.0, 0.0), "activation_beta": (0.4, 0.0, 0.0)},
    "all": {"peephole": True, "layer_norm": True, "proj_size": 3, "proj_bias": True,
            "coupled_gate": "input", "cell_clip": 0.8, "proj_clip": 0.5, "gate_clip": 2.0,
            "activations": ("sigmoid", "scaled_tanh", "elu"),
            "activation_alpha": (0.0, 1.3, 0.7), "activation_beta": (0.0, 0.8, 0.0)},
}
GRU_FEATURES = {
    "lbr0": {}, "lbr1": {"linear_before_reset": True},
    "clip_acts": {"gate_clip": 0.8, "activations": ("hard_sigmoid", "leaky_relu"),
                  "activation_alpha": (0.25, 0.1), "activation_beta": (0.5, 0.0)},
}
RNN_FEATURES = {
    "tanh": {}, "relu": {"activations": ("relu",)},
    "affine_clip": {"activations": ("affine",), "activation_alpha": (0.7,),
                    "activation_beta": (0.1,), "gate_clip": 0.9},
    "softplus": {"activations": ("softplus",)},
    "thresholded": {"activations": ("thresholded_relu",), "activation_alpha": (0.2,)},
}
BUILDERS = {"lstm": (testing.lstm_graph, LSTM_FEATURES), "gru": (testing.gru_graph, GRU_FEATURES),
            "rnn": (testing.rnn_graph, RNN_FEATURES)}

CASES = [(kind, feat, direction, bf)
         for kind, (_, feats) in BUILDERS.items()
         for feat, direction, bf in itertools.product(feats, DIRECTIONS, (False, True))]


def _inputs(graph, rng, t_len, n_batch):
    """Random inputs; lengths include 0, 1 and the full length."""
    ins = testing.random_inputs(graph, rng, t_len, n_batch)
    if "sequence_lens" in ins:
        lens = rng.integers(0, t_len + 1, size=n_batch)
        lens[0] = t_len
        if n_batch > 2:
            lens[1], lens[2] = 0, 1
        ins["sequence_lens"] = lens.astype(np.int32)
    return ins


@pytest.mark.parametrize("kind,feat,direction,bf", CASES,
                         ids=[f"{k}-{f}-{d}-{'bf' if b else 'tm'}" for k, f, d, b in CASES])
def test_recurrent_matches_reference(kind, feat, direction, bf, tol):
    # a distinct, reproducible stream per case
    rng = np.random.default_rng(zlib.crc32(f"{kind}-{feat}-{direction}-{bf}".encode()))
    build, feats = BUILDERS[kind]
    n_input, hidden = int(rng.integers(3, 9)), int(rng.integers(4, 11))
    t_len, n_batch = int(rng.integers(5, 12)), int(rng.integers(1, 5))
    feature = dict(feats[feat])
    if direction == "bidirectional":      # one activation list per direction
        feature.update({k: tuple(v) * 2 for k, v in feature.items() if k.startswith("activation")})
    graph = build(rng, n_input, hidden, direction=direction, batch_first=bf,
                  seq_lens=bool(rng.integers(0, 2)), initial_state=bool(rng.integers(0, 2)),
                  **feature)
    ins = _inputs(graph, rng, t_len, n_batch)
    want = reference.run(graph, ins)
    got = Model(graph, warmup=False).run(ins)
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == np.float32
        assert got[name].shape == want[name].shape, name
        err = float(np.max(np.abs(got[name] - want[name]))) if want[name].size else 0.0
        assert err <= tol["float32"], f"{name}: max abs error {err:.3g}"


@pytest.mark.parametrize("hidden,n_input,n_batch", [(33, 17, 1), (64, 40, 6), (130, 20, 3)])
def test_larger_sizes_match_reference(hidden, n_input, n_batch, tol):
    """Sizes that exercise the vector loops' remainders and the batch blocking (4 rows)."""
    rng = np.random.default_rng(hidden)
    for graph in (testing.lstm_graph(rng, n_input, hidden, peephole=True, seq_lens=True),
                  testing.gru_graph(rng, n_input, hidden, seq_lens=True),
                  testing.rnn_graph(rng, n_input, hidden, seq_lens=True)):
        ins = _inputs(graph, rng, 9, n_batch)
        want = reference.run(graph, ins)
        got = Model(graph, warmup=False).run(ins)
        for name in want:
            assert np.max(np.abs(got[name] - want[name])) <= tol["float32"], name


def test_in_kernel_projection_path_matches(tol):
    """T*N below GEMM_MIN_ROWS runs the input projection inside the kernel."""
    rng = np.random.default_rng(5)
    graph = testing.lstm_graph(rng, 6, 9, layer_norm=True, proj_size=4)
    ins = testing.random_inputs(graph, rng, 1, 1)
    want = reference.run(graph, ins)
    got = Model(graph, warmup=False).run(ins)
    for name in want:
        assert np.max(np.abs(got[name] - want[name])) <= tol["float32"]


def test_stacked_bidirectional_graph_with_glue(tol):
    rng = np.random.default_rng(11)
    attrs = {"hidden_size": 6, "direction": "bidirectional"}
    layers = [testing.lstm_weights(rng, 5, 6, d=2), testing.lstm_weights(rng, 12, 6, d=2)]
    graph = testing.stacked_graph(Op.LSTM, 5, attrs, layers, seq_lens=True)
    ins = _inputs(graph, rng, 8, 3)
    want = reference.run(graph, ins)
    got = Model(graph, warmup=False).run(ins)
    for name in want:
        assert np.max(np.abs(got[name] - want[name])) <= tol["float32"], name


def test_compressed_weights_without_a_kernel_fall_back_to_float32(tol, monkeypatch):
    """A GRU with int8 W_x (per-row scales) and float16 W_h, with its dedicated kernel taken
    out of the registry: the plan says it falls back, and the result equals the reference on
    the dequantised weights."""
    from edgeseq.runtime import plan  # noqa: F401  (registers the built-in families)
    from edgeseq.runtime.registry import REGISTRY
    for key in [k for k in REGISTRY if k.op is Op.GRU and k.wdtype != "float32"]:
        monkeypatch.delitem(REGISTRY, key)
    rng = np.random.default_rng(21)
    g = testing.gru_graph(rng, 5, 6)
    w_x = g.constants["gru.w_x"]
    scale = (np.abs(w_x).max(axis=-1) / 127.0).astype(np.float32)
    g.constants["gru.w_x"] = np.round(w_x / scale[..., None]).astype(np.int8)
    g.constants["gru.w_x.scale"] = scale
    g.constants["gru.w_h"] = g.constants["gru.w_h"].astype(np.float16)
    g.validate()
    model = Model(g, warmup=False)
    assert "fallback from (GRU, mixed, dense, exact)" in model.describe()
    ins = testing.random_inputs(g, rng, 7, 2)
    want = reference.run(g, ins)
    got = model.run(ins)
    for name in want:
        assert np.max(np.abs(got[name] - want[name])) <= tol["float32"], name
