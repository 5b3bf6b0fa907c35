"""ConvLSTM 2-D: the float64 reference against the common PyTorch ConvLSTMCell (ndrplz's
ConvLSTM_pytorch: one Conv2d over [x, h] giving gates i, f, o, g) stepped in a Python loop,
and against a peephole cell written from Shi et al. 2015; the compiled runtime kernel against
the reference over directions, peepholes, padding, dilation, batch_first, lengths, initial
states and activations; fp16 / int8 weights; streaming in chunks equals one full run; the
artifact round-trip."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from edgeseq import reference
from edgeseq.artifact import load, save
from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import Op
from edgeseq.quant import fp16, int8
from edgeseq.runtime import Model

TOL = 1e-5


class ConvLSTMCell(torch.nn.Module):
    """ndrplz/ConvLSTM_pytorch's cell; `peephole` adds Hadamard terms W_c* ∘ c (Shi et al.)."""

    def __init__(self, input_dim, hidden_dim, kernel_size, bias=True, peephole_size=None):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.padding = kernel_size[0] // 2, kernel_size[1] // 2
        self.conv = torch.nn.Conv2d(input_dim + hidden_dim, 4 * hidden_dim, kernel_size,
                                    padding=self.padding, bias=bias)
        self.w_ci = self.w_cf = self.w_co = None
        if peephole_size is not None:
            for name in ("w_ci", "w_cf", "w_co"):
                setattr(self, name, torch.nn.Parameter(
                    0.5 * torch.randn(1, hidden_dim, *peephole_size)))

    def forward(self, input_tensor, cur_state):
        h_cur, c_cur = cur_state
        combined = torch.cat([input_tensor, h_cur], dim=1)
        cc_i, cc_f, cc_o, cc_g = torch.split(self.conv(combined), self.hidden_dim, dim=1)
        if self.w_ci is not None:
            cc_i, cc_f = cc_i + self.w_ci * c_cur, cc_f + self.w_cf * c_cur
        c_next = torch.sigmoid(cc_f) * c_cur + torch.sigmoid(cc_i) * torch.tanh(cc_g)
        if self.w_co is not None:
            cc_o = cc_o + self.w_co * c_next
        h_next = torch.sigmoid(cc_o) * torch.tanh(c_next)
        return h_next, c_next


def graph_from_cell(cell: ConvLSTMCell, n_in: int, size: tuple) -> Graph:
    """The IR node for a cell, written here from the cell's definition (independently of the
    converters): gates i, f, o, g -> i, f, c, o; the conv split into its x and h parts."""
    h = cell.hidden_dim
    w = cell.conv.weight.detach().numpy()
    order = np.concatenate([np.arange(h) + h * g for g in (0, 1, 3, 2)])
    consts = {"w_x": w[order, :n_in][None], "w_h": w[order, n_in:][None]}
    if cell.conv.bias is not None:
        consts["b"] = cell.conv.bias.detach().numpy()[order][None]
    if cell.w_ci is not None:
        consts["peephole"] = np.stack([p.detach().numpy()[0] for p in
                                       (cell.w_ci, cell.w_cf, cell.w_co)])[None]
    consts = {n: np.ascontiguousarray(a, np.float32) for n, a in consts.items()}
    ph, pw = cell.padding
    node = Node("cl", Op.CONV_LSTM, ["x", "", "h0", "c0"], ["y", "y_h", "y_c"],
                {"hidden_size": h, "pads": (ph, pw, ph, pw)}, {n: n for n in consts})
    st = (1, "N", h) + size
    return Graph("cl", [Value("x", "float32", ("T", "N", n_in) + size),
                        Value("h0", "float32", st), Value("c0", "float32", st)],
                 [Value(o, "float32", ()) for o in ("y", "y_h", "y_c")], [node],
                 consts).validate()


@pytest.mark.parametrize("kernel,n_batch,peephole", [((3, 3), 1, False), ((5, 3), 3, False),
                                                     ((3, 1), 2, True)])
