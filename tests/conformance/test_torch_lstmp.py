"""The LSTMP path end to end: nn.LSTM(proj_size=...) -> Graph -> .eseq -> runtime stream.

ONNX cannot carry LSTMP (the legacy exporter refuses, the dynamo exporter drops the
projection), so this is the route from a PyTorch checkpoint to a board. Float must match
PyTorch within TOL["float32"]; int8 weights (edgeseq.quant.int8) within TOL["int8_small_lstm"]
of PyTorch's float outputs. Streaming in uneven chunks must equal one full run.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import edgeseq  # noqa: E402
from edgeseq import artifact  # noqa: E402
from edgeseq.converters.torch import from_module  # noqa: E402
from edgeseq.quant import int8  # noqa: E402


class KeywordSpotter(nn.Module):
    """2-layer LSTMP over 20-dim features, per-frame class log-probabilities."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(20, 32, num_layers=2, proj_size=12, batch_first=True)
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        y, _ = self.lstm(x)
        return torch.log_softmax(self.head(y), dim=-1)


@pytest.fixture(scope="module")
def spotter():
    torch.manual_seed(21)
    m = KeywordSpotter().eval()
    g = from_module(m, (torch.randn(1, 16, 20),))
    x = torch.randn(1, 45, 20, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = m(x).numpy()
    return g, x.numpy(), want


def _stream(model, x: np.ndarray, chunks: list[int]) -> np.ndarray:
    s = model.stream()
    outs, t = [], 0
    for c in chunks:
        outs.append(s.push({"x": x[:, t:t + c]})["output"])
        t += c
    assert t == x.shape[1]
    return np.concatenate(outs, axis=1)


def test_lstmp_converts_with_projection(spotter):
    g, _, _ = spotter
    lstms = [n for n in g.nodes if n.op is edgeseq.Op.LSTM]
    assert [n.attrs["proj_size"] for n in lstms] == [12, 12]
    assert all(g.constants[n.weights["w_proj"]].shape == (1, 12, 32) for n in lstms)
    assert g.inputs[0].shape == (1, "T", 20)


def test_lstmp_float_artifact_streams_like_pytorch(spotter, tmp_path, tol):
    g, x, want = spotter
    path = artifact.save(g, tmp_path / "kws.eseq", producer="test", source="KeywordSpotter")
    model = edgeseq.load(path)
    full = model.run({"x": x})["output"]
    assert np.max(np.abs(full - want)) <= tol["float32"]
    streamed = _stream(model, x, [1, 7, 16, 3, 18])
    assert np.max(np.abs(streamed - want)) <= tol["float32"]


def test_lstmp_int8_streams_close_to_pytorch(spotter, tmp_path, tol):
    g, x, want = spotter
    q, report = int8.apply(g)
    lstm_w = [q.constants[n.weights[s]] for n in q.recurrent_nodes() for s in ("w_x", "w_h", "w_proj")]
    assert all(w.dtype == np.int8 for w in lstm_w)
    model = edgeseq.load(artifact.save(q, tmp_path / "kws-int8.eseq"))
    streamed = _stream(model, x, [5, 40])
    err = float(np.max(np.abs(streamed - want)))
    assert err <= tol["int8_small_lstm"], f"int8 vs PyTorch float: {err:.2e}"
    # int8 really changed the numbers (the check above is not vacuous)
    assert err > tol["float32"]
