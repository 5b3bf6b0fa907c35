"""aten ops of greedy decoders and of torchaudio's Emformer, converted by from_module and checked
against PyTorch on the reference and the runtime: zeros_like/full_like, gather at one index per
row (the score of the argmax), `|` and logical_and of bool masks, and torch.cat skipping a
legacy empty 1-D tensor (Emformer's `mems` without memory)."""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from edgeseq import reference  # noqa: E402
from edgeseq.converters.torch import from_module  # noqa: E402
from edgeseq.errors import UnsupportedModelError  # noqa: E402
from edgeseq.runtime import Model  # noqa: E402


class GreedyStep(nn.Module):
    """One step of a greedy decoder with per-row end: pick, score, mask ended rows."""

    def __init__(self):
        super().__init__()
        self.out = nn.Linear(6, 9)

    def forward(self, h, mem):                  # h [N, 6], mem [S, N, 6]
        done = h[:, 0] > 0.3                    # rows that ended before this step
        logp = torch.log_softmax(self.out(h), 1)
        nxt = logp.argmax(1)
        score = logp.gather(1, nxt.unsqueeze(1))[:, 0]
        nxt = torch.where(done, torch.zeros_like(nxt), nxt)
        score = torch.where(done, torch.full_like(score, -1.5), score)
        ended = done | (nxt == 4)
        fresh = torch.logical_and(ended, torch.logical_not(done))
        both = torch.cat([mem, h.unsqueeze(0), torch.empty(0)])       # [S+1, N, 6]
        return nxt, score, ended, fresh, both


def test_greedy_step_ops_match_torch(tol):
    torch.manual_seed(3)
    m = GreedyStep().eval()
    g = torch.Generator().manual_seed(4)
    runs = [(torch.randn(7, 6, generator=g), torch.randn(3, 7, 6, generator=g))
            for _ in range(3)]
    with torch.no_grad():      # the runs hold rows that end at this step and rows that ended
        assert any(bool(m(*a)[3].any()) for a in runs) and any(bool(
            (a[0][:, 0] > 0.3).any()) for a in runs)
    graph = from_module(m, runs[0], dynamic_time=False)
    model = Model(graph)
    for args in runs:
        with torch.no_grad():
            want = [w.numpy() for w in m(*args)]
        feed = {v.name: a.numpy() for v, a in zip(graph.inputs, args)}
        for label, got in (("reference", reference.run(graph, feed)),
                           ("runtime", model.run(feed))):
            got = [got[v.name] for v in graph.outputs]
            assert len(got) == len(want)
            for k, (a, w) in enumerate(zip(got, want)):
                assert a.shape == w.shape, f"{label} output {k}: {a.shape} vs {w.shape}"
                if w.dtype.kind in "biu":
                    np.testing.assert_array_equal(a, w, err_msg=f"{label} output {k}")
                else:
                    assert float(np.max(np.abs(a - w))) <= tol["float32"], f"{label} {k}"


class GatherMany(nn.Module):
    def forward(self, x, idx):
        return x.gather(1, idx)


def test_gather_of_several_indices_per_row_is_refused_naming_it():
    x, idx = torch.randn(2, 5), torch.tensor([[0, 3], [1, 1]])
    with pytest.raises(UnsupportedModelError, match=r"aten\.gather\.default.*one index per row"):
        from_module(GatherMany(), (x, idx), dynamic_time=False)


class DataDependentSlice(nn.Module):
    """Emformer's streaming step reads its state's length with .item() and slices by it."""

    def forward(self, x, n):
        k = n.item()
        torch._check(k >= 0)
        torch._check(k < 6)
        return x[: math.ceil(k / 2)] * 2


def test_data_dependent_sizes_are_refused_naming_python_ops_and_item():
    with pytest.raises(UnsupportedModelError) as e:
        from_module(DataDependentSlice(), (torch.randn(6, 3), torch.tensor(4)),
                    dynamic_time=False)
    msg = str(e.value)
    first = msg.splitlines()[0]
    assert "aten.item.default" in first and "math.ceil" in first and "<" not in first, first
    assert "(node 'item')" in msg and "aten.item reads a tensor's value" in msg
