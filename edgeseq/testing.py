"""Random graph builders for tests (shared by every test tier).

`lstm_graph`, `gru_graph`, `rnn_graph` build a one-node graph with random float32 weights
(PyTorch-like init U(-1/sqrt(H), 1/sqrt(H))) and any combination of features;
`recurrent_graph` wraps given weight arrays; `stacked_graph` chains layers the way a
multi-layer PyTorch/ONNX model does; `random_inputs` produces matching inputs.
Graph inputs: x, then sequence_lens (if asked), initial_h / initial_c (if asked).
Graph outputs: y, y_h, (y_c for LSTM).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import Op, num_directions

GATE_INDEX = {"input": 0, "forget": 1}       # LSTM row block of the CIFG-derived gate


def _uniform(rng: np.random.Generator, shape, bound: float) -> np.ndarray:
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def _state_shape(batch_first: bool, d: int, size: int) -> tuple:
    return ("N", d, size) if batch_first else (d, "N", size)


def recurrent_graph(op: Op, n_input: int, attrs: dict, weights: dict[str, np.ndarray], *,
                    seq_lens: bool = False, initial_state: bool = False,
                    x_dtype: str = "float32", name: str | None = None) -> Graph:
    """A validated one-node graph of `op` with the given weight arrays (slot -> array).

    Constants are named "<node>.<slot>"; an int8 weight needs its scale under
    weights["<slot>.scale"]."""
    node_name = op.value.lower()
    attrs = dict(attrs)
    d = num_directions(attrs)
    bf = bool(attrs.get("batch_first", False))
    p = attrs.get("proj_size", 0) or attrs["hidden_size"]
    inputs = [Value("x", x_dtype, ("N", "T", n_input) if bf else ("T", "N", n_input))]
    node_in = ["x", "", ""] + ([""] if op is Op.LSTM else [])
    if seq_lens:
        inputs.append(Value("sequence_lens", "int32", ("N",)))
        node_in[1] = "sequence_lens"
    if initial_state:
        inputs.append(Value("initial_h", x_dtype, _state_shape(bf, d, p)))
        node_in[2] = "initial_h"
        if op is Op.LSTM:
            inputs.append(Value("initial_c", x_dtype, _state_shape(bf, d, attrs["hidden_size"])))
            node_in[3] = "initial_c"
    while node_in and not node_in[-1]:
        node_in.pop()
    outs = ["y", "y_h"] + (["y_c"] if op is Op.LSTM else [])
    constants = {f"{node_name}.{k}": np.asarray(v) for k, v in weights.items()}
    slots = {k: f"{node_name}.{k}" for k in weights if not k.endswith(".scale")}
    node = Node(node_name, op, node_in, outs, attrs, slots)
    g = Graph(name or f"random_{node_name}", inputs, [Value(o, x_dtype, ()) for o in outs],
              [node], constants)
    return g.validate()


def _activation_attrs(activations, activation_alpha, activation_beta) -> dict:
    out = {}
    if activations is not None:
        out["activations"] = tuple(activations)
    if activation_alpha is not None:
        out["activation_alpha"] = tuple(activation_alpha)
    if activation_beta is not None:
        out["activation_beta"] = tuple(activation_beta)
    return out


def lstm_weights(rng: np.random.Generator, n_input: int, hidden: int, *, d: int = 1,
                 proj_size: int = 0, proj_bias: bool = False, peephole: bool = False,
                 coupled_gate: str = "none", layer_norm: bool = False, bias: bool = True,
                 weight_scale: float | None = None) -> dict[str, np.ndarray]:
    """Random float32 LSTM weights by slot (the CIFG-derived gate's rows are zero)."""
    s = 1.0 / np.sqrt(hidden) if weight_scale is None else weight_scale
    p = proj_size or hidden
    w = {"w_x": _uniform(rng, (d, 4 * hidden, n_input), s),
         "w_h": _uniform(rng, (d, 4 * hidden, p), s)}
    if bias:
        w["b"] = _uniform(rng, (d, 4 * hidden), s)
    if peephole:
        w["peephole"] = _uniform(rng, (d, 3, hidden), s)
    if layer_norm:
        w["layer_norm"] = rng.uniform(0.5, 1.5, size=(d, 4, hidden)).astype(np.float32)
    if proj_size:
        w["w_proj"] = _uniform(rng, (d, proj_size, hidden), s)
        if proj_bias:
            w["b_proj"] = _uniform(rng, (d, proj_size), s)
    if coupled_gate != "none":
        k = GATE_INDEX[coupled_gate]
        rows = slice(k * hidden, (k + 1) * hidden)
        for slot in ("w_x", "w_h", "b"):
            if slot in w:
                w[slot][:, rows] = 0.0
        if "layer_norm" in w:
            w["layer_norm"][:, k] = 0.0
        if "peephole" in w:
            w["peephole"][:, k] = 0.0    # peephole rows are i, f, o: k is 0 or 1 here too
    return w


def lstm_graph(rng: np.random.Generator, n_input: int, hidden: int, *,
               direction: str = "forward", proj_size: int = 0, proj_bias: bool = False,
               peephole: bool = False, coupled_gate: str = "none", layer_norm: bool = False,
               cell_clip: float = 0.0, proj_clip: float = 0.0, gate_clip: float = 0.0,
               batch_first: bool = False, seq_lens: bool = False, initial_state: bool = False,
               activations: Sequence[str] | None = None,
               activation_alpha: Sequence[float] | None = None,
               activation_beta: Sequence[float] | None = None, bias: bool = True,
               weight_scale: float | None = None, layer_norm_epsilon: float = 1e-8) -> Graph:
    """A one-node LSTM graph with random weights and the requested features."""
    attrs = {"hidden_size": hidden, "direction": direction, "proj_size": proj_size,
             "coupled_gate": coupled_gate, "cell_clip": cell_clip, "proj_clip": proj_clip,
             "gate_clip": gate_clip, "batch_first": batch_first,
             "layer_norm_epsilon": layer_norm_epsilon,
             **_activation_attrs(activations, activation_alpha, activation_beta)}
    d = 2 if direction == "bidirectional" else 1
    w = lstm_weights(rng, n_input, hidden, d=d, proj_size=proj_size, proj_bias=proj_bias,
                     peephole=peephole, coupled_gate=coupled_gate, layer_norm=layer_norm,
                     bias=bias, weight_scale=weight_scale)
    return recurrent_graph(Op.LSTM, n_input, attrs, w, seq_lens=seq_lens,
                           initial_state=initial_state)


def gru_graph(rng: np.random.Generator, n_input: int, hidden: int, *,
              linear_before_reset: bool = False, direction: str = "forward",
              batch_first: bool = False, seq_lens: bool = False, initial_state: bool = False,
              activations: Sequence[str] | None = None,
              activation_alpha: Sequence[float] | None = None,
              activation_beta: Sequence[float] | None = None, gate_clip: float = 0.0,
              bias: bool = True, weight_scale: float | None = None) -> Graph:
    """A one-node GRU graph (ONNX gate order z, r, h) with random weights."""
    s = 1.0 / np.sqrt(hidden) if weight_scale is None else weight_scale
    d = 2 if direction == "bidirectional" else 1
    w = {"w_x": _uniform(rng, (d, 3 * hidden, n_input), s),
         "w_h": _uniform(rng, (d, 3 * hidden, hidden), s)}
    if bias:
        w["b_x"] = _uniform(rng, (d, 3 * hidden), s)
        w["b_h"] = _uniform(rng, (d, 3 * hidden), s)
    attrs = {"hidden_size": hidden, "direction": direction, "batch_first": batch_first,
             "linear_before_reset": linear_before_reset, "gate_clip": gate_clip,
             **_activation_attrs(activations, activation_alpha, activation_beta)}
    return recurrent_graph(Op.GRU, n_input, attrs, w, seq_lens=seq_lens,
                           initial_state=initial_state)


def rnn_graph(rng: np.random.Generator, n_input: int, hidden: int, *,
              direction: str = "forward", batch_first: bool = False, seq_lens: bool = False,
              initial_state: bool = False, activations: Sequence[str] | None = None,
              activation_alpha: Sequence[float] | None = None,
              activation_beta: Sequence[float] | None = None, gate_clip: float = 0.0,
              bias: bool = True, weight_scale: float | None = None) -> Graph:
    """A one-node simple RNN graph with random weights."""
    s = 1.0 / np.sqrt(hidden) if weight_scale is None else weight_scale
    d = 2 if direction == "bidirectional" else 1
    w = {"w_x": _uniform(rng, (d, hidden, n_input), s),
         "w_h": _uniform(rng, (d, hidden, hidden), s)}
    if bias:
        w["b"] = _uniform(rng, (d, hidden), s)
    attrs = {"hidden_size": hidden, "direction": direction, "batch_first": batch_first,
             "gate_clip": gate_clip,
             **_activation_attrs(activations, activation_alpha, activation_beta)}
    return recurrent_graph(Op.RNN, n_input, attrs, w, seq_lens=seq_lens,
                           initial_state=initial_state)


def stacked_graph(op: Op, n_input: int, attrs: dict, layers: list[dict[str, np.ndarray]], *,
                  seq_lens: bool = False, initial_state: bool = False,
                  name: str = "stack") -> Graph:
    """A multi-layer recurrent graph: one node per layer (both directions in one node), the
    next layer reading y reshaped to [T, N, D*P] (Transpose + Reshape, as ONNX exporters do).

    Inputs: x, sequence_lens, initial_h_<l>, initial_c_<l>; outputs: y (last layer's y,
    [T, D, N, P] or [N, T, D, P]), y_h_<l>, y_c_<l> per layer."""
    attrs = dict(attrs)
    bf = bool(attrs.get("batch_first", False))
    d = num_directions(attrs)
    h = attrs["hidden_size"]
    p = attrs.get("proj_size", 0) or h
    inputs = [Value("x", "float32", ("N", "T", n_input) if bf else ("T", "N", n_input))]
    if seq_lens:
        inputs.append(Value("sequence_lens", "int32", ("N",)))
    nodes, constants, outputs = [], {}, []
    prev = "x"
    for l, weights in enumerate(layers):
        node_in = [prev, "sequence_lens" if seq_lens else "", "", ""]
        if initial_state:
            inputs.append(Value(f"initial_h_{l}", "float32", _state_shape(bf, d, p)))
            node_in[2] = f"initial_h_{l}"
            if op is Op.LSTM:
                inputs.append(Value(f"initial_c_{l}", "float32", _state_shape(bf, d, h)))
                node_in[3] = f"initial_c_{l}"
        node_in = node_in[:4 if op is Op.LSTM else 3]
        while not node_in[-1]:
            node_in.pop()
        y = "y" if l == len(layers) - 1 else f"y_{l}"
        outs = [y, f"y_h_{l}"] + ([f"y_c_{l}"] if op is Op.LSTM else [])
        for k, v in weights.items():
            constants[f"l{l}.{k}"] = np.asarray(v)
        slots = {k: f"l{l}.{k}" for k in weights if not k.endswith(".scale")}
        nodes.append(Node(f"layer{l}", op, node_in, outs, dict(attrs), slots))
        outputs += outs[1:]
        if l < len(layers) - 1:
            src = y
            if not bf:   # [T, D, N, P] -> [T, N, D, P]
                nodes.append(Node(f"transpose{l}", Op.TRANSPOSE, [y], [f"yt_{l}"],
                                  {"perm": (0, 2, 1, 3)}))
                src = f"yt_{l}"
            nodes.append(Node(f"reshape{l}", Op.RESHAPE, [src], [f"x_{l + 1}"],
                              {"shape": (0, 0, -1)}))
            prev = f"x_{l + 1}"
    g = Graph(name, inputs, [Value(o, "float32", ()) for o in ["y"] + outputs], nodes, constants)
    return g.validate()


def random_inputs(graph: Graph, rng: np.random.Generator, T: int, N: int, *,
                  dims: dict[str, int] | None = None, scale: float = 1.0,
                  full_lengths: bool = False) -> dict[str, np.ndarray]:
    """Inputs matching `graph`: floats ~ N(0, scale²) in the declared float dtype, integer
    inputs (sequence_lens) in [1, T] with at least one == T (all T if full_lengths).
    Symbols "T" and "N" take T and N; others come from `dims`."""
    sizes = {"T": T, "N": N, **(dims or {})}
    out = {}
    for v in graph.inputs:
        shape = tuple(d if isinstance(d, int) else sizes[d] for d in v.shape)
        if v.dtype.startswith("float"):
            out[v.name] = (scale * rng.standard_normal(shape)).astype(v.dtype)
        else:
            lens = np.full(shape, T) if full_lengths else rng.integers(1, T + 1, size=shape)
            if lens.size and not full_lengths:
                lens.flat[rng.integers(lens.size)] = T
            out[v.name] = lens.astype(v.dtype)
    return out


# ONNX graphs for converter tests (onnx and onnxruntime are the `onnx` extra: imported here
# only when called)

def onnx_model(nodes, inputs, outputs, inits=(), opset: int = 17):
    """A one-graph ONNX ModelProto (IR version 8) from onnx.helper nodes and value infos."""
    from onnx import helper
    m = helper.make_model(helper.make_graph(nodes, "m", inputs, outputs, list(inits)),
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def onnx_value(name: str, shape, elem_type: int = 1):
    """A value info (default elem_type 1 = float32)."""
    from onnx import helper
    return helper.make_tensor_value_info(name, elem_type, shape)


def onnxruntime_run(model, feeds: dict) -> dict:
    """Run a ModelProto in onnxruntime on the CPU: {output name: array}."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))
