"""PyTorch modules converted through torch.export vs PyTorch itself (the oracle).

Random weights (seeded), float32 inputs. Each converted graph runs on the float64 reference
interpreter and on the Numba runtime, at the example's sequence length and at other lengths
(the converter makes the time axis symbolic), and must match PyTorch's outputs and final
states within TOL["float32"].
"""
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


def _outputs(module, args) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(*args)
    out = out if isinstance(out, (tuple, list)) else (out,)
    flat = []
    for o in out:
        flat.extend(o if isinstance(o, (tuple, list)) else (o,))
    return [o.numpy() for o in flat]


def _check(module, example: tuple, runs: list[tuple], tol: float, **kw):
    """Convert on `example`, then compare reference and runtime with PyTorch on every run."""
    module.eval()
    g = from_module(module, example, **kw)
    model = Model(g)
    names = [v.name for v in g.inputs]
    worst = 0.0
    for args in [example] + runs:
        want = _outputs(module, args)
        feed = {n: a.numpy() for n, a in zip(names, args)}
        for label, got in (("reference", reference.run(g, feed)), ("runtime", model.run(feed))):
            assert len(got) == len(want)
            for (name, arr), w in zip(got.items(), want):
                assert arr.shape == w.shape, f"{label} {name}: {arr.shape} vs {w.shape}"
                err = float(np.max(np.abs(arr - w)))
                assert err <= tol, f"{label} {name} T={args[0].shape}: max abs error {err:.2e}"
                worst = max(worst, err)
    return g, worst


class Recurrent(nn.Module):
    """An nn.LSTM/GRU/RNN returning its output sequence and final state(s)."""

    def __init__(self, cls, n_in, hidden, **kw):
        super().__init__()
        self.rnn = cls(n_in, hidden, **kw)

    def forward(self, x):
        return self.rnn(x)


def _x(shape, seed=0):
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)),)


def _seq(batch_first, n, t, i, seed=0):
    return _x((n, t, i) if batch_first else (t, n, i), seed)


LSTM_GRID = [  # layers, bidirectional, batch_first, proj_size
    (1, False, False, 0), (1, False, True, 3), (2, True, False, 0), (2, True, True, 3),
    (3, False, True, 0), (3, True, False, 2), (1, True, True, 0), (2, False, False, 4),
]


@pytest.mark.parametrize("layers,bidir,bf,proj", LSTM_GRID)
def test_lstm(layers, bidir, bf, proj, tol):
    torch.manual_seed(layers * 10 + bidir * 2 + bf)
    m = Recurrent(nn.LSTM, 5, 6, num_layers=layers, bidirectional=bidir, batch_first=bf,
                  proj_size=proj)
    g, _ = _check(m, _seq(bf, 2, 7, 5), [_seq(bf, 2, 3, 5, 1), _seq(bf, 2, 12, 5, 2)],
                  tol["float32"])
    lstms = [n for n in g.nodes if n.op is Op.LSTM]
    assert len(lstms) == layers            # one IR node per layer
    assert all(n.attrs["proj_size"] == proj for n in lstms)
    assert all(n.attrs["batch_first"] == bf for n in lstms)


@pytest.mark.parametrize("layers,bidir,bf", [(1, False, False), (2, True, True), (3, False, True)])
def test_gru(layers, bidir, bf, tol):
    torch.manual_seed(7 + layers)
    m = Recurrent(nn.GRU, 4, 5, num_layers=layers, bidirectional=bidir, batch_first=bf)
    g, _ = _check(m, _seq(bf, 3, 6, 4), [_seq(bf, 3, 11, 4, 3)], tol["float32"])
    assert all(n.attrs["linear_before_reset"] for n in g.nodes if n.op is Op.GRU)


@pytest.mark.parametrize("nonlinearity,layers,bidir,bf",
                         [("tanh", 2, True, False), ("relu", 1, False, True), ("relu", 2, True, True)])
