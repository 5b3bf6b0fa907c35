"""aten ops that real PyTorch models use around recurrent layers (torchaudio's in-place
ReLUs, CRNN front ends, greedy decoding, masks, exact GELU, rounding division), converted by
from_module and checked against PyTorch itself on the reference and the runtime."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from edgeseq import reference  # noqa: E402
from edgeseq.converters.torch import from_module  # noqa: E402
from edgeseq.errors import UnsupportedModelError  # noqa: E402
from edgeseq.ops import Op  # noqa: E402
from edgeseq.runtime import Model  # noqa: E402


def _check(module, example: tuple, runs: list[tuple], tol: float, **kw):
    module.eval()
    g = from_module(module, example, **kw)
    model = Model(g)
    for args in [example] + runs:
        with torch.no_grad():
            want = module(*args)
        want = [w.numpy() for w in (want if isinstance(want, tuple) else (want,))]
        feed = {v.name: a.numpy() for v, a in zip(g.inputs, args)}
        for label, got in (("reference", reference.run(g, feed)), ("runtime", model.run(feed))):
            assert len(got) == len(want)
            for (name, arr), w in zip(got.items(), want):
                assert arr.shape == w.shape, f"{label} {name}: {arr.shape} vs {w.shape}"
                if w.dtype.kind in "biu":
                    np.testing.assert_array_equal(arr, w, err_msg=f"{label} {name}")
                else:
                    err = float(np.max(np.abs(arr - w)))
                    assert err <= tol, f"{label} {name}: max abs error {err:.2e}"
    return g


class CRNN(nn.Module):
    """Conv2d + BatchNorm2d + ReLU(inplace) + MaxPool2d, then LSTM, Linear and argmax."""

    def __init__(self):
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
            nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1, groups=2), nn.ReLU(True),
            nn.MaxPool2d((2, 1), ceil_mode=True))
        self.lstm = nn.LSTM(18, 8, batch_first=True)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):                       # x [N, 1, H=12, W]
        f = self.cnn(x)                         # [N, 6, 3, W/2]
        n, c, h, w = f.shape
        y, _ = self.lstm(f.permute(0, 3, 1, 2).reshape(n, w, c * h))
        logits = self.fc(y)
        return logits, logits.argmax(-1)


def test_crnn(tol):
    torch.manual_seed(20)
    m = CRNN()
    with torch.no_grad():
        m.cnn[1].running_mean.uniform_(-1, 1)
        m.cnn[1].running_var.uniform_(0.5, 2)
    g = _check(m, (torch.randn(2, 1, 12, 10),), [(torch.randn(2, 1, 12, 10),)],
               tol["float32"], dynamic_time=False)
    ops = {n.op for n in g.nodes}
    assert {Op.CONV2D, Op.MAX_POOL, Op.ARG_MAX} <= ops


class Masks(nn.Module):
    """masked_fill from comparisons, exact GELU, unbind, rounding division, repeat_interleave,
    expand, repeat, a Conv1D written as a 2-D conv over a unit axis, in-place ops."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(4, 6)
        self.conv = nn.Conv2d(4, 4, (1, 3), padding=(0, 1))

    def forward(self, x, lengths):              # x [T, N, 4], lengths [N]
        t = torch.arange(x.shape[0])[:, None]
        mask = t >= lengths[None, :]
        y, _ = self.gru(x.masked_fill(mask[..., None], 0.0))
        y = nn.functional.gelu(y)
        a, b = y.unbind(-1)[:2]
        q = torch.div(y, 0.3, rounding_mode="floor") + torch.div(y, 0.3, rounding_mode="trunc")
        r = y.repeat_interleave(2, dim=2)
        cv = self.conv(x.permute(1, 2, 0).unsqueeze(2)).squeeze(2)
        z = y.clone()
        z.sigmoid_()                            # in place: later readers see the new value
        e = torch.where(y > 0.1, y, -y) + (y != 0).float() + z \
            + lengths.float()[None, :, None].expand(x.shape[0], -1, 6)
        return a - b, q, r, cv, e, torch.div(lengths, 2, rounding_mode="floor"), y.repeat(1, 2, 1)


def test_masks_selection_and_rounding(tol):
    torch.manual_seed(21)
    g = _check(Masks(), (torch.randn(7, 3, 4), torch.tensor([7, 3, 5])),
               [(torch.randn(7, 3, 4), torch.tensor([2, 7, 4]))], tol["float32"],
               dynamic_time=False)
    ops = {n.op for n in g.nodes}
    assert {Op.WHERE, Op.ERF, Op.TILE, Op.LESS, Op.NOT, Op.CONV1D} <= ops
    assert Op.CONV2D not in ops            # the unit-axis 2-D conv became Conv1d


class ViewInPlace(nn.Module):
    def forward(self, x):
        x = x * 1.0
        x[:, 0].relu_()
        return x


def test_inplace_on_a_view_is_refused():
    with pytest.raises(UnsupportedModelError, match="in-place relu_ on a view"):
        from_module(ViewInPlace(), (torch.randn(3, 4),), dynamic_time=False)


class Blocked(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 4)
        self.pool = nn.AdaptiveAvgPool1d(2)

    def forward(self, x):
        y, _ = self.lstm(torch.cumsum(x, dim=0))
        return torch.sin(self.pool(y))         # sin sits downstream of the unsupported pool


def test_refusal_names_ops_first_and_points_at_user_code():
    with pytest.raises(UnsupportedModelError) as e:
        from_module(Blocked(), (torch.randn(5, 1, 4),))
    first, *rest = str(e.value).splitlines()
    for op in ("aten.cumsum", "aten.adaptive_avg_pool1d", "aten.sin"):
        assert op in first, first
    pool = next(line for line in rest if "adaptive_avg_pool1d" in line)
    # the nn.Module's op points at the user's line that called the module, not torch's source
    assert "test_torch_export_ops.py" in pool and "self.pool(y)" in pool, pool


def test_crnn_pooling_time_refused_instead_of_failing_at_run_time():
    # MaxPool2d(2) maps W = 10 and 11 to the same 5 columns, so the traces at two lengths
    # agree on the reshape's fixed sizes; the graph would fail at any other length
    with pytest.raises(UnsupportedModelError, match="Reshape.*dynamic_time=False"):
        from_module(CRNN(), (torch.randn(2, 1, 12, 10),), time_axis=3)


class CellLoop(nn.Module):
    """An LSTMCell stepped in Python from states made with `x.new_zeros` (a common idiom
    that torch.export records as aten.new_zeros, with x only lending its dtype)."""

    def __init__(self):
        super().__init__()
        self.cell = nn.LSTMCell(6, 9)
        self.out = nn.Linear(9, 4)

    def forward(self, x):
        h = x.new_zeros(x.shape[1], 9)
        c = x.new_zeros((x.shape[1], 9))
        bias = x.new_full((4,), 0.25) + x.new_ones(4)
        ys = []
        for t in range(x.shape[0]):
            h, c = self.cell(x[t], (h, c))
            ys.append(self.out(h) + bias)
        return torch.stack(ys)


def test_new_zeros_ones_full_become_constants(tol):
    torch.manual_seed(3)
    x = torch.randn(7, 2, 6)
    g = _check(CellLoop(), (x,), [(torch.randn(7, 2, 6),)], tol["float32"], dynamic_time=False)
    assert g.inputs[0].shape == (7, 2, 6)
