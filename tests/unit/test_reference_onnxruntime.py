"""edgeseq.reference vs onnxruntime (ONNX LSTM/GRU/RNN) on every ONNX-expressible
feature: directions, sequence lengths, initial states, peepholes, input_forget (edgeseq
coupled_gate="forget"), clip (gate_clip), activations with alpha/beta, GRU both
linear_before_reset forms. Random weights from edgeseq.testing, mapped here to ONNX layout.
onnxruntime implements these ops in float32 only, so the bound is the float32 tolerance."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgeseq import reference
from edgeseq.ops import ACTIVATIONS, Op
from edgeseq.testing import gru_graph, lstm_graph, random_inputs, rnn_graph

ONNX_ACT = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "affine": "Affine",
            "leaky_relu": "LeakyRelu", "thresholded_relu": "ThresholdedRelu",
            "scaled_tanh": "ScaledTanh", "hard_sigmoid": "HardSigmoid", "elu": "Elu",
            "softsign": "Softsign", "softplus": "Softplus"}
LSTM_TO_ONNX = [0, 3, 1, 2]       # edgeseq i,f,c,o -> ONNX i,o,f,c
PEEP_TO_ONNX = [0, 2, 1]          # edgeseq i,f,o -> ONNX i,o,f


def _reorder(w: np.ndarray, order: list[int]) -> np.ndarray:
    parts = np.split(w, len(order), axis=1)
    return np.concatenate([parts[k] for k in order], axis=1)


def onnx_attrs(attrs: dict) -> dict:
    """ONNX attributes; alpha/beta lists hold only the values of functions that use them."""
    acts = attrs["activations"]
    out = {"hidden_size": attrs["hidden_size"], "direction": attrs["direction"],
           "activations": [ONNX_ACT[a] for a in acts]}
    alpha = [al for a, al in zip(acts, attrs["activation_alpha"]) if ACTIVATIONS[a][0] is not None]
    beta = [be for a, be in zip(acts, attrs["activation_beta"]) if ACTIVATIONS[a][1] is not None]
    if alpha:
        out["activation_alpha"] = alpha
    if beta:
        out["activation_beta"] = beta
    if attrs["gate_clip"] > 0:
        out["clip"] = attrs["gate_clip"]
    return out


def to_onnx(graph):
    """The graph's single recurrent node as an ONNX model (float32, time-major)."""
    (node,) = graph.nodes
    a = node.attrs
    w = {s: graph.constants[c].astype(np.float64) for s, c in node.weights.items()}
    d, hs = w["w_x"].shape[0], a["hidden_size"]
    extra = onnx_attrs(a)
    if node.op is Op.LSTM:
        W, R = _reorder(w["w_x"], LSTM_TO_ONNX), _reorder(w["w_h"], LSTM_TO_ONNX)
        B = np.concatenate([_reorder(w["b"], LSTM_TO_ONNX), np.zeros((d, 4 * hs))], axis=1)
        if a["coupled_gate"] == "forget":
            extra["input_forget"] = 1
        inits = {"W": W, "R": R, "B": B}
        if "peephole" in w:
            inits["P"] = w["peephole"][:, PEEP_TO_ONNX].reshape(d, 3 * hs)
        names = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]
        outs = ["Y", "Y_h", "Y_c"]
    elif node.op is Op.GRU:
        inits = {"W": w["w_x"], "R": w["w_h"],
                 "B": np.concatenate([w["b_x"], w["b_h"]], axis=1)}
        extra["linear_before_reset"] = int(a["linear_before_reset"])
        names = ["X", "W", "R", "B", "sequence_lens", "initial_h"]
        outs = ["Y", "Y_h"]
    else:
        inits = {"W": w["w_x"], "R": w["w_h"],
                 "B": np.concatenate([w["b"], np.zeros((d, hs))], axis=1)}
        names = ["X", "W", "R", "B", "sequence_lens", "initial_h"]
        outs = ["Y", "Y_h"]
    given = {"X"} | set(inits) | {i.name.replace("x", "X") for i in graph.inputs}
    node_in = [n if n in given else "" for n in names]
    while not node_in[-1]:
        node_in.pop()
    onnx_node = helper.make_node(node.op.value, node_in, outs, **extra)
    feeds = [n for n in node_in if n and n not in inits]
    types = {"sequence_lens": TensorProto.INT32}
    g = helper.make_graph(
        [onnx_node], "g",
        [helper.make_tensor_value_info(n, types.get(n, TensorProto.FLOAT), None) for n in feeds],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
        [helper.make_tensor(k, TensorProto.FLOAT, v.shape, v.astype(np.float32).ravel())
         for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])


def ort_run(graph, inputs):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(to_onnx(graph).SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    feeds = {("X" if k == "x" else k): v for k, v in inputs.items()}
    res = sess.run(None, feeds)
    return dict(zip(["y", "y_h", "y_c"], res))


def _config(op: Op, rng: np.random.Generator) -> dict:
    """A random combination of ONNX-expressible features."""
    cfg = dict(direction=str(rng.choice(["forward", "reverse", "bidirectional"])),
               seq_lens=bool(rng.integers(2)), initial_state=bool(rng.integers(2)),
               gate_clip=float(rng.choice([0.0, 0.0, 0.75, 2.0])))
    d = 2 if cfg["direction"] == "bidirectional" else 1
    k = {Op.LSTM: 3, Op.GRU: 2, Op.RNN: 1}[op]
    if rng.integers(3) == 0:          # non-default activations with float32-exact alpha/beta
        names = [str(rng.choice(sorted(ACTIVATIONS))) for _ in range(k * d)]
        cfg["activations"] = names
        cfg["activation_alpha"] = [float(rng.integers(1, 12)) / 8 for _ in names]
        cfg["activation_beta"] = [float(rng.integers(-4, 5)) / 8 for _ in names]
    if op is Op.LSTM:
        cfg["peephole"] = bool(rng.integers(2))
        cfg["coupled_gate"] = "forget" if rng.integers(3) == 0 else "none"
    if op is Op.GRU:
        cfg["linear_before_reset"] = bool(rng.integers(2))
    return cfg


BUILDERS = {Op.LSTM: lstm_graph, Op.GRU: gru_graph, Op.RNN: rnn_graph}


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("op", [Op.LSTM, Op.GRU, Op.RNN])
def test_reference_matches_onnxruntime(op, seed, tol):
    rng = np.random.default_rng([seed, {Op.LSTM: 0, Op.GRU: 1, Op.RNN: 2}[op]])
    cfg = _config(op, rng)
    graph = BUILDERS[op](rng, int(rng.integers(1, 6)), int(rng.integers(1, 7)), **cfg)
    inputs = random_inputs(graph, rng, int(rng.integers(1, 7)), int(rng.integers(1, 4)))
    got = reference.run(graph, inputs)
    want = ort_run(graph, inputs)
    for k, v in want.items():
        assert got[k].shape == v.shape, f"{k}: {got[k].shape} vs {v.shape}"
        err = float(np.max(np.abs(got[k] - v) / np.maximum(1.0, np.abs(v)))) if v.size else 0.0
        assert err <= tol["float32"], f"{k}: error {err:.3g} with {cfg}"