def test_rnn(nonlinearity, layers, bidir, bf, tol):
    torch.manual_seed(3)
    m = Recurrent(nn.RNN, 4, 5, num_layers=layers, bidirectional=bidir, batch_first=bf,
                  nonlinearity=nonlinearity)
    _check(m, _seq(bf, 2, 6, 4), [_seq(bf, 2, 9, 4, 4)], tol["float32"])


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN], ids=["lstm", "gru", "rnn"])
def test_without_bias(cls, tol):
    torch.manual_seed(4)
    m = Recurrent(cls, 4, 5, num_layers=2, bias=False, bidirectional=cls is nn.GRU)
    _check(m, _seq(False, 2, 6, 4), [_seq(False, 2, 8, 4, 5)], tol["float32"])


class WithState(nn.Module):
    """Initial states are inputs of the module (a streaming-style signature)."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 6, num_layers=2, batch_first=True, proj_size=3, bidirectional=True)

    def forward(self, x, h0, c0):
        y, (h, c) = self.lstm(x, (h0, c0))
        return y, h, c


def test_initial_states_as_inputs(tol):
    torch.manual_seed(5)
    h0, c0 = torch.randn(4, 2, 3), torch.randn(4, 2, 6)
    ex = (torch.randn(2, 7, 4), h0, c0)
    g, _ = _check(WithState(), ex, [(torch.randn(2, 10, 4), h0 * 0.5, c0 * 2)], tol["float32"])
    assert [v.name for v in g.inputs] == ["x", "h0", "c0"]
    assert g.inputs[0].shape == (2, "T", 4)


class ConvLSTM(nn.Module):
    """Conv1d front end over time, LSTM, Linear head with log-softmax (a CRNN classifier)."""

    def __init__(self, padding):
        super().__init__()
        self.conv = nn.Conv1d(3, 8, 3, padding=padding)
        self.lstm = nn.LSTM(8, 6, batch_first=True)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):                              # x [N, C, L]
        z = torch.relu(self.conv(x)).transpose(1, 2)   # [N, L', 8]
        y, _ = self.lstm(z)
        return torch.log_softmax(self.fc(y), dim=-1)


def test_conv1d_lstm_linear(tol):
    torch.manual_seed(6)
    g, _ = _check(ConvLSTM(padding=1), _x((2, 3, 9)), [_x((2, 3, 15), 1)], tol["float32"])
    assert [n.op for n in g.nodes if n.op in (Op.CONV1D, Op.LSTM)] == [Op.CONV1D, Op.LSTM]


def test_conv_shortens_time_needs_time_axis(tol):
    torch.manual_seed(6)
    m = ConvLSTM(padding=0).eval()
    with pytest.raises(UnsupportedModelError, match="time_axis"):
        from_module(m, _x((2, 3, 9)))
    _check(m, _x((2, 3, 9)), [_x((2, 3, 14), 2)], tol["float32"], time_axis=2)


class Glue(nn.Module):
    """Elementwise ops, views, cat/select/slice/squeeze glue around a GRU."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(6, 5, bidirectional=True)
        self.proj = nn.Linear(10, 3)

    def forward(self, x):                                  # x [T, N, 6]
        a, b = x[..., :3], x[..., 3:]
        z = torch.cat([torch.sigmoid(a) * 2.0 - 1.0, torch.tanh(b) / 3.0 + 0.5], dim=-1)
        z = z.unsqueeze(0).squeeze(0).permute(1, 0, 2).contiguous().permute(1, 0, 2)
        y, h = self.gru(z)
        last = h.permute(1, 0, 2).reshape(h.shape[1], -1)   # [N, 10]
        out = torch.softmax(self.proj(y), dim=-1)
        first = y.select(0, 0)                               # [N, 10]
        return out, torch.nn.functional.leaky_relu(last - first, 0.1), torch.clamp(y[1:], -0.2, 0.3)


