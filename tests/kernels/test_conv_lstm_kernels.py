"""ConvLSTM (1-D): the float64 reference against the common PyTorch ConvLSTMCell stepped in a
Python loop (float64), and the compiled runtime kernel against the reference over directions,
peepholes, padding, batch_first, lengths, initial states and activations; streaming in chunks
equals one full run."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from edgeseq import reference
from edgeseq.errors import GraphError
from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import Op
from edgeseq.quant import int8
from edgeseq.runtime import Model

TOL = 1e-5


class ConvLSTMCell(torch.nn.Module):
    """The common PyTorch ConvLSTM cell, 1-D: one conv over [x, h] gives gates i, f, o, g."""

    def __init__(self, n_in: int, hidden: int, k: int):
        super().__init__()
        self.hidden_dim = hidden
        self.conv = torch.nn.Conv1d(n_in + hidden, 4 * hidden, k, padding=k // 2)

    def forward(self, x, state):
        h, c = state
        i, f, o, g = torch.split(self.conv(torch.cat([x, h], dim=1)), self.hidden_dim, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


def graph_from_cell(cell: ConvLSTMCell, n_in: int, length) -> Graph:
    """The IR node for a cell (written here from the cell's definition, independently of the
    converters): gates reordered i, f, o, g -> i, f, c, o; the conv split into x and h parts."""
    h = cell.hidden_dim
    w = cell.conv.weight.detach().numpy()
    b = cell.conv.bias.detach().numpy()
    order = np.concatenate([np.arange(h) + h * g for g in (0, 1, 3, 2)])
    k = w.shape[-1]
    consts = {"w_x": w[order, :n_in][None], "w_h": w[order, n_in:][None], "b": b[order][None]}
    consts = {n: np.ascontiguousarray(a, np.float32) for n, a in consts.items()}
    node = Node("cl", Op.CONV_LSTM, ["x", "", "h0", "c0"], ["y", "y_h", "y_c"],
                {"hidden_size": h, "pads": (k // 2, k // 2)}, {n: n for n in consts})
    st = (1, "N", h, length)
    return Graph("cl", [Value("x", "float32", ("T", "N", n_in, length)),
                        Value("h0", "float32", st), Value("c0", "float32", st)],
                 [Value(o, "float32", ()) for o in ("y", "y_h", "y_c")], [node],
                 consts).validate()


@pytest.mark.parametrize("k,n_batch", [(3, 1), (5, 3), (1, 2)])
def test_reference_matches_pytorch_cell_loop(k, n_batch):
    torch.manual_seed(k)
    n_in, hidden, length, t_len = 3, 5, 7, 6
    cell = ConvLSTMCell(n_in, hidden, k).double()
    rng = np.random.default_rng(k)
    x = rng.standard_normal((t_len, n_batch, n_in, length))
    h0, c0 = rng.standard_normal((2, n_batch, hidden, length))
    h, c = torch.from_numpy(h0), torch.from_numpy(c0)
    ys = []
    with torch.no_grad():
        for t in range(t_len):
            h, c = cell(torch.from_numpy(x[t]), (h, c))
            ys.append(h.numpy())
    g = graph_from_cell(cell, n_in, length)
    got = reference.run(g, {"x": x, "h0": h0[None], "c0": c0[None]})
    assert np.abs(got["y"][:, 0] - np.stack(ys)).max() <= 1e-12
    assert np.abs(got["y_c"][0] - c.numpy()).max() <= 1e-12
    out = Model(g).run({"x": x.astype(np.float32), "h0": h0[None].astype(np.float32),
                        "c0": c0[None].astype(np.float32)})
    assert np.abs(out["y"] - got["y"]).max() <= TOL


def conv_lstm_graph(rng, n_in, hidden, length, *, k_x=3, k_h=3, pads=(1, 1),
                    direction="forward", peephole=False, batch_first=False, lens=False,
                    state=False, acts=("sigmoid", "tanh", "tanh")) -> Graph:
    d = 2 if direction == "bidirectional" else 1
    out_len = length + pads[0] + pads[1] - k_x + 1
    w = {"w_x": rng.uniform(-0.4, 0.4, (d, 4 * hidden, n_in, k_x)),
         "w_h": rng.uniform(-0.4, 0.4, (d, 4 * hidden, hidden, k_h)),
         "b": rng.uniform(-0.5, 0.5, (d, 4 * hidden))}
    if peephole:
        w["peephole"] = rng.uniform(-0.5, 0.5, (d, 3, hidden, out_len))
    consts = {n: np.asarray(a, np.float32) for n, a in w.items()}
    st = ("N", d, hidden, out_len) if batch_first else (d, "N", hidden, out_len)
    inputs = [Value("x", "float32", ("N", "T", n_in, length) if batch_first
                    else ("T", "N", n_in, length))]
    node_in = ["x", "", "", ""]
    if lens:
        inputs.append(Value("lens", "int64", ("N",)))
        node_in[1] = "lens"
    if state:
        inputs += [Value("h0", "float32", st), Value("c0", "float32", st)]
        node_in[2:] = ["h0", "c0"]
    while not node_in[-1]:
        node_in.pop()
    node = Node("cl", Op.CONV_LSTM, node_in, ["y", "y_h", "y_c"],
                {"hidden_size": hidden, "pads": pads, "direction": direction,
                 "batch_first": batch_first, "activations": acts * d}, {n: n for n in consts})
    return Graph("cl", inputs, [Value(o, "float32", ()) for o in ("y", "y_h", "y_c")], [node],
                 consts).validate()


def run_both(g: Graph, rng, t_len=5, n=3, tol=TOL):
    feeds = {}
    for v in g.inputs:
        shape = tuple(t_len if s == "T" else n if s == "N" else s for s in v.shape)
        feeds[v.name] = rng.integers(0, t_len + 1, n).astype(np.int64) if v.name == "lens" \
            else rng.standard_normal(shape).astype(np.float32)
    want = reference.run(g, {k: a.astype(np.float64) if a.dtype.kind == "f" else a
                             for k, a in feeds.items()})
    got = Model(g).run(feeds)
    for k in want:
        assert got[k].shape == want[k].shape and np.abs(got[k] - want[k]).max() <= tol, k


GRID = list(itertools.product(("forward", "reverse", "bidirectional"), (False, True),
                              ((3, 3, (1, 1)), (2, 4, (0, 0)), (3, 1, (2, 0)))))


@pytest.mark.parametrize("direction,peephole,conv", GRID)
def test_runtime_matches_reference(direction, peephole, conv):
    k = GRID.index((direction, peephole, conv))
    rng = np.random.default_rng(k)
    k_x, k_h, pads = conv
    acts = ("sigmoid", "tanh", "tanh") if k % 3 else ("hard_sigmoid", "relu", "softsign")
    g = conv_lstm_graph(rng, 3, 4, 7, k_x=k_x, k_h=k_h, pads=pads, direction=direction,
                        peephole=peephole, batch_first=k % 2 == 1, lens=k % 4 < 2,
                        state=k % 3 == 0, acts=acts)
    run_both(g, rng, n=1 if k % 5 == 0 else 3)


def test_int8_weights():
    rng = np.random.default_rng(3)
    q, _ = int8.apply(conv_lstm_graph(rng, 3, 4, 6, peephole=True))
    assert str(q.constants[q.nodes[0].weights["w_h"]].dtype) == "int8"
    run_both(q, rng)


def test_streaming_any_chunking_equals_full_run():
    rng = np.random.default_rng(9)
    g = conv_lstm_graph(rng, 2, 3, 5, peephole=True)
    m = Model(g)
    x = rng.standard_normal((10, 2, 2, 5)).astype(np.float32)
    full = m.run({"x": x})
    for cuts in ([1, 2, 3, 4, 5, 6, 7, 8, 9], [4], [3, 8]):
        s = m.stream()
        parts = [s.push({"x": c}) for c in np.split(x, cuts)]
        assert np.abs(np.concatenate([p["y"] for p in parts]) - full["y"]).max() <= 1e-6
        assert np.abs(parts[-1]["y_c"] - full["y_c"]).max() <= 1e-6
    with pytest.raises(GraphError, match="only forward streams"):
        Model(conv_lstm_graph(rng, 2, 3, 5, direction="reverse")).stream()
