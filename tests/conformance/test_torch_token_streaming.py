"""A model over token ids (embedding lookup -> GRU -> Linear, as an RNN-T prediction network
or a tagger reads tokens) streams: the Gather of time-carrying indices from a constant table is
per step. Chunked pushes equal PyTorch on the whole sequence."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from edgeseq.converters.torch import from_module  # noqa: E402
from edgeseq.runtime import Model  # noqa: E402


class TokenTagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 5)
        self.gru = nn.GRU(5, 7, batch_first=True)
        self.fc = nn.Linear(7, 3)

    def forward(self, tokens):                 # tokens [N, T] int64
        return self.fc(self.gru(self.emb(tokens))[0])


def test_embedding_of_streamed_tokens_streams(tol):
    torch.manual_seed(5)
    m = TokenTagger().eval()
    tokens = torch.randint(0, 11, (2, 9), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        want = m(tokens).numpy()
    g = from_module(m, (tokens,), time_axis={"tokens": 1})
    stream = Model(g).stream()
    ids = tokens.numpy()
    name, out = g.inputs[0].name, g.outputs[0].name
    got = np.concatenate([stream.push({name: ids[:, lo:hi]})[out]
                          for lo, hi in ((0, 1), (1, 4), (4, 9))], axis=1)
    assert got.shape == want.shape
    assert float(np.max(np.abs(got - want))) <= tol["float32"]
