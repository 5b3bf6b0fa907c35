"""Variable-length sequences: pack_padded_sequence -> LSTM/GRU/RNN -> pad_packed_sequence.

The converted graph takes the lengths as an int64 input (IR sequence_lens) and must match
PyTorch's packed path (zero outputs past each end, final state at each sequence's last step)
for unsorted lengths, at the example's length and at another one.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

from edgeseq import reference  # noqa: E402
from edgeseq.converters.torch import from_module  # noqa: E402
from edgeseq.errors import UnsupportedModelError  # noqa: E402
from edgeseq.runtime import Model  # noqa: E402


class Packed(nn.Module):
    def __init__(self, cls, batch_first, padding_value=0.0, **kw):
        super().__init__()
        self.bf = batch_first
        self.padding_value = padding_value
        self.rnn = cls(4, 6, batch_first=batch_first, **kw)
        out = kw.get("proj_size") or 6
        self.fc = nn.Linear(out * (2 if kw.get("bidirectional") else 1), 3)

    def forward(self, x, lengths):
        packed = pack_padded_sequence(x, lengths, batch_first=self.bf, enforce_sorted=False)
        y, state = self.rnn(packed)
        y, _ = pad_packed_sequence(y, batch_first=self.bf, padding_value=self.padding_value,
                                   total_length=x.shape[1 if self.bf else 0])
        return self.fc(y), state


def _flat(out):
    y, state = out
    return [y] + (list(state) if isinstance(state, tuple) else [state])


CASES = [
    (nn.LSTM, True, dict(num_layers=2, bidirectional=True, proj_size=3)),
    (nn.LSTM, False, dict()),
    (nn.GRU, False, dict(bidirectional=True)),
    (nn.RNN, True, dict(num_layers=2, nonlinearity="relu")),
]


@pytest.mark.parametrize("cls,bf,kw", CASES, ids=["lstmp-bi-2l-bf", "lstm", "gru-bi", "rnn-relu-2l"])
def test_packed_matches_pytorch(cls, bf, kw, tol):
    torch.manual_seed(11)
    m = Packed(cls, bf, **kw).eval()

    def seq(t, seed):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(*((3, t, 4) if bf else (t, 3, 4)), generator=g)

    g = from_module(m, (seq(7, 0), torch.tensor([7, 3, 5])))
    assert [v.dtype for v in g.inputs] == ["float32", "int64"]
    rec = [n for n in g.nodes if n.op.value in ("LSTM", "GRU", "RNN")]
    assert rec and all(n.input("sequence_lens") == "lengths" for n in rec)
    model = Model(g)
    for t, lens in ((7, [7, 3, 5]), (10, [4, 10, 1]), (5, [5, 5, 2])):
        x, lengths = seq(t, t), torch.tensor(lens)
        with torch.no_grad():
            want = [w.numpy() for w in _flat(m(x, lengths))]
        feed = {"x": x.numpy(), "lengths": lengths.numpy()}
        for label, got in (("reference", reference.run(g, feed)), ("runtime", model.run(feed))):
            for (name, arr), w in zip(got.items(), want):
                err = float(np.max(np.abs(arr - w)))
                assert err <= tol["float32"], f"{label} {name} T={t} lengths={lens}: {err:.2e}"


def test_nonzero_padding_value_refused():
    m = Packed(nn.GRU, False, padding_value=-1.0)
    with pytest.raises(UnsupportedModelError, match="padding_value"):
        from_module(m, (torch.randn(6, 2, 4), torch.tensor([6, 2])))


class Untrimmed(nn.Module):
    """pad_packed_sequence without total_length: PyTorch trims to max(lengths)."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 6)

    def forward(self, x, lengths):
        y, _ = self.rnn(pack_padded_sequence(x, lengths, enforce_sorted=False))
        return pad_packed_sequence(y)[0]


def test_missing_total_length_checks_the_longest_sequence(tol):
    # PyTorch's output is shorter than the input when max(lengths) < T; the graph keeps T
    # steps, so it runs only where the longest sequence fills the input and refuses the rest
    from edgeseq.errors import InputError
    torch.manual_seed(13)
    m = Untrimmed().eval()
    g = from_module(m, (torch.randn(7, 3, 4), torch.tensor([7, 3, 5])))
    model = Model(g)
    for t, lens in ((7, [7, 3, 5]), (9, [2, 9, 4])):          # T symbolic: another length too
        x, lengths = torch.randn(t, 3, 4), torch.tensor(lens)
        with torch.no_grad():
            want = m(x, lengths).numpy()
        feed = {"x": x.numpy(), "lengths": lengths.numpy()}
        for got in (reference.run(g, feed)["output"], model.run(feed)["output"]):
            assert got.shape == want.shape
            assert float(np.max(np.abs(got - want))) <= tol["float32"]
    x, lengths = torch.randn(7, 3, 4), torch.tensor([5, 3, 2])
    assert m(x, lengths).shape[0] == 5                         # PyTorch trims
    feed = {"x": x.numpy(), "lengths": lengths.numpy()}
    for run in (lambda f: reference.run(g, f), model.run):
        with pytest.raises(InputError, match="longest sequence has 5 steps but the inputs have 7"):
            run(feed)


class Sorted(nn.Module):
    """pack_padded_sequence with PyTorch's default enforce_sorted=True."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 6)

    def forward(self, x, lengths):
        y, h = self.rnn(pack_padded_sequence(x, lengths))
        return pad_packed_sequence(y, total_length=x.shape[0])[0], h


def test_enforce_sorted_raises_like_pytorch(tmp_path, tol):
    from edgeseq import artifact
    from edgeseq.errors import InputError
    torch.manual_seed(12)
    m = Sorted().eval()
    x = torch.randn(6, 3, 4)
    g = from_module(m, (x, torch.tensor([6, 4, 2])))
    loaded = artifact.load(artifact.save(g, tmp_path / "m.eseq") or tmp_path / "m.eseq")
    feed = {"x": x.numpy(), "lengths": np.array([5, 5, 1])}
    with torch.no_grad():
        want = [w.numpy() for w in _flat(m(x, torch.tensor([5, 5, 1])))]
    for run in (lambda f: reference.run(g, f), Model(g).run, Model(loaded).run):
        got = list(run(feed).values())
        assert max(float(np.max(np.abs(a - w))) for a, w in zip(got, want)) <= tol["float32"]
    with pytest.raises(RuntimeError, match="sorted in decreasing order"):
        m(x, torch.tensor([3, 6, 1]))
    bad = {"x": x.numpy(), "lengths": np.array([3, 6, 1])}
    for run in (lambda f: reference.run(g, f), Model(g).run, Model(loaded).run):
        with pytest.raises(InputError, match="sorted in decreasing order"):
            run(bad)
