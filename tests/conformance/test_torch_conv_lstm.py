"""A PyTorch ConvLSTM (the common 1-D ConvLSTMCell stepped in a Python loop) through
from_module: each step becomes one ConvLSTM node; reference (float64) and runtime against
PyTorch. A cell whose forward is not the ConvLSTM equations is left to the generic ops."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeseq import reference
from edgeseq.converters.torch import from_module
from edgeseq.ops import Op
from edgeseq.runtime import Model


class Cell(torch.nn.Module):
    def __init__(self, n_in, hidden, k, order="ifog", g_act=torch.tanh):
        super().__init__()
        self.hidden_dim, self.order, self.g_act = hidden, order, g_act
        self.conv = torch.nn.Conv1d(n_in + hidden, 4 * hidden, k, padding=k // 2)

    def forward(self, x, state):
        h, c = state
        parts = dict(zip(self.order, torch.split(self.conv(torch.cat([x, h], dim=1)),
                                                 self.hidden_dim, dim=1)))
        c = torch.sigmoid(parts["f"]) * c + torch.sigmoid(parts["i"]) * self.g_act(parts["g"])
        return torch.sigmoid(parts["o"]) * torch.tanh(c), c


class Seq(torch.nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def forward(self, x):
        n, length = x.shape[1], x.shape[3]
        h = torch.zeros(n, self.cell.hidden_dim, length, dtype=x.dtype)
        c = torch.zeros(n, self.cell.hidden_dim, length, dtype=x.dtype)
        ys = []
        for t in range(x.shape[0]):
            h, c = self.cell(x[t], (h, c))
            ys.append(h)
        return torch.stack(ys), c


@pytest.mark.parametrize("order,k,n_batch", [("ifog", 3, 2), ("ifgo", 5, 1)])
def test_cell_loop_matches_pytorch(order, k, n_batch):
    torch.manual_seed(k)
    m = Seq(Cell(3, 4, k, order)).eval()
    x = np.random.default_rng(k).standard_normal((5, n_batch, 3, 7))
    g = from_module(m, (torch.from_numpy(x).float(),), dynamic_time=False)
    assert [n.op for n in g.nodes].count(Op.CONV_LSTM) == 5
    with torch.no_grad():
        want_y, want_c = m.double()(torch.from_numpy(x))
    ref = reference.run(g, {g.inputs[0].name: x})
    assert np.abs(ref["output_0"] - want_y.numpy()).max() <= 1e-12
    assert np.abs(ref["output_1"] - want_c.numpy()).max() <= 1e-12
    got = Model(g).run({g.inputs[0].name: x.astype(np.float32)})
    assert np.abs(got["output_0"] - ref["output_0"]).max() <= 1e-5


def test_other_cell_is_not_taken_for_a_conv_lstm():
    torch.manual_seed(0)
    m = Seq(Cell(2, 3, 3, g_act=torch.relu)).eval()
    x = torch.randn(3, 1, 2, 5)
    g = from_module(m, (x,), dynamic_time=False)
    assert Op.CONV_LSTM not in [n.op for n in g.nodes]
    with torch.no_grad():
        want = m(x)[0].numpy()
    got = reference.run(g, {g.inputs[0].name: x.numpy().astype(np.float64)})["output_0"]
    assert np.abs(got - want).max() <= 1e-5