def test_glue_ops(tol):
    torch.manual_seed(8)
    _check(Glue(), _x((7, 2, 6)), [_x((4, 2, 6), 1), _x((10, 2, 6), 2)], tol["float32"])


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 4)

    def forward(self, x):
        y, _ = self.lstm(torch.cumsum(x, dim=0))
        return torch.sort(y, dim=-1).values + torch.sin(y)


def test_unsupported_ops_reported_at_once():
    with pytest.raises(UnsupportedModelError) as e:
        from_module(Unsupported(), _x((5, 1, 4)))
    msg = str(e.value)
    assert "3 op(s)" in msg
    for op in ("aten.cumsum", "aten.sort", "aten.sin"):
        assert op in msg
    assert "test_torch_modules.py" in msg and "torch.cumsum(x, dim=0)" in msg   # source lines


class CellStep(nn.Module):
    """One step of an nn.*Cell with the state passed in and out (a streaming signature)."""

    def __init__(self, cls, **kw):
        super().__init__()
        self.lstm = cls is nn.LSTMCell
        self.cell = cls(4, 6, **kw)

    def forward(self, x, h, c):
        return self.cell(x, (h, c)) if self.lstm else (self.cell(x, h), c * 1.0)


@pytest.mark.parametrize("cls,kw", [(nn.LSTMCell, {}), (nn.GRUCell, {}),
                                    (nn.RNNCell, {"nonlinearity": "relu"})],
                         ids=["lstm", "gru", "rnn-relu"])
def test_cell_step(cls, kw, tol):
    torch.manual_seed(9)
    ex = (torch.randn(3, 4), torch.randn(3, 6), torch.randn(3, 6))
    g, _ = _check(CellStep(cls, **kw), ex, [], tol["float32"], dynamic_time=False)
    rec = [n for n in g.nodes if n.op in (Op.LSTM, Op.GRU, Op.RNN)]
    assert len(rec) == 1 and rec[0].input("initial_h")


class UnrolledLoop(nn.Module):
    """A Python loop over time with a GRUCell: traced as one IR step per time step, re-rolled
    into one GRU node over the sequence (converters/reroll.py)."""

    def __init__(self):
        super().__init__()
        self.cell = nn.GRUCell(4, 6)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        h = torch.zeros(x.shape[1], 6)
        outs = []
        for t in range(x.shape[0]):
            h = self.cell(x[t], h)
            outs.append(self.fc(h))
        return torch.stack(outs)


def test_unrolled_cell_loop_becomes_one_node_of_any_length(tol):
    torch.manual_seed(10)
    g, _ = _check(UnrolledLoop(), _x((5, 2, 4)), [], tol["float32"], dynamic_time=False)
    assert [n.op for n in g.nodes if n.op in (Op.LSTM, Op.GRU, Op.RNN)] == [Op.GRU]
    # one node whatever the length: the two traces agree, so the length becomes symbolic
    g, _ = _check(UnrolledLoop(), _x((5, 2, 4)), [_x((8, 2, 4), 1)], tol["float32"],
                  time_axis=0)
    assert g.inputs[0].shape == ("T", 2, 4)


class IntegerGlue(nn.Module):
    """Arithmetic on an integer input and casts between float and integer."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(3, 4)

    def forward(self, x, counts):
        y, _ = self.gru(x)
        return y * 2, (counts - 1) * 2, counts.float() + 0.5, (x * 3).long()


def test_integer_glue_and_casts(tol):
    torch.manual_seed(12)
    g, _ = _check(IntegerGlue(), (torch.randn(6, 2, 3), torch.tensor([6, 4])),
                  [(torch.randn(9, 2, 3), torch.tensor([3, -4]))], tol["float32"])
    assert [v.dtype for v in g.outputs] == ["float32", "int64", "float32", "int64"]


class Norms(nn.Module):
    """BatchNorm1d / LayerNorm / Embedding / max / tanh-GELU / hardsigmoid around an LSTM."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.bn = nn.BatchNorm1d(4)
        self.ln = nn.LayerNorm(6)
        self.lstm = nn.LSTM(4, 6, batch_first=True)

    def forward(self, x, ids):                          # x [N, T, 4], ids [N, T]
        z = self.bn((x + self.emb(ids)).transpose(1, 2)).transpose(1, 2)
        y, _ = self.lstm(torch.maximum(z, -0.5 * z))
        y = self.ln(y)
        return nn.functional.gelu(y, approximate="tanh"), nn.functional.hardsigmoid(torch.minimum(y, 3 * y))


