"""edgeseq.reference vs PyTorch (float64) for nn.LSTM (incl. proj_size), nn.GRU, nn.RNN.

Torch parameters are rounded to float32 values first, so both sides use the very same weights
(graph constants are float32) and the comparison is float64 vs float64.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeseq import reference
from edgeseq.ops import Op
from edgeseq.testing import random_inputs, stacked_graph

# torch gate blocks -> edgeseq gate blocks
TORCH_ORDER = {Op.LSTM: [0, 1, 2, 3],   # i, f, g, o -> i, f, c, o
               Op.GRU: [1, 0, 2],       # r, z, n -> z, r, h
               Op.RNN: [0]}
N_GATES = {Op.LSTM: 4, Op.GRU: 3, Op.RNN: 1}


def _blocks(w: np.ndarray, order: list[int]) -> np.ndarray:
    parts = np.split(w, len(order), axis=0)
    return np.concatenate([parts[i] for i in order], axis=0)


def torch_layers(module: torch.nn.RNNBase, op: Op, order=None, sum_biases=True) -> list[dict]:
    """Per-layer edgeseq weight dicts (float32) from a torch module's parameters."""
    order = TORCH_ORDER[op] if order is None else order
    sfx = ["", "_reverse"] if module.bidirectional else [""]
    layers = []
    for l in range(module.num_layers):
        def get(name):
            return np.stack([getattr(module, f"{name}_l{l}{s}").detach().numpy() for s in sfx])
        w = {"w_x": np.stack([_blocks(a, order) for a in get("weight_ih")]),
             "w_h": np.stack([_blocks(a, order) for a in get("weight_hh")])}
        b_ih = np.stack([_blocks(a, order) for a in get("bias_ih")])
        b_hh = np.stack([_blocks(a, order) for a in get("bias_hh")])
        if op is Op.GRU:
            w["b_x"], w["b_h"] = b_ih, b_hh
        else:
            w["b"] = b_ih + b_hh if sum_biases else b_ih
        if op is Op.LSTM and module.proj_size:
            w["w_proj"] = get("weight_hr")
        layers.append({k: v.astype(np.float32) for k, v in w.items()})
    return layers


def _round_params(module: torch.nn.Module, sum_biases: bool) -> torch.nn.Module:
    """Make every parameter a float32 value (graph constants are float32); with summed
    biases also make b_ih + b_hh a float32 value, so both sides see the same bias exactly."""
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.float().double())
        if sum_biases:
            for name, b_ih in module.named_parameters():
                if name.startswith("bias_ih"):
                    b_hh = getattr(module, name.replace("bias_ih", "bias_hh"))
                    b_hh.copy_((b_ih + b_hh).float().double() - b_ih)
    return module


def build(op: Op, rng, *, layers=1, bidir=False, proj=False, batch_first=False, lens=False,
          init=False, nonlinearity="tanh"):
    """A float64 torch module, the matching edgeseq graph, inputs and the torch outputs."""
    n_in, hid = int(rng.integers(1, 7)), int(rng.integers(2 if proj else 1, 9))
    proj_size = int(rng.integers(1, hid)) if proj else 0   # torch wants proj_size < hidden
    kw = dict(num_layers=layers, bidirectional=bidir, batch_first=batch_first)
    if op is Op.LSTM:
        mod = torch.nn.LSTM(n_in, hid, proj_size=proj_size, **kw)
    elif op is Op.GRU:
        mod = torch.nn.GRU(n_in, hid, **kw)
    else:
        mod = torch.nn.RNN(n_in, hid, nonlinearity=nonlinearity, **kw)
    mod = _round_params(mod, sum_biases=op is not Op.GRU)
    attrs = {"hidden_size": hid, "direction": "bidirectional" if bidir else "forward",
             "batch_first": batch_first}
    if op is Op.LSTM:
        attrs["proj_size"] = proj_size
    if op is Op.GRU:
        attrs["linear_before_reset"] = True
    if op is Op.RNN:
        attrs["activations"] = (nonlinearity,)
    graph = stacked_graph(op, n_in, attrs, torch_layers(mod, op), seq_lens=lens,
                          initial_state=init)
    t_len, n = int(rng.integers(1, 8)), int(rng.integers(1, 5))
    inputs = random_inputs(graph, rng, t_len, n)
    return mod, graph, inputs, attrs


