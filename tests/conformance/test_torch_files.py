"""PyTorch files: state_dicts (.pt/.pth/.safetensors) + arch spec, saved torch.export
programs (.pt2), through the converter registry and `edgeseq convert`; outputs vs PyTorch."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import edgeseq  # noqa: E402
from edgeseq import reference  # noqa: E402
from edgeseq.cli import main  # noqa: E402
from edgeseq.converters.registry import convert  # noqa: E402
from edgeseq.converters.torch._spec import parse  # noqa: E402
from edgeseq.errors import UnsupportedModelError  # noqa: E402
from edgeseq.runtime import Model  # noqa: E402


class Stack(nn.Module):
    """A standard stack: recurrent layers + linear head (+ optional activation)."""

    def __init__(self, cls, n_in, hidden, n_out, act=None, **kw):
        super().__init__()
        self.rnn = cls(n_in, hidden, **kw)
        width = (kw.get("proj_size") or hidden) * (2 if kw.get("bidirectional") else 1)
        self.head = nn.Linear(width, n_out)
        self.act = act

    def forward(self, x):
        y = self.head(self.rnn(x)[0])
        return self.act(y) if self.act is not None else y


SPECS = [  # module kwargs, spec, suffix
    (dict(cls=nn.LSTM, num_layers=2, proj_size=4, bidirectional=True, batch_first=True),
     "lstm(batch_first,proj=4,layers=2)+linear", ".pt"),
    (dict(cls=nn.GRU, num_layers=3, act=nn.LogSoftmax(-1)),
     "gru:rnn(hidden=7)+linear:head(out=3)+log_softmax", ".safetensors"),
    (dict(cls=nn.RNN, nonlinearity="relu", bidirectional=True, act=nn.Softmax(-1)),
     "rnn(nonlinearity=relu,bidirectional)+linear+softmax(dim=-1)", ".pth"),
    (dict(cls=nn.LSTM, bias=False, act=nn.Sigmoid()), "lstm+linear+sigmoid", ".safetensors"),
]


def _save(m, path):
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    else:
        torch.save(m.state_dict(), str(path))


@pytest.mark.parametrize("kw,spec,suffix", SPECS, ids=[s for _, s, _ in SPECS])
def test_state_dict_matches_pytorch(kw, spec, suffix, tmp_path, tol):
    torch.manual_seed(31)
    kw = dict(kw)
    m = Stack(kw.pop("cls"), 5, 7, 3, act=kw.pop("act", None), **kw).eval()
    path = tmp_path / f"model{suffix}"
    _save(m, path)
    g = convert(path, arch=spec)
    bf = kw.get("batch_first", False)
    assert g.inputs[0].shape == (("N", "T", 5) if bf else ("T", "N", 5))
    model = Model(g)
    for n, t in ((1, 6), (3, 11)):
        x = torch.randn(*((n, t, 5) if bf else (t, n, 5)))
        with torch.no_grad():
            want = m(x).numpy()
        for got in (reference.run(g, {"x": x.numpy()})["output"], model.run({"x": x.numpy()})["output"]):
            assert np.max(np.abs(got - want)) <= tol["float32"]


def test_spec_grammar():
    items = parse("gru:enc.rnn(layers=2,bidirectional)+linear:head(out=4)+log_softmax")
    assert [(i.kind, i.prefix) for i in items] == [("gru", "enc.rnn"), ("linear", "head"),
                                                   ("log_softmax", None)]
    assert items[0].opts == {"layers": 2, "bidirectional": True}


@pytest.mark.parametrize("spec,match", [
    ("lstm+linear", "not a LSTM"),                  # the weights are a GRU's
    ("gru(hidden=8)+linear", "hidden=8 but the weights have hidden=7"),
    ("gru", "unused"),                              # the head is left over
    ("gru(peephole)+linear", "no option 'peephole'"),
    ("conv1d+gru+linear", "unknown layer kind 'conv1d'"),
    ("gru+linear:nothere", "no linear parameter group 'nothere'"),
])
def test_spec_errors_name_the_problem(spec, match, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "gru.pt"
    _save(Stack(nn.GRU, 5, 7, 3), path)
    with pytest.raises(UnsupportedModelError, match=match):
        convert(path, arch=spec)


def test_training_checkpoint_is_unwrapped(tmp_path, tol):
    torch.manual_seed(2)
    m = Stack(nn.GRU, 5, 7, 3).eval()
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "model_state_dict": m.state_dict(), "optimizer": {"lr": 0.1}}, path)
    g = convert(path, arch="gru+linear")
    x = torch.randn(4, 1, 5)
    with torch.no_grad():
        want = m(x).numpy()
    assert np.max(np.abs(reference.run(g, {"x": x.numpy()})["output"] - want)) <= tol["float32"]


def test_state_dict_without_spec_is_refused(tmp_path):
    path = tmp_path / "gru.pt"
    _save(Stack(nn.GRU, 5, 7, 3), path)
    with pytest.raises(UnsupportedModelError, match="--arch"):
        convert(path)


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(6, 8, proj_size=5, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(10, 4)

    def forward(self, x):
        return torch.log_softmax(self.fc(self.lstm(x)[0]), dim=-1)


def test_cli_converts_pt2_and_state_dict(tmp_path, capsys, tol):
    torch.manual_seed(41)
    m = Tagger().eval()
    pt2, sd = tmp_path / "tagger.pt2", tmp_path / "tagger.pt"
    torch.export.save(torch.export.export(m, (torch.randn(2, 9, 6),)), str(pt2))
    torch.save(m.state_dict(), str(sd))
    a, b = tmp_path / "a.eseq", tmp_path / "b.eseq"
    assert main(["convert", str(pt2), "-o", str(a)]) == 0
    assert main(["convert", str(sd), "--arch", "lstm(batch_first)+linear+log_softmax",
                 "-o", str(b)]) == 0
    assert "LSTM x1" in capsys.readouterr().out
    x = torch.randn(2, 13, 6)      # another length than the .pt2 example: T is symbolic
    with torch.no_grad():
        want = m(x).numpy()
    for art in (a, b):
        got = edgeseq.load(art).run({"x": x.numpy()})["output"]
        assert np.max(np.abs(got - want)) <= tol["float32"]
    assert main(["convert", str(sd), "-o", str(tmp_path / "c.eseq")]) == 2
    assert "--arch" in capsys.readouterr().err
    # edgeseq compare runs the .pt2 in PyTorch as the peer
    assert main(["compare", str(pt2), "--random", "--dim", "11", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["output"] for r in report["outputs"]] == ["output"]
    assert report["outputs"][0]["shape"] == [2, 11, 4]
    assert report["outputs"][0]["max_abs"] <= tol["float32"]


class BakedLength(nn.Module):
    """Reshapes with the example's length baked in (like BeatNet): a saved program of it
    cannot be re-traced at another length, so it converts with static shapes."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(4, 4, batch_first=True)

    def forward(self, x):
        y, _ = self.gru(x.reshape(-1, 4).reshape(x.shape[0], x.shape[1], 4))
        return y