def test_reference_matches_pytorch_cell_loop(kernel, n_batch, peephole):
    torch.manual_seed(kernel[0] + n_batch)
    n_in, hidden, size, t_len = 3, 5, (7, 6), 5
    cell = ConvLSTMCell(n_in, hidden, kernel, peephole_size=size if peephole else None)
    cell = cell.double()
    rng = np.random.default_rng(n_batch)
    x = rng.standard_normal((t_len, n_batch, n_in) + size)
    h0, c0 = rng.standard_normal((2, n_batch, hidden) + size)
    h, c = torch.from_numpy(h0), torch.from_numpy(c0)
    ys = []
    with torch.no_grad():
        for t in range(t_len):
            h, c = cell(torch.from_numpy(x[t]), (h, c))
            ys.append(h.numpy())
    g = graph_from_cell(cell, n_in, size)
    got = reference.run(g, {"x": x, "h0": h0[None], "c0": c0[None]})
    assert np.abs(got["y"][:, 0] - np.stack(ys)).max() <= 1e-6
    assert np.abs(got["y_c"][0] - c.numpy()).max() <= 1e-6
    out = Model(g).run({"x": x.astype(np.float32), "h0": h0[None].astype(np.float32),
                        "c0": c0[None].astype(np.float32)})
    for k in ("y", "y_h", "y_c"):
        assert np.abs(out[k] - got[k]).max() <= TOL, k


def conv_lstm2d_graph(rng, n_in, hidden, size, *, k_x=(3, 3), k_h=(3, 3), pads=(1, 1, 1, 1),
                      dilations=(), direction="forward", peephole=False, batch_first=False,
                      lens=False, state=False, acts=("sigmoid", "tanh", "tanh")) -> Graph:
    d = 2 if direction == "bidirectional" else 1
    dil = dilations or (1, 1)
    out = tuple(s + pads[j] + pads[2 + j] - dil[j] * (k_x[j] - 1) for j, s in enumerate(size))
    w = {"w_x": rng.uniform(-0.4, 0.4, (d, 4 * hidden, n_in) + k_x),
         "w_h": rng.uniform(-0.3, 0.3, (d, 4 * hidden, hidden) + k_h),
         "b": rng.uniform(-0.5, 0.5, (d, 4 * hidden))}
    if peephole:
        w["peephole"] = rng.uniform(-0.5, 0.5, (d, 3, hidden) + out)
    consts = {n: np.asarray(a, np.float32) for n, a in w.items()}
    st = ("N", d, hidden) + out if batch_first else (d, "N", hidden) + out
    inputs = [Value("x", "float32", ("N", "T", n_in) + size if batch_first
                    else ("T", "N", n_in) + size)]
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
                {"hidden_size": hidden, "pads": pads, "dilations": dilations,
                 "direction": direction, "batch_first": batch_first, "activations": acts * d},
                {n: n for n in consts})
    return Graph("cl", inputs, [Value(o, "float32", ()) for o in ("y", "y_h", "y_c")], [node],
                 consts).validate()


def run_both(g: Graph, rng, t_len=4, n=3, tol=TOL):
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
    return feeds, got


# (k_x, k_h, pads, dilations): 'same' odd, 'valid' with an even recurrent kernel, asymmetric
# pads with a 1xK kernel, dilated input conv
CONVS = (((3, 3), (3, 3), (1, 1, 1, 1), ()), ((2, 3), (2, 2), (0, 0, 0, 0), ()),
         ((1, 3), (3, 1), (0, 2, 0, 0), ()), ((3, 3), (3, 3), (2, 1, 2, 1), (2, 1)))
GRID = list(itertools.product(("forward", "reverse", "bidirectional"), (False, True), CONVS))


