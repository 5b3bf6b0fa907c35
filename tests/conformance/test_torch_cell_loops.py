"""A cell stepped over time in Python (`h, c = cell(x[t], (h, c))`, a head applied per step,
the outputs stacked) becomes one recurrent node over the sequence (converters/reroll.py), both
through `from_module` (one T = 1 node per step traced) and through the TorchScript ONNX
exporter (the cell's glue per step). Checked against PyTorch at the traced length and at
another one (the length becomes symbolic), and streamed in chunks against the whole run.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from edgeseq import reference  # noqa: E402
from edgeseq.converters.onnx import convert as convert_onnx  # noqa: E402
from edgeseq.converters.torch import from_module  # noqa: E402
from edgeseq.ops import RECURRENT, Op  # noqa: E402
from edgeseq.runtime import Model  # noqa: E402

TOL = 1e-5


class CellLoop(nn.Module):
    """An LSTMCell or GRUCell stepped in Python over x [T, N, 3], Linear + tanh per step."""

    def __init__(self, cls):
        super().__init__()
        self.cell = cls(3, 5)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        h = x.new_zeros(x.shape[1], 5)
        c = x.new_zeros(x.shape[1], 5)
        ys = []
        for t in range(x.shape[0]):
            if isinstance(self.cell, nn.LSTMCell):
                h, c = self.cell(x[t], (h, c))
            else:
                h = self.cell(x[t], h)
            ys.append(torch.tanh(self.head(h)))
        return torch.stack(ys)


def _convert(module, x, path, tmp_path):
    if path == "from_module":
        return from_module(module, (x,), time_axis=0)
    f = tmp_path / "loop.onnx"
    torch.onnx.export(module, (x,), str(f), input_names=["x"], opset_version=17, dynamo=False,
                      dynamic_axes={"x": {0: "T"}})
    return convert_onnx(f)


@pytest.mark.parametrize("path", ["from_module", "onnx"])
@pytest.mark.parametrize("cls,op", [(nn.LSTMCell, Op.LSTM), (nn.GRUCell, Op.GRU)],
                         ids=["lstmcell", "grucell"])
def test_cell_loop_becomes_one_node_that_streams(cls, op, path, tmp_path):
    torch.manual_seed(4)
    module = CellLoop(cls).eval()
    gen = torch.Generator().manual_seed(5)
    graph = _convert(module, torch.randn(6, 2, 3, generator=gen), path, tmp_path)
    assert [n.op for n in graph.nodes if n.op in RECURRENT] == [op]
    assert not any(n.op in (Op.SLICE, Op.CONCAT) for n in graph.nodes)   # no step is left
    assert graph.inputs[0].shape == ("T", 2, 3)
    model = Model(graph)
    out = graph.outputs[0].name
    for t in (6, 9):                  # the traced length and a longer one
        x = torch.randn(t, 2, 3, generator=gen)
        with torch.no_grad():
            want = module(x).numpy()
        for got in (reference.run(graph, {"x": x.numpy()})[out], model.run({"x": x.numpy()})[out]):
            assert got.shape == want.shape
            assert np.max(np.abs(got - want)) <= TOL
    x = torch.randn(7, 2, 3, generator=gen).numpy()
    whole = model.run({"x": x})[out]
    stream = model.stream()
    parts = [stream.push({"x": x[a:b]})[out] for a, b in ((0, 2), (2, 3), (3, 7))]
    assert stream.axes[out] == 0
    assert np.max(np.abs(np.concatenate(parts) - whole)) <= 1e-6


class NormLSTMLoop(nn.Module):
    """A cell no IR recurrent op computes (torchaudio's RNN-T `_CustomLSTM`: the 4H gates
    layer-normalised together, and the cell state) stepped over x [T, N, 3] in Python."""

    def __init__(self):
        super().__init__()
        self.x2g = nn.Linear(3, 16, bias=False)
        self.p2g = nn.Linear(4, 16, bias=False)
        self.g_norm, self.c_norm = nn.LayerNorm(16), nn.LayerNorm(4)

    def forward(self, x):
        h = x.new_zeros(x.shape[1], 4)
        c = x.new_zeros(x.shape[1], 4)
        ys = []
        for gates in self.x2g(x).unbind(0):
            i, f, g, o = self.g_norm(gates + self.p2g(h)).chunk(4, 1)
            c = self.c_norm(f.sigmoid() * c + i.sigmoid() * g.tanh())
            h = o.sigmoid() * c.tanh()
            ys.append(h)
        return torch.stack(ys)


def test_unknown_cell_loop_becomes_one_general_loop_that_streams():
    torch.manual_seed(6)
    module = NormLSTMLoop().eval()
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(6, 2, 3, generator=gen)
    graph = from_module(module, (x,), dynamic_time=False)
    assert [n.op for n in graph.nodes if n.op in (Op.LOOP, Op.SPLIT, Op.CONCAT)] == [Op.LOOP]
    with torch.no_grad():
        want = module(x).numpy()
    model = Model(graph)
    out = graph.outputs[0].name
    got = model.run({"x": x.numpy()})[out]
    assert np.max(np.abs(got - want)) <= TOL
    assert np.max(np.abs(reference.run(graph, {"x": x.numpy()})[out] - want)) <= TOL
    stream = model.stream()
    parts = [stream.push({"x": x.numpy()[a:b]})[out] for a, b in ((0, 1), (1, 4), (4, 6))]
    assert np.max(np.abs(np.concatenate(parts, axis=stream.axes[out]) - got)) <= 1e-6
