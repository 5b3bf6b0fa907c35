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


class WithLengths(nn.Module):                # returns its lengths, as RNN-T's predictor does
    def __init__(self):
        super().__init__()
        self.tagger = TokenTagger()

    def forward(self, tokens, lengths):
        return self.tagger(tokens), lengths


def test_a_lengths_input_of_a_fixed_shape_graph_is_no_time_axis(tol):
    # fixed shapes: tokens [2, 9], lengths [2]; the stream must not read lengths' 2 rows as
    # 2 steps (it asked for lengths chunked along time): lengths go whole with each push
    torch.manual_seed(7)
    m = WithLengths().eval()
    tokens = torch.randint(0, 11, (2, 9), generator=torch.Generator().manual_seed(8))
    lengths = torch.tensor([9, 6])
    with torch.no_grad():
        want = m(tokens, lengths)[0].numpy()
    g = from_module(m, (tokens, lengths), dynamic_time=False)
    stream = Model(g).stream({g.inputs[0].name: 1})
    assert stream.axes[g.inputs[1].name] is None
    ids, lens = tokens.numpy(), lengths.numpy()
    parts = [stream.push({g.inputs[0].name: ids[:, lo:hi], g.inputs[1].name: lens})
             for lo, hi in ((0, 2), (2, 3), (3, 9))]
    got = np.concatenate([p[g.outputs[0].name] for p in parts], axis=1)
    assert float(np.max(np.abs(got - want))) <= tol["float32"]
    assert np.array_equal(parts[-1][g.outputs[1].name], lens)