def test_norms_embedding_and_activations(tol):
    torch.manual_seed(13)
    m = Norms()
    with torch.no_grad():     # non-trivial running statistics
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.running_var.uniform_(0.5, 2)
    ids = lambda t, s: torch.randint(0, 10, (2, t), generator=torch.Generator().manual_seed(s))
    _check(m, (torch.randn(2, 7, 4), ids(7, 0)), [(torch.randn(2, 11, 4), ids(11, 1))],
           tol["float32"], time_axis={"x": 1, "ids": 1})


def test_dynamic_batch(tol):
    torch.manual_seed(14)
    ex = (torch.randn(2, 7, 4), torch.randn(4, 2, 3), torch.randn(4, 2, 6))
    runs = [(torch.randn(n, t, 4), torch.randn(4, n, 3), torch.randn(4, n, 6))
            for n, t in ((1, 5), (3, 12))]
    g, _ = _check(WithState(), ex, runs, tol["float32"], dynamic_batch=True)
    assert [v.shape for v in g.inputs] == [("N", "T", 4), (4, "N", 3), (4, "N", 6)]


def test_dynamic_batch_refused_when_batch_is_baked_in():
    class Baked(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(4, 4, batch_first=True)

        def forward(self, x):          # reshape to the example's exact sizes, as BeatNet does
            return self.gru(x.reshape(-1, 4).reshape(x.shape[0], x.shape[1], 4))[0]

    with pytest.raises(UnsupportedModelError, match="dynamic_batch=False"):
        from_module(Baked(), _x((2, 5, 4)), dynamic_batch=True)


class LastState(nn.Module):
    """A sequence classifier on the last layer's final state only (y is never used)."""

    def __init__(self, cls):
        super().__init__()
        self.rnn = cls(4, 6, num_layers=2, batch_first=True)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        _, state = self.rnn(x)
        h = state[0] if isinstance(state, tuple) else state
        return self.fc(h[-1])


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU], ids=["lstm", "gru"])
def test_classifier_on_final_state(cls, tol):
    torch.manual_seed(15)
    g, _ = _check(LastState(cls), _x((3, 6, 4)), [_x((3, 10, 4), 1)], tol["float32"])
    last = [n for n in g.nodes if n.op in (Op.LSTM, Op.GRU)][-1]
    assert not last.output("y")                       # the unused sequence output is not made


class LSTMCellLoop(nn.Module):
    """A Python loop over time with an LSTMCell on batch 1 (the batch axis has size 1)."""

    def __init__(self):
        super().__init__()
        self.cell = nn.LSTMCell(5, 4)

    def forward(self, x):                      # x [T, 1, 5]
        h = c = torch.zeros(x.shape[1], 4)
        outs = []
        for t in range(x.shape[0]):
            h, c = self.cell(x[t], (h, c))
            outs.append(h)
        return torch.stack(outs)


def test_cell_loop_never_names_the_batch_axis_T(tol):
    # a cell is one step: its length-1 time axis once matched the size-1 batch axis, which
    # then became the symbol 'T'; re-rolled, the loop's one node sees the whole sequence
    torch.manual_seed(14)
    g, _ = _check(LSTMCellLoop(), _x((6, 1, 5)), [_x((3, 1, 5), 2)], tol["float32"])
    assert g.inputs[0].shape == ("T", 1, 5)
    g, _ = _check(LSTMCellLoop(), _x((6, 1, 5)), [], tol["float32"], dynamic_time=False)
    assert g.inputs[0].shape == (6, 1, 5)
