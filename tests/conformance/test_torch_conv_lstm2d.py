"""A PyTorch ConvLSTM 2-D (ndrplz/ConvLSTM_pytorch: the ConvLSTMCell stepped over time and
layers in Python, called with keyword arguments) and a peephole cell, through from_module:
each step becomes one ConvLSTM node; reference (float64) and runtime against PyTorch
(float64), batch 1 and > 1, odd sizes; the interpreter and the whole-graph compiler."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeseq import reference
from edgeseq.converters.torch import from_module
from edgeseq.ops import Op
from edgeseq.runtime import Model


class ConvLSTMCell(nn.Module):
    """ndrplz's cell, as published (gates i, f, o, g from one Conv2d)."""

    def __init__(self, input_dim, hidden_dim, kernel_size, bias):
        super().__init__()
        self.input_dim, self.hidden_dim, self.kernel_size = input_dim, hidden_dim, kernel_size
        self.padding = kernel_size[0] // 2, kernel_size[1] // 2
        self.bias = bias
        self.conv = nn.Conv2d(in_channels=self.input_dim + self.hidden_dim,
                              out_channels=4 * self.hidden_dim, kernel_size=self.kernel_size,
                              padding=self.padding, bias=self.bias)

    def forward(self, input_tensor, cur_state):
        h_cur, c_cur = cur_state
        combined = torch.cat([input_tensor, h_cur], dim=1)
        combined_conv = self.conv(combined)
        cc_i, cc_f, cc_o, cc_g = torch.split(combined_conv, self.hidden_dim, dim=1)
        i, f, o, g = torch.sigmoid(cc_i), torch.sigmoid(cc_f), torch.sigmoid(cc_o), torch.tanh(cc_g)
        c_next = f * c_cur + i * g
        h_next = o * torch.tanh(c_next)
        return h_next, c_next

    def init_hidden(self, batch_size, image_size):
        height, width = image_size
        return (torch.zeros(batch_size, self.hidden_dim, height, width,
                            dtype=self.conv.weight.dtype),
                torch.zeros(batch_size, self.hidden_dim, height, width,
                            dtype=self.conv.weight.dtype))


class ConvLSTM(nn.Module):
    """ndrplz's multi-layer wrapper (return_all_layers=False), returning the last layer's
    output sequence and final (h, c)."""

    def __init__(self, input_dim, hidden_dim, kernel_size, num_layers, batch_first=False,
                 bias=True):
        super().__init__()
        self.batch_first, self.num_layers = batch_first, num_layers
        self.cell_list = nn.ModuleList([
            ConvLSTMCell(input_dim if i == 0 else hidden_dim[i - 1], hidden_dim[i],
                         kernel_size[i], bias) for i in range(num_layers)])

    def forward(self, input_tensor):
        if not self.batch_first:
            input_tensor = input_tensor.permute(1, 0, 2, 3, 4)
        b, _, _, h, w = input_tensor.size()
        hidden_state = [c.init_hidden(b, (h, w)) for c in self.cell_list]
        cur_layer_input = input_tensor
        for layer_idx in range(self.num_layers):
            h, c = hidden_state[layer_idx]
            output_inner = []
            for t in range(input_tensor.size(1)):
                h, c = self.cell_list[layer_idx](input_tensor=cur_layer_input[:, t, :, :, :],
                                                 cur_state=[h, c])
                output_inner.append(h)
            cur_layer_input = torch.stack(output_inner, dim=1)
        return cur_layer_input, h, c


class PeepholeCell(nn.Module):
    """ConvLSTM with Hadamard peepholes (Shi et al. 2015, eq. 3): W_ci ∘ c for i and f, W_co ∘
    c_t for o; one Conv2d for the four gates, split i, f, g, o."""

    def __init__(self, n_in, hidden, kernel, size):
        super().__init__()
        self.hidden = hidden
        self.conv = nn.Conv2d(n_in + hidden, 4 * hidden, kernel,
                              padding=(kernel[0] // 2, kernel[1] // 2))
        self.w_ci, self.w_cf, self.w_co = (nn.Parameter(0.5 * torch.randn(1, hidden, *size))
                                           for _ in range(3))

    def forward(self, x, state):
        h, c = state
        i, f, g, o = torch.split(self.conv(torch.cat([x, h], 1)), self.hidden, 1)
        c = torch.sigmoid(f + self.w_cf * c) * c + torch.sigmoid(i + self.w_ci * c) * torch.tanh(g)
        return torch.sigmoid(o + self.w_co * c) * torch.tanh(c), c


class PeepholeSeq(nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def forward(self, x, h, c):
        ys = []
        for t in range(x.shape[0]):
            h, c = self.cell(x[t], (h, c))
            ys.append(h)
        return torch.stack(ys), h, c


def _check(m, args, n_nodes, codegen):
    g = from_module(m, tuple(torch.from_numpy(a).float() for a in args), dynamic_time=False)
    assert [n.op for n in g.nodes].count(Op.CONV_LSTM) == n_nodes
    with torch.no_grad():
        want = [w.numpy() for w in m.double()(*(torch.from_numpy(a) for a in args))]
    names = [v.name for v in g.inputs]
    ref = reference.run(g, dict(zip(names, args)))
    outs = [v.name for v in g.outputs]
    for k, w in zip(outs, want):
        assert np.abs(ref[k] - w).max() <= 1e-6, k
    model = Model(g, codegen=codegen) if codegen is not None else Model(g)
    got = model.run({n: a.astype(np.float32) for n, a in zip(names, args)})
    for k in outs:
        assert np.abs(got[k] - ref[k]).max() <= 1e-5, k
    return model


@pytest.mark.parametrize("n_batch,batch_first,layers", [(1, False, 1), (3, True, 2)])
def test_ndrplz_conv_lstm_matches_pytorch(n_batch, batch_first, layers):
    torch.manual_seed(n_batch)
    m = ConvLSTM(3, [5, 4][:layers], [(3, 3), (5, 3)][:layers], layers,
                 batch_first=batch_first).eval()
    t_len, size = 4, (7, 5)
    shape = (n_batch, t_len, 3) + size if batch_first else (t_len, n_batch, 3) + size
    x = np.random.default_rng(n_batch).standard_normal(shape)
    _check(m, (x,), t_len * layers, None)


def test_peephole_cell_matches_pytorch():
    torch.manual_seed(5)
    size = (5, 6)
    m = PeepholeSeq(PeepholeCell(2, 3, (3, 5), size)).eval()
    rng = np.random.default_rng(5)
    args = (rng.standard_normal((4, 2, 2) + size), rng.standard_normal((2, 3) + size),
            rng.standard_normal((2, 3) + size))
    _check(m, args, 4, None)


def test_whole_graph_compiler_refuses_cleanly():
    """EDGESEQ_CODEGEN=1: the generator has no ConvLSTM emitter; the Model runs on the
    interpreter and says so, with the same results."""
    torch.manual_seed(1)
    m = ConvLSTM(2, [3], [(3, 3)], 1).eval()
    x = np.random.default_rng(1).standard_normal((3, 2, 2, 5, 4))
    model = _check(m, (x,), 3, True)
    assert "no emitter" in model.describe() and "ConvLSTM" in model.describe()
