"""Randomised LSTM / GRU / RNN models against onnxruntime, every attribute combination.

Each case builds a one-node ONNX model with random weights (onnx.helper), runs it in
onnxruntime (float32), converts it with edgeseq's ONNX converter and runs the converted graph
on the float64 reference interpreter and on the Numba runtime. Random weights catch gate-order and bias-split mistakes
the official node tests (all-ones weights) cannot.

onnxruntime deviations from the ONNX spec, and how each is handled here:
- layout=1 is rejected by onnxruntime ("Batchwise recurrent operations ... are not
  supported"): the ORT side runs the equivalent layout=0 model and the inputs/outputs are
  transposed around it; the converted model keeps layout=1 (edgeseq batch_first).
- input_forget=1 is implemented by onnxruntime as f = 1 - i; edgeseq records that coupling as
  coupled_gate="forget", so we compare against ORT directly.
- clip: onnxruntime clips gate pre-activations but not C_t before h(C_t) (onnxruntime issue
  27224). edgeseq's gate_clip is defined the same way (docs/design.md, the IR: clip the gate
  pre-activations), so ORT is the oracle; the cases use clip values that do bite the gates.
"""
from __future__ import annotations

import itertools
import zlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeseq import reference
from edgeseq.converters.onnx import convert
from edgeseq.ops import Op

T, N, I, H = 6, 3, 4, 5          # default sizes; the grids draw random ones per case
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
SO = ort.SessionOptions()
SO.intra_op_num_threads = 1
SO.log_severity_level = 3