@pytest.mark.parametrize("direction,peephole,conv", GRID[::2] + GRID[1::6])
def test_runtime_matches_reference(direction, peephole, conv):
    k = GRID.index((direction, peephole, conv))
    rng = np.random.default_rng(k)
    k_x, k_h, pads, dil = conv
    acts = ("sigmoid", "tanh", "tanh") if k % 3 else ("hard_sigmoid", "relu", "softsign")
    g = conv_lstm2d_graph(rng, 3, 4, (5, 6), k_x=k_x, k_h=k_h, pads=pads, dilations=dil,
                          direction=direction, peephole=peephole, batch_first=k % 2 == 1,
                          lens=k % 4 < 2, state=k % 3 == 0, acts=acts)
    run_both(g, rng, n=1 if k % 5 == 0 else 3)


@pytest.mark.parametrize("quant", [int8, fp16])
def test_int8_and_fp16_weights(quant):
    rng = np.random.default_rng(3)
    q, _ = quant.apply(conv_lstm2d_graph(rng, 3, 4, (4, 5), peephole=True))
    assert str(q.constants[q.nodes[0].weights["w_h"]].dtype) != "float32"
    run_both(q, rng)


def test_artifact_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    g = conv_lstm2d_graph(rng, 2, 3, (4, 3), k_x=(3, 2), pads=(1, 0, 1, 1), peephole=True,
                          state=True)
    save(g, tmp_path / "cl2d.eseq")
    feeds, got = run_both(load(tmp_path / "cl2d.eseq"), rng)
    want = Model(g).run(feeds)
    for k in want:
        assert np.array_equal(got[k], want[k]), k


def test_streaming_any_chunking_equals_full_run():
    rng = np.random.default_rng(9)
    g = conv_lstm2d_graph(rng, 2, 3, (4, 5), peephole=True)
    m = Model(g)
    x = rng.standard_normal((9, 2, 2, 4, 5)).astype(np.float32)
    full = m.run({"x": x})
    for cuts in ([1, 2, 3, 4, 5, 6, 7, 8], [4], [3, 7]):
        s = m.stream()
        parts = [s.push({"x": c}) for c in np.split(x, cuts)]
        assert np.abs(np.concatenate([p["y"] for p in parts]) - full["y"]).max() <= 1e-6
        assert np.abs(parts[-1]["y_c"] - full["y_c"]).max() <= 1e-6
    # a state handed over by the setter (feature maps [D, N, H, h, w]) continues the sequence
    s = m.stream()
    s.push({"x": x[:4]})
    carried = s.state
    assert carried["cl"]["h"].shape == (1, 2, 3, 4, 5)
    s2 = m.stream()
    s2.state = carried
    rest = s2.push({"x": x[4:]})
    assert np.abs(rest["y"] - full["y"][4:]).max() <= 1e-6


def test_input_convolution_in_blocks_of_steps(monkeypatch):
    """The im2col buffer is bounded: with a budget of one step's columns the input
    convolution runs step by step and gives the same results."""
    import edgeseq.runtime.conv_lstm as rt
    monkeypatch.setattr(rt, "IM2COL_FLOATS", 1)
    rng = np.random.default_rng(6)
    run_both(conv_lstm2d_graph(rng, 3, 4, (4, 5), direction="bidirectional", lens=True), rng)


def test_stream_state_of_the_wrong_shape_is_refused():
    from edgeseq.errors import InputError
    rng = np.random.default_rng(8)
    s = Model(conv_lstm2d_graph(rng, 2, 3, (4, 5))).stream()
    with pytest.raises(InputError, match=r"'cl'\['c'\]: expected \(1, 'N', 3, 4, 5\)"):
        s.state = {"cl": {"h": np.zeros((1, 2, 3, 4, 5)), "c": np.zeros((1, 2, 3, 5, 4))}}
    with pytest.raises(InputError, match="unknown slot 'm'"):
        s.state = {"cl": {"m": np.zeros((1, 2, 3, 4, 5))}}