def torch_run(mod, op, graph, inputs, attrs):
    """Torch outputs laid out like edgeseq's: y [T,D,N,P] (or [N,T,D,P]), states per layer."""
    bf = attrs["batch_first"]
    d = 2 if attrs["direction"] == "bidirectional" else 1
    x = torch.from_numpy(inputs["x"].astype(np.float64))
    hx = None
    if "initial_h_0" in inputs:
        def stack(prefix):
            s = [inputs[f"{prefix}_{l}"].astype(np.float64) for l in range(mod.num_layers)]
            s = [a.transpose(1, 0, 2) if bf else a for a in s]    # -> [D, N, *]
            return torch.from_numpy(np.concatenate(s, axis=0))
        hx = (stack("initial_h"), stack("initial_c")) if op is Op.LSTM else stack("initial_h")
    if "sequence_lens" in inputs:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, torch.from_numpy(inputs["sequence_lens"].astype(np.int64)), batch_first=bf,
            enforce_sorted=False)
        y, states = mod(packed, hx)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=bf,
                                                      total_length=x.shape[1 if bf else 0])
    else:
        y, states = mod(x, hx)
    y = y.detach().numpy()
    y = y.reshape(y.shape[:2] + (d, -1))                  # [T, N, D, P] / [N, T, D, P]
    if not bf:
        y = y.transpose(0, 2, 1, 3)
    states = states if isinstance(states, tuple) else (states,)
    out = {"y": y}
    for name, s in zip(("y_h", "y_c"), states):
        s = s.detach().numpy()
        for l in range(mod.num_layers):
            part = s[l * d:(l + 1) * d]
            out[f"{name}_{l}"] = part.transpose(1, 0, 2) if bf else part
    return out


def max_err(ref: dict, want: dict) -> float:
    errs = []
    for k, v in want.items():
        assert ref[k].shape == v.shape, f"{k}: {ref[k].shape} vs {v.shape}"
        errs.append(float(np.max(np.abs(ref[k] - v))) if v.size else 0.0)
    return max(errs)


# a seeded grid: each case draws its own random sizes
LSTM_CASES = [
    dict(),
    dict(bidir=True),
    dict(proj=True),
    dict(proj=True, bidir=True, layers=2),
    dict(layers=3, batch_first=True, init=True),
    dict(lens=True),
    dict(lens=True, bidir=True, init=True, proj=True),
    dict(lens=True, bidir=True, batch_first=True, layers=2),
]
GRU_CASES = [dict(), dict(bidir=True, init=True), dict(layers=2, batch_first=True),
             dict(lens=True, bidir=True, layers=2)]
RNN_CASES = [dict(nonlinearity="tanh"), dict(nonlinearity="relu", bidir=True, init=True),
             dict(nonlinearity="relu", lens=True, layers=2, batch_first=True),
             dict(nonlinearity="tanh", lens=True, bidir=True)]
CASES = ([(Op.LSTM, c) for c in LSTM_CASES] + [(Op.GRU, c) for c in GRU_CASES]
         + [(Op.RNN, c) for c in RNN_CASES])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("op,case", CASES, ids=[f"{o.value}-{'-'.join(f'{k}={v}' for k, v in c.items()) or 'plain'}"
                                                for o, c in CASES])
def test_reference_matches_torch(op, case, seed, tol):
    rng = np.random.default_rng([seed, len(case), N_GATES[op]])
    mod, graph, inputs, attrs = build(op, rng, **case)
    want = torch_run(mod, op, graph, inputs, attrs)
    got = reference.run(graph, inputs)
    assert max_err(got, want) <= tol["reference_vs_torch_f64"]


# ---- mutations: a wrong mapping must be caught by the comparison above ----------------------
def _mutated_error(op, order=None, sum_biases=True, **kw) -> float:
    rng = np.random.default_rng(7)
    while True:   # sizes with hidden >= 2 so that a gate swap changes something
        mod, graph, inputs, attrs = build(op, rng, **kw)
        if attrs["hidden_size"] >= 2 and inputs["x"].shape[0] >= 3:
            break
    want = torch_run(mod, op, graph, inputs, attrs)
    bad = stacked_graph(op, graph.inputs[0].shape[-1], attrs,
                        torch_layers(mod, op, order=order, sum_biases=sum_biases),
                        seq_lens="sequence_lens" in inputs,
                        initial_state="initial_h_0" in inputs)
    return max_err(reference.run(bad, inputs), want)


MUTATIONS = {
    "lstm_swap_f_o": dict(op=Op.LSTM, order=[0, 3, 2, 1]),
    "lstm_swap_i_c": dict(op=Op.LSTM, order=[2, 1, 0, 3]),
    "lstm_drop_recurrent_bias": dict(op=Op.LSTM, sum_biases=False),
    "gru_torch_order_unmapped": dict(op=Op.GRU, order=[0, 1, 2]),
    "rnn_drop_recurrent_bias": dict(op=Op.RNN, sum_biases=False),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_wrong_mapping_is_caught(name, tol):
    err = _mutated_error(**MUTATIONS[name])
    assert err > 1e3 * tol["reference_vs_torch_f64"], f"{name}: error {err:.3g} too small"
