"""ST-LSTM (PredRNN, Wang et al. 2017): thuml/predrnn-pytorch's SpatioTemporalLSTMCell (the
v1 cell: gates from convolutions of x_t, h and the spatio-temporal memory m; m zigzags up the
layers and from the top layer back to the bottom one at the next step) stepped in a Python
loop by the PredRNN model, converted by from_module into IR ops (Conv2d, Split, the gate
arithmetic; no op of its own). The float64 reference of the converted graph against PyTorch
in float64, and the runtime (interpreter and whole-graph compiler) against the reference,
with and without the cell's layer norms, batch 1 and 2."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeseq import reference
from edgeseq.converters.torch import from_module
from edgeseq.runtime import Model


class SpatioTemporalLSTMCell(nn.Module):
    def __init__(self, in_channel, num_hidden, width, filter_size, stride, layer_norm):
        super().__init__()
        self.num_hidden = num_hidden
        self.padding = filter_size // 2
        self._forget_bias = 1.0
        if layer_norm:
            self.conv_x = nn.Sequential(nn.Conv2d(in_channel, num_hidden * 7, filter_size, stride, self.padding, bias=False), nn.LayerNorm([num_hidden * 7, width, width]))
            self.conv_h = nn.Sequential(nn.Conv2d(num_hidden, num_hidden * 4, filter_size, stride, self.padding, bias=False), nn.LayerNorm([num_hidden * 4, width, width]))
            self.conv_m = nn.Sequential(nn.Conv2d(num_hidden, num_hidden * 3, filter_size, stride, self.padding, bias=False), nn.LayerNorm([num_hidden * 3, width, width]))
            self.conv_o = nn.Sequential(nn.Conv2d(num_hidden * 2, num_hidden, filter_size, stride, self.padding, bias=False), nn.LayerNorm([num_hidden, width, width]))
        else:
            self.conv_x = nn.Sequential(nn.Conv2d(in_channel, num_hidden * 7, filter_size, stride, self.padding, bias=False))
            self.conv_h = nn.Sequential(nn.Conv2d(num_hidden, num_hidden * 4, filter_size, stride, self.padding, bias=False))
            self.conv_m = nn.Sequential(nn.Conv2d(num_hidden, num_hidden * 3, filter_size, stride, self.padding, bias=False))
            self.conv_o = nn.Sequential(nn.Conv2d(num_hidden * 2, num_hidden, filter_size, stride, self.padding, bias=False))
        self.conv_last = nn.Conv2d(num_hidden * 2, num_hidden, 1, 1, 0, bias=False)

    def forward(self, x_t, h_t, c_t, m_t):
        x_concat = self.conv_x(x_t)
        h_concat = self.conv_h(h_t)
        m_concat = self.conv_m(m_t)
        i_x, f_x, g_x, i_x_prime, f_x_prime, g_x_prime, o_x = torch.split(x_concat, self.num_hidden, dim=1)
        i_h, f_h, g_h, o_h = torch.split(h_concat, self.num_hidden, dim=1)
        i_m, f_m, g_m = torch.split(m_concat, self.num_hidden, dim=1)
        i_t = torch.sigmoid(i_x + i_h)
        f_t = torch.sigmoid(f_x + f_h + self._forget_bias)
        g_t = torch.tanh(g_x + g_h)
        c_new = f_t * c_t + i_t * g_t
        i_t_prime = torch.sigmoid(i_x_prime + i_m)
        f_t_prime = torch.sigmoid(f_x_prime + f_m + self._forget_bias)
        g_t_prime = torch.tanh(g_x_prime + g_m)
        m_new = f_t_prime * m_t + i_t_prime * g_t_prime
        mem = torch.cat((c_new, m_new), 1)
        o_t = torch.sigmoid(o_x + o_h + self.conv_o(mem))
        h_new = o_t * torch.tanh(self.conv_last(mem))
        return h_new, c_new, m_new

class PredRNN(nn.Module):
    def __init__(self, num_layers, num_hidden, in_channel, width, filter_size, layer_norm=False):
        super().__init__()
        self.num_layers, self.num_hidden = num_layers, num_hidden
        cells = []
        for i in range(num_layers):
            cells.append(SpatioTemporalLSTMCell(in_channel if i == 0 else num_hidden[i - 1], num_hidden[i], width, filter_size, 1, layer_norm))
        self.cell_list = nn.ModuleList(cells)
        self.conv_last = nn.Conv2d(num_hidden[-1], in_channel, 1, 1, 0, bias=False)

    def forward(self, frames):      # [B, T, C, H, W] -> next frames [B, T, C, H, W]
        batch, t_len, _, height, width = frames.shape
        h_t, c_t = [], []
        for i in range(self.num_layers):
            z = torch.zeros(batch, self.num_hidden[i], height, width, dtype=frames.dtype)
            h_t.append(z); c_t.append(z)
        memory = torch.zeros(batch, self.num_hidden[0], height, width, dtype=frames.dtype)
        next_frames = []
        for t in range(t_len):
            net = frames[:, t]
            h_t[0], c_t[0], memory = self.cell_list[0](net, h_t[0], c_t[0], memory)
            for i in range(1, self.num_layers):
                h_t[i], c_t[i], memory = self.cell_list[i](h_t[i - 1], h_t[i], c_t[i], memory)
            next_frames.append(self.conv_last(h_t[self.num_layers - 1]))
        return torch.stack(next_frames, dim=1)


@pytest.mark.parametrize("layer_norm,n_batch,codegen", [(False, 1, False), (True, 2, True)])
def test_predrnn_matches_pytorch(layer_norm, n_batch, codegen):
    torch.manual_seed(n_batch)
    m = PredRNN(2, [4, 4], 2, 5, 3, layer_norm=layer_norm).eval()   # m is shared: equal widths
    x = np.random.default_rng(n_batch).standard_normal((n_batch, 3, 2, 5, 5))
    g = from_module(m, (torch.from_numpy(x).float(),), dynamic_time=False)
    with torch.no_grad():
        want = m.double()(torch.from_numpy(x)).numpy()
    name, out = g.inputs[0].name, g.outputs[0].name
    ref = reference.run(g, {name: x})[out]
    assert np.abs(ref - want).max() <= 1e-6
    got = Model(g, codegen=codegen).run({name: x.astype(np.float32)})[out]
    assert np.abs(got - ref).max() <= 1e-5