def test_pt2_with_baked_length_stays_static(tmp_path):
    path = tmp_path / "baked.pt2"
    torch.export.save(torch.export.export(BakedLength().eval(), (torch.randn(1, 5, 4),)), str(path))
    g = convert(path)
    assert g.inputs[0].shape == (1, 5, 4)
    assert "is invalid for input of size" in g.metadata["static_time"]


_NO_TORCH = """
import sys
sys.modules["torch"] = None          # as if torch were not installed
import numpy as np
from edgeseq.errors import UnsupportedModelError
from edgeseq.converters.torch import convert_state_dict, from_module
g = convert_state_dict(sys.argv[1], arch="gru+linear")   # safetensors needs no torch
assert g.inputs[0].shape == ("T", "N", 5), g.inputs
try:
    from_module(object(), ())
except UnsupportedModelError as e:
    assert "pip install 'edgeseq[torch]'" in str(e), e
    print("ok")
"""


def test_torch_is_optional(tmp_path):
    """Without torch: a clear error for modules, and safetensors state_dicts still convert."""
    import subprocess
    import sys
    path = tmp_path / "gru.safetensors"
    _save(Stack(nn.GRU, 5, 7, 3), path)
    r = subprocess.run([sys.executable, "-c", _NO_TORCH, str(path)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
