"""Hand-derived cases for what PyTorch lacks, against a per-step scalar implementation.

`scalar_*` below are written straight from docs/design.md (the IR) / the ONNX formulas with plain Python
floats and loops, one batch element and one unit at a time; they share no code with
edgeseq.reference. Each case also checks that its feature changes the result (so the case
would fail if the reference ignored it).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from edgeseq import reference
from edgeseq.ops import ACTIVATIONS, Op
from edgeseq.testing import gru_graph, lstm_graph, random_inputs, rnn_graph


# ---- independent scalar implementation -------------------------------------------------------
def act(name: str, alpha: float, beta: float):
    return {
        "sigmoid": lambda v: 1.0 / (1.0 + math.exp(-v)),
        "tanh": math.tanh,
        "relu": lambda v: max(0.0, v),
        "affine": lambda v: alpha * v + beta,
        "leaky_relu": lambda v: v if v >= 0 else alpha * v,
        "thresholded_relu": lambda v: v if v > alpha else 0.0,
        "scaled_tanh": lambda v: alpha * math.tanh(beta * v),
        "hard_sigmoid": lambda v: max(0.0, min(1.0, alpha * v + beta)),
        "elu": lambda v: v if v >= 0 else alpha * (math.exp(v) - 1.0),
        "softsign": lambda v: v / (1.0 + abs(v)),
        "softplus": lambda v: math.log(1.0 + math.exp(v)),
    }[name]


def clip(v: float, bound: float) -> float:
    return min(max(v, -bound), bound) if bound > 0 else v


def dot(row, vec) -> float:
    return sum(float(a) * float(b) for a, b in zip(row, vec))


def direction_acts(attrs: dict, d: int, k: int):
    names = attrs["activations"][d * k:(d + 1) * k]
    al = attrs["activation_alpha"][d * k:(d + 1) * k]
    be = attrs["activation_beta"][d * k:(d + 1) * k]
    return [act(n, a, b) for n, a, b in zip(names, al, be)]


def lstm_unit_step(x, h, c, w, attrs, acts):
    """One step of one batch element; lists of floats in, lists out."""
    fa, ga, ha = acts
    hs = len(c)
    b, p, ln = w.get("b"), w.get("peephole"), w.get("layer_norm")

    def raw(g):
        return [dot(w["w_x"][g * hs + j], x) + dot(w["w_h"][g * hs + j], h) for j in range(hs)]

    def gate(g, a):
        if ln is not None:
            mu = sum(a) / hs
            var = sum((v - mu) ** 2 for v in a) / hs
            a = [ln[g][j] * (a[j] - mu) / math.sqrt(var + attrs["layer_norm_epsilon"])
                 for j in range(hs)]
        if b is not None:
            a = [a[j] + b[g * hs + j] for j in range(hs)]
        return [clip(v, attrs["gate_clip"]) for v in a]

    a_i, a_f, a_c, a_o = raw(0), raw(1), raw(2), raw(3)
    if p is not None:
        a_i = [a_i[j] + p[0][j] * c[j] for j in range(hs)]
        a_f = [a_f[j] + p[1][j] * c[j] for j in range(hs)]
    i = [fa(v) for v in gate(0, a_i)]
    f = [fa(v) for v in gate(1, a_f)]
    if attrs["coupled_gate"] == "input":
        i = [1.0 - v for v in f]
    elif attrs["coupled_gate"] == "forget":
        f = [1.0 - v for v in i]
    g = [ga(v) for v in gate(2, a_c)]
    c = [clip(f[j] * c[j] + i[j] * g[j], attrs["cell_clip"]) for j in range(hs)]
    if p is not None:
        a_o = [a_o[j] + p[2][j] * c[j] for j in range(hs)]
    o = [fa(v) for v in gate(3, a_o)]
    m = [o[j] * ha(c[j]) for j in range(hs)]
    if "w_proj" not in w:
        return m, c
    bp = w.get("b_proj")
    h = [dot(w["w_proj"][q], m) + (bp[q] if bp is not None else 0.0)
         for q in range(len(w["w_proj"]))]
    return [clip(v, attrs["proj_clip"]) for v in h], c


def gru_unit_step(x, h, w, attrs, acts):
    fa, ga = acts
    hs = len(h)
    gc = attrs["gate_clip"]
    bx = w.get("b_x", np.zeros(3 * hs))
    bh = w.get("b_h", np.zeros(3 * hs))
    wx, wh = w["w_x"], w["w_h"]
    z = [fa(clip(dot(wx[j], x) + dot(wh[j], h) + bx[j] + bh[j], gc)) for j in range(hs)]
    r = [fa(clip(dot(wx[hs + j], x) + dot(wh[hs + j], h) + bx[hs + j] + bh[hs + j], gc))
         for j in range(hs)]
    rh = [r[k] * h[k] for k in range(hs)]
    cand = []
    for j in range(hs):
        row = 2 * hs + j
        if attrs["linear_before_reset"]:
            rec = r[j] * (dot(wh[row], h) + bh[row])
        else:
            rec = dot(wh[row], rh) + bh[row]
        cand.append(ga(clip(dot(wx[row], x) + rec + bx[row], gc)))
    return [(1.0 - z[j]) * cand[j] + z[j] * h[j] for j in range(hs)]


def rnn_unit_step(x, h, w, attrs, acts):
    (fa,) = acts
    b = w.get("b", np.zeros(len(h)))
    return [fa(clip(dot(w["w_x"][j], x) + dot(w["w_h"][j], h) + b[j], attrs["gate_clip"]))
            for j in range(len(h))]


def scalar_run(graph, inputs: dict, weights: dict | None = None) -> dict:
    """Run the single recurrent node of `graph` with the scalar cells above.

    weights: float64 slot -> [D, ...] arrays (default: the graph's float constants)."""
    (node,) = graph.nodes
    attrs = node.attrs
    op = node.op
    if weights is None:
        weights = {s: graph.constants[c].astype(np.float64) for s, c in node.weights.items()}
    bf = attrs["batch_first"]
    x = inputs["x"].astype(np.float64)
    x = x.transpose(1, 0, 2) if bf else x
    t_len, n = x.shape[:2]
    n_dir = 2 if attrs["direction"] == "bidirectional" else 1
    hs = attrs["hidden_size"]
    ps = attrs.get("proj_size", 0) or hs
    lens = inputs.get("sequence_lens", np.full(n, t_len))

    def init(name, size):
        if name not in inputs:
            return np.zeros((n_dir, n, size))
        s = inputs[name].astype(np.float64)
        return s.transpose(1, 0, 2) if bf else s

    h0, c0 = init("initial_h", ps), init("initial_c", hs)
    y = np.zeros((t_len, n_dir, n, ps))
    y_h, y_c = np.zeros((n_dir, n, ps)), np.zeros((n_dir, n, hs))
    k = {Op.LSTM: 3, Op.GRU: 2, Op.RNN: 1}[op]
    for d in range(n_dir):
        w = {s: v[d] for s, v in weights.items()}
        acts = direction_acts(attrs, d, k)
        reverse = attrs["direction"] == "reverse" or d == 1
        for b in range(n):
            h, c = list(h0[d, b]), list(c0[d, b])
            steps = range(int(lens[b]))
            for t in (reversed(steps) if reverse else steps):
                xt = list(x[t, b])
                if op is Op.LSTM:
                    h, c = lstm_unit_step(xt, h, c, w, attrs, acts)
                elif op is Op.GRU:
                    h = gru_unit_step(xt, h, w, attrs, acts)
                else:
                    h = rnn_unit_step(xt, h, w, attrs, acts)
                y[t, d, b] = h
            y_h[d, b] = h
            y_c[d, b] = c
    out = {"y": y.transpose(2, 0, 1, 3) if bf else y,
           "y_h": y_h.transpose(1, 0, 2) if bf else y_h}
    if op is Op.LSTM:
        out["y_c"] = y_c.transpose(1, 0, 2) if bf else y_c
    return out


def max_err(a: dict, b: dict) -> float:
    """Max abs error over outputs, relative where |b| > 1 (affine/relu cells can grow)."""
    errs = []
    for k in b:
        assert a[k].shape == b[k].shape, f"{k}: {a[k].shape} vs {b[k].shape}"
        errs.append(float(np.max(np.abs(a[k] - b[k]) / np.maximum(1.0, np.abs(b[k])))))
    return max(errs)


BUILDERS = {Op.LSTM: lstm_graph, Op.GRU: gru_graph, Op.RNN: rnn_graph}


def check(op: Op, seed: int, T=5, N=3, n_input=3, hidden=4, off: dict | None = None,
          scale=1.0, **features) -> dict:
    """Reference vs scalar for a graph with `features`; if `off` is given, also require that
    switching the feature off (graph built from the same seed with `off` overrides) changes
    the scalar result by more than 1e-3. Returns the reference outputs."""
    graph = BUILDERS[op](np.random.default_rng(seed), n_input, hidden, **features)
    inputs = random_inputs(graph, np.random.default_rng(seed + 1), T, N, scale=scale)
    got = reference.run(graph, inputs)
    want = scalar_run(graph, inputs)
    assert max_err(got, want) <= 1e-12, f"reference vs scalar: {max_err(got, want):.3g}"
    if off is not None:
        g_off = BUILDERS[op](np.random.default_rng(seed), n_input, hidden, **{**features, **off})
        inputs_off = {k: v for k, v in inputs.items() if k in {i.name for i in g_off.inputs}}
        delta = max_err(scalar_run(g_off, inputs_off), want)
        assert delta > 1e-3, f"feature {off} makes no difference ({delta:.3g}): weak case"
    return got


# ---- LSTM features ----------------------------------------------------------------------------
LSTM_CASES = {
    "plain": (dict(), None),
    "peephole": (dict(peephole=True), dict(peephole=False)),
    "cifg_input": (dict(coupled_gate="input"), dict(coupled_gate="none")),
    "cifg_forget": (dict(coupled_gate="forget"), dict(coupled_gate="none")),
    "cifg_input_peephole": (dict(coupled_gate="input", peephole=True), dict(peephole=False)),
    "cifg_forget_peephole": (dict(coupled_gate="forget", peephole=True), dict(peephole=False)),
    "layer_norm": (dict(layer_norm=True), dict(layer_norm=False)),
    "layer_norm_peephole_cifg": (dict(layer_norm=True, peephole=True, coupled_gate="input"),
                                 dict(layer_norm=False)),
    "layer_norm_big_eps": (dict(layer_norm=True, layer_norm_epsilon=0.5),
                           dict(layer_norm_epsilon=1e-8)),
    "cell_clip": (dict(cell_clip=0.3, weight_scale=2.0), dict(cell_clip=0.0)),
    "projection": (dict(proj_size=2), None),
    "projection_bias": (dict(proj_size=3, proj_bias=True), dict(proj_bias=False)),
    "proj_clip": (dict(proj_size=3, proj_clip=0.1, weight_scale=1.5), dict(proj_clip=0.0)),
    "gate_clip": (dict(gate_clip=0.5, weight_scale=2.0), dict(gate_clip=0.0)),
    "no_bias": (dict(bias=False), dict(bias=True)),
    "reverse": (dict(direction="reverse"), dict(direction="forward")),
    "bidirectional_batch_first": (dict(direction="bidirectional", batch_first=True), None),
    "initial_state": (dict(initial_state=True), None),
    "lengths": (dict(seq_lens=True), None),
    "lengths_reverse_initial": (dict(seq_lens=True, direction="reverse", initial_state=True),
                                None),
    "lengths_bidirectional": (dict(seq_lens=True, direction="bidirectional"), None),
    "everything": (dict(direction="bidirectional", proj_size=3, proj_bias=True, peephole=True,
                        coupled_gate="forget", layer_norm=True, cell_clip=0.8, proj_clip=0.6,
                        gate_clip=3.0, batch_first=True, seq_lens=True, initial_state=True),
                   None),
}


@pytest.mark.parametrize("case", sorted(LSTM_CASES))
def test_lstm_feature(case):
    features, off = LSTM_CASES[case]
    got = check(Op.LSTM, 11, off=off, **features)
    if case == "cell_clip":
        assert np.isclose(np.abs(got["y_c"]).max(), 0.3), "cell clip never reached"
    if case == "proj_clip":
        assert np.isclose(np.abs(got["y_h"]).max(), 0.1), "projection clip never reached"


def test_gate_clip_bounds_preactivations():
    """With hard_sigmoid/affine activations the clip is visible directly in the gates."""
    got = check(Op.RNN, 3, activations=("affine",), activation_alpha=(1.0,),
                activation_beta=(0.0,), gate_clip=0.25, weight_scale=3.0, off=dict(gate_clip=0.0))
    assert np.isclose(np.abs(got["y"]).max(), 0.25)


def test_coupling_direction_matters():
    """Running the reference with the other coupling is far off: the coupling is not symmetric."""
    g = lstm_graph(np.random.default_rng(5), 3, 4, coupled_gate="input")
    inputs = random_inputs(g, np.random.default_rng(6), 5, 3)
    want = scalar_run(g, inputs)
    g.nodes[0].attrs["coupled_gate"] = "forget"     # same weights, wrong coupling
    assert max_err(reference.run(g, inputs), want) > 1e-2


# ---- sequence lengths -------------------------------------------------------------------------
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("op", [Op.LSTM, Op.GRU, Op.RNN])
def test_short_sequences(op, direction):
    graph = BUILDERS[op](np.random.default_rng(2), 3, 4, direction=direction, seq_lens=True,
                         initial_state=True)
    inputs = random_inputs(graph, np.random.default_rng(3), 6, 4)
    inputs["sequence_lens"] = np.array([6, 2, 1, 4], np.int32)
    got = reference.run(graph, inputs)
    assert max_err(got, scalar_run(graph, inputs)) <= 1e-12
    for b, n in enumerate(inputs["sequence_lens"]):
        assert not got["y"][n:, :, b].any(), "outputs past the end must be zero"
        # forward final state = output at the last valid step; reverse final = output at t=0
        assert np.array_equal(got["y_h"][0, b], got["y"][n - 1 if direction != "reverse" else 0, 0, b])
        if direction == "bidirectional":
            assert np.array_equal(got["y_h"][1, b], got["y"][0, 1, b])


# ---- activations ------------------------------------------------------------------------------
def _alpha_beta(rng, names):
    al = [float(rng.uniform(0.3, 1.5)) if ACTIVATIONS[n][0] is not None else 0.0 for n in names]
    be = [float(rng.uniform(-0.5, 0.8)) if ACTIVATIONS[n][1] is not None else 0.0 for n in names]
    return tuple(al), tuple(be)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("op", [Op.LSTM, Op.GRU, Op.RNN])
def test_activation(op, name):
    rng = np.random.default_rng(sorted(ACTIVATIONS).index(name))
    k = {Op.LSTM: 3, Op.GRU: 2, Op.RNN: 1}[op]
    names = (name,) * k
    al, be = _alpha_beta(rng, names)
    default = {Op.LSTM: ("sigmoid", "tanh", "tanh"), Op.GRU: ("sigmoid", "tanh"),
               Op.RNN: ("tanh",)}[op]
    off = dict(activations=default, activation_alpha=None, activation_beta=None) \
        if names != default else None
    check(op, 21, T=4, scale=2.0, activations=names, activation_alpha=al, activation_beta=be,
          off=off)


def test_activation_per_direction():
    names = ("hard_sigmoid", "softsign", "elu", "sigmoid", "tanh", "scaled_tanh")
    al, be = _alpha_beta(np.random.default_rng(0), names)
    check(Op.LSTM, 4, direction="bidirectional", activations=names, activation_alpha=al,
          activation_beta=be)


# ---- GRU / RNN --------------------------------------------------------------------------------
@pytest.mark.parametrize("lbr", [False, True])
@pytest.mark.parametrize("extra", [dict(), dict(direction="bidirectional", seq_lens=True),
                                   dict(gate_clip=0.4, weight_scale=2.0, batch_first=True),
                                   dict(bias=False, initial_state=True)])
def test_gru(lbr, extra):
    check(Op.GRU, 9, linear_before_reset=lbr, off=dict(linear_before_reset=not lbr), **extra)


def test_rnn_reverse_lengths():
    check(Op.RNN, 8, direction="reverse", seq_lens=True, initial_state=True,
          off=dict(direction="forward"))


# ---- stored weight forms: int8 + scale, float16, factored --------------------------------------
def _requant(graph, slot, form, rng):
    """Replace `slot` of the graph's node by an int8/float16 version; return its float64 value."""
    node = graph.nodes[0]
    name = node.weights[slot]
    w = graph.constants[name].astype(np.float64)
    if form == "int8":
        scale = (np.abs(w).max(axis=-1) / 127.0).astype(np.float32)
        q = np.round(w / scale[..., None]).astype(np.int8)
        graph.constants[name], graph.constants[name + ".scale"] = q, scale
        return q.astype(np.float64) * scale.astype(np.float64)[..., None]
    graph.constants[name] = w.astype(np.float16)
    return graph.constants[name].astype(np.float64)


@pytest.mark.parametrize("form", ["int8", "float16"])
@pytest.mark.parametrize("op", [Op.LSTM, Op.GRU, Op.RNN])
def test_quantised_weights(op, form):
    rng = np.random.default_rng(1)
    graph = BUILDERS[op](rng, 3, 4, direction="bidirectional")
    inputs = random_inputs(graph, rng, 5, 2)
    weights = {s: graph.constants[c].astype(np.float64) for s, c in graph.nodes[0].weights.items()}
    weights["w_x"] = _requant(graph, "w_x", form, rng)
    weights["w_h"] = _requant(graph, "w_h", form, rng)
    graph.validate()
    assert max_err(reference.run(graph, inputs), scalar_run(graph, inputs, weights)) <= 1e-12


def test_factored_recurrent_weight():
    rng = np.random.default_rng(3)
    graph = lstm_graph(rng, 3, 4, proj_size=3, peephole=True)
    node = graph.nodes[0]
    u = rng.uniform(-0.5, 0.5, (1, 16, 2)).astype(np.float32)
    v = rng.uniform(-0.5, 0.5, (1, 2, 3)).astype(np.float32)
    del graph.constants[node.weights.pop("w_h")]
    graph.constants["u"], graph.constants["v"] = u, v
    node.weights.update(w_h_u="u", w_h_v="v")
    graph.validate()
    inputs = random_inputs(graph, rng, 5, 2)
    weights = {s: graph.constants[c].astype(np.float64) for s, c in node.weights.items()
               if s not in ("w_h_u", "w_h_v")}
    weights["w_h"] = u.astype(np.float64) @ v.astype(np.float64)
    assert max_err(reference.run(graph, inputs), scalar_run(graph, inputs, weights)) <= 1e-12


# ---- random combinations of every LSTM feature --------------------------------------------------
def _random_lstm_features(rng: np.random.Generator) -> dict:
    pick = lambda *options: options[int(rng.integers(len(options)))]  # noqa: E731
    hidden = int(rng.integers(1, 6))
    return dict(direction=pick("forward", "reverse", "bidirectional"),
                proj_size=pick(0, 0, int(rng.integers(1, 5))), proj_bias=pick(False, True),
                peephole=pick(False, True), coupled_gate=pick("none", "input", "forget"),
                layer_norm=pick(False, True), cell_clip=pick(0.0, 0.5, 2.0),
                proj_clip=pick(0.0, 0.3), gate_clip=pick(0.0, 1.0),
                batch_first=pick(False, True), seq_lens=pick(False, True),
                initial_state=pick(False, True), bias=pick(True, True, False),
                weight_scale=pick(None, 1.5)), hidden


@pytest.mark.parametrize("seed", range(16))
def test_random_lstm_feature_combination(seed):
    rng = np.random.default_rng([seed, 99])
    features, hidden = _random_lstm_features(rng)
    if not features["proj_size"]:
        features["proj_bias"], features["proj_clip"] = False, 0.0
    graph = lstm_graph(rng, int(rng.integers(1, 5)), hidden, **features)
    inputs = random_inputs(graph, rng, int(rng.integers(1, 6)), int(rng.integers(1, 4)))
    assert max_err(reference.run(graph, inputs), scalar_run(graph, inputs)) <= 1e-12, features


@pytest.mark.parametrize("op", [Op.LSTM, Op.GRU, Op.RNN])
def test_zero_length_keeps_initial_state(op):
    """A sequence of length 0 runs no step: outputs zero, final state = initial state.
    (onnxruntime returns zeros for its final state instead; ONNX leaves it unspecified.)"""
    graph = BUILDERS[op](np.random.default_rng(4), 3, 4, direction="bidirectional",
                         seq_lens=True, initial_state=True)
    inputs = random_inputs(graph, np.random.default_rng(5), 4, 2)
    inputs["sequence_lens"] = np.array([0, 4], np.int32)
    got = reference.run(graph, inputs)
    assert max_err(got, scalar_run(graph, inputs)) <= 1e-12
    assert not got["y"][:, :, 0].any()
    np.testing.assert_array_equal(got["y_h"][:, 0], inputs["initial_h"][:, 0])
    if op is Op.LSTM:
        np.testing.assert_array_equal(got["y_c"][:, 0], inputs["initial_c"][:, 0])