def build(op: str, rng: np.random.Generator, *, direction="forward", layout=0, seq_lens=False,
          initial=False, peephole=False, input_forget=0, clip=None, bias=True,
          activations=None, alpha=None, beta=None, linear_before_reset=None,
          outputs=("Y", "Y_h", "Y_c"), hidden=H, n_input=I, scale=1.0, T=T, N=N):
    """A one-node ONNX model of `op` with random weights (initializers) and its feeds."""
    d = 2 if direction == "bidirectional" else 1
    g = GATES[op]
    bound = scale / np.sqrt(hidden)
    w = rng.uniform(-bound, bound, (d, g * hidden, n_input)).astype(np.float32)
    r = rng.uniform(-bound, bound, (d, g * hidden, hidden)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(r, "R")]
    node_in = ["X", "W", "R", "", "", "", ""]
    if bias:
        b = rng.uniform(-bound, bound, (d, 2 * g * hidden)).astype(np.float32)
        inits.append(numpy_helper.from_array(b, "B"))
        node_in[3] = "B"
    xs = (N, T, n_input) if layout else (T, N, n_input)
    st = (N, d, hidden) if layout else (d, N, hidden)
    feeds = {"X": rng.standard_normal(xs).astype(np.float32)}
    ins = [helper.make_tensor_value_info("X", TensorProto.FLOAT, xs)]
    if seq_lens:
        feeds["sequence_lens"] = rng.integers(1, T + 1, N).astype(np.int32)
        feeds["sequence_lens"][rng.integers(N)] = T
        ins.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, (N,)))
        node_in[4] = "sequence_lens"
    if initial:
        names = ["initial_h"] + (["initial_c"] if op == "LSTM" else [])
        for k, nm in enumerate(names):
            feeds[nm] = rng.standard_normal(st).astype(np.float32) * 0.5
            ins.append(helper.make_tensor_value_info(nm, TensorProto.FLOAT, st))
            node_in[5 + k] = nm
    if peephole:
        p = rng.uniform(-bound, bound, (d, 3 * hidden)).astype(np.float32)
        inits.append(numpy_helper.from_array(p, "P"))
        node_in[7:] = ["P"]
        node_in = (node_in + [""] * 8)[:8]
        node_in[7] = "P"
    node_in = node_in[:8] if op == "LSTM" else node_in[:6]
    while node_in and not node_in[-1]:
        node_in.pop()
    outs = [o if o in outputs else "" for o in (["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"])]
    while outs and not outs[-1]:
        outs.pop()
    attrs = {"hidden_size": hidden, "direction": direction}
    if layout:
        attrs["layout"] = layout
    if op == "LSTM" and input_forget:
        attrs["input_forget"] = input_forget
    if clip is not None:
        attrs["clip"] = clip
    if activations is not None:
        attrs["activations"] = activations
    if alpha is not None:
        attrs["activation_alpha"] = alpha
    if beta is not None:
        attrs["activation_beta"] = beta
    if linear_before_reset is not None:
        attrs["linear_before_reset"] = linear_before_reset
    node = helper.make_node(op, node_in, outs, name=f"{op.lower()}_node", **attrs)
    y_shape = (N, T, d, hidden) if layout else (T, d, N, hidden)
    shapes = {"Y": y_shape, "Y_h": st, "Y_c": st}
    outputs_vi = [helper.make_tensor_value_info(o, TensorProto.FLOAT, shapes[o]) for o in outs if o]
    graph = helper.make_graph([node], f"random_{op}", ins, outputs_vi, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model, feeds


def _to_layout0(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with layout=0 (what onnxruntime accepts)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    node = m.graph.node[0]
    for a in node.attribute:
        if a.name == "layout":
            a.i = 0
    for vi in list(m.graph.input) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if vi.name == "X" or vi.name.startswith("initial") or vi.name in ("Y_h", "Y_c"):
            d0, d1 = dims[0].dim_value, dims[1].dim_value
            dims[0].dim_value, dims[1].dim_value = d1, d0
        elif vi.name == "Y":          # [N,T,D,H] -> [T,D,N,H]
            n, t, d, h = (x.dim_value for x in dims)
            for x, v in zip(dims, (t, d, n, h)):
                x.dim_value = v
    return m


def run_ort(model: onnx.ModelProto, feeds: dict) -> dict:
    """onnxruntime outputs; layout=1 models run as layout=0 with transposed I/O (ORT rejects
    batchwise recurrent ops)."""
    layout = next((a.i for a in model.graph.node[0].attribute if a.name == "layout"), 0)
    names = [o.name for o in model.graph.output]
    if not layout:
        sess = ort.InferenceSession(model.SerializeToString(), SO, providers=["CPUExecutionProvider"])
        return dict(zip(names, sess.run(None, feeds)))
    f0 = {k: (v.transpose(1, 0, 2) if v.ndim == 3 else v) for k, v in feeds.items()}
    sess = ort.InferenceSession(_to_layout0(model).SerializeToString(), SO,
                                providers=["CPUExecutionProvider"])
    out = dict(zip(names, sess.run(None, f0)))
    return {k: (v.transpose(2, 0, 1, 3) if k == "Y" else v.transpose(1, 0, 2)) for k, v in out.items()}


def case_rng(rng, *params) -> np.random.Generator:
    """A generator of its own per grid case (the `rng` fixture restarts at one seed for every
    test), so sizes and weights differ from case to case yet are reproducible."""
    return np.random.default_rng([int(rng.integers(2 ** 31)), zlib.crc32(repr(params).encode())])


def sizes(rng) -> dict:
    """Random sizes for one case (small: the grid is large)."""
    return {"hidden": int(rng.integers(1, 9)), "n_input": int(rng.integers(1, 7)),
            "T": int(rng.integers(1, 8)), "N": int(rng.integers(1, 5))}


def check(model, feeds, tol):
    """Converted graph on the reference interpreter and on the Numba runtime vs onnxruntime."""
    from edgeseq.runtime import Model
    want = run_ort(model, feeds)
    graph = convert(model)
    for engine, got in (("reference", reference.run(graph, feeds)),
                        ("runtime", Model(graph, warmup=False).run(feeds))):
        assert set(got) == set(want), engine
        for k in want:
            assert got[k].shape == want[k].shape, (engine, k, got[k].shape, want[k].shape)
            err = float(np.max(np.abs(got[k] - want[k])))
            assert err <= tol["float32"], f"{engine} {k}: max abs error {err:.3g}"
    return graph


DIRECTIONS = ("forward", "reverse", "bidirectional")
LSTM_GRID = list(itertools.product(DIRECTIONS, (0, 1), (False, True), (False, True),
                                   (False, True), (0, 1), (None, 0.8)))


@pytest.mark.parametrize("direction,layout,seq_lens,initial,peephole,input_forget,clip", LSTM_GRID)
def test_lstm_grid(direction, layout, seq_lens, initial, peephole, input_forget, clip, rng, tol):
    rng = case_rng(rng, direction, layout, seq_lens, initial, peephole, input_forget, clip)
    model, feeds = build("LSTM", rng, direction=direction, layout=layout, seq_lens=seq_lens,
                         initial=initial, peephole=peephole, input_forget=input_forget,
                         clip=clip, scale=3.0 if clip else 1.0, **sizes(rng))
    g = check(model, feeds, tol)
    node = next(g.recurrent_nodes())
    assert node.attrs["coupled_gate"] == ("forget" if input_forget else "none")
    assert node.attrs["batch_first"] == bool(layout)


@pytest.mark.parametrize("op,direction,layout,seq_lens,initial,lbr,clip", [
    (op, d, lay, s, i, lbr, c)
    for op, d, lay, s, i, lbr, c in itertools.product(
        ("GRU", "RNN"), DIRECTIONS, (0, 1), (False, True), (False, True), (0, 1), (None, 0.7))
    if not (op == "RNN" and lbr)])
def test_gru_rnn_grid(op, direction, layout, seq_lens, initial, lbr, clip, rng, tol):
    rng = case_rng(rng, op, direction, layout, seq_lens, initial, lbr, clip)
    model, feeds = build(op, rng, direction=direction, layout=layout, seq_lens=seq_lens,
                         initial=initial, clip=clip, scale=3.0 if clip else 1.0,
                         linear_before_reset=lbr if op == "GRU" else None, **sizes(rng))
    check(model, feeds, tol)


# Activations with alpha/beta: ONNX consumes activation_alpha / activation_beta in order, only
# for the functions that take the parameter.
ACTIVATION_CASES = [
    ("LSTM", "forward", ["HardSigmoid", "LeakyRelu", "Tanh"], [0.3, 0.05], [0.45]),
    ("LSTM", "bidirectional", ["Sigmoid", "ScaledTanh", "Affine", "HardSigmoid", "Tanh", "Softsign"],
     [0.9, 0.7, 0.25], [1.1, 0.1, 0.5]),
    ("LSTM", "reverse", ["Sigmoid", "Elu", "Softplus"], [0.8], None),
    ("GRU", "forward", ["HardSigmoid", "ThresholdedRelu"], [0.25, 0.1], [0.55]),
    ("GRU", "bidirectional", ["Sigmoid", "Relu", "HardSigmoid", "Tanh"], [0.2], [0.5]),
    ("RNN", "forward", ["Relu"], None, None),
    ("RNN", "bidirectional", ["LeakyRelu", "ScaledTanh"], [0.1, 0.8], [1.2]),
    ("RNN", "reverse", ["Softsign"], None, None),
]


@pytest.mark.parametrize("op,direction,acts,alpha,beta", ACTIVATION_CASES)
def test_activations(op, direction, acts, alpha, beta, rng, tol):
    model, feeds = build(op, rng, direction=direction, activations=acts, alpha=alpha, beta=beta,
                         seq_lens=True, initial=True)
    check(model, feeds, tol)


@pytest.mark.parametrize("op,outputs", [("LSTM", ("Y",)), ("LSTM", ("Y_h",)), ("LSTM", ("Y_c",)),
                                        ("LSTM", ("Y_h", "Y_c")), ("GRU", ("Y_h",)), ("RNN", ("Y",))])
def test_optional_outputs(op, outputs, rng, tol):
    model, feeds = build(op, rng, outputs=outputs, direction="bidirectional", seq_lens=True)
    check(model, feeds, tol)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_no_bias_and_odd_sizes(op, rng, tol):
    model, feeds = build(op, rng, bias=False, hidden=7, n_input=1, initial=True)
    check(model, feeds, tol)


def test_gate_order_is_mapped(rng):
    """Mutation check: the converted LSTM weights are ONNX i,o,f,c re-stacked as i,f,c,o."""
    model, _ = build("LSTM", rng)
    w = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "W"))
    g = convert(model)
    node = next(g.recurrent_nodes())
    got = g.weight(node, "w_x")
    for onnx_k, es_k in ((0, 0), (1, 3), (2, 1), (3, 2)):
        np.testing.assert_array_equal(got[:, es_k * H:(es_k + 1) * H], w[:, onnx_k * H:(onnx_k + 1) * H])


def test_sequence_lens_and_states_may_be_constants(rng, tol):
    model, feeds = build("LSTM", rng, seq_lens=True, initial=True, direction="bidirectional")
    # move sequence_lens and initial states from graph inputs to initializers
    g = model.graph
    for name in ("sequence_lens", "initial_h", "initial_c"):
        g.initializer.append(numpy_helper.from_array(feeds[name], name))
    keep = [vi for vi in g.input if vi.name == "X"]
    del g.input[:]
    g.input.extend(keep)
    want = run_ort(model, {"X": feeds["X"]})
    got = reference.run(convert(model), {"X": feeds["X"]})
    for k in want:
        assert np.max(np.abs(got[k] - want[k])) <= tol["float32"]
