"""`sru` package modules through edgeseq's PyTorch converters, run by the runtime, against the
package's own float32 CPU forward (its compiled C++ recurrence): from_module for sru.SRU and
sru.SRUCell, a bare state_dict with an arch spec (Python API, .safetensors and the CLI), and
the refusals for what cannot be converted."""
from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from edgeseq import artifact
from edgeseq.converters.torch import convert_state_dict, from_module
from edgeseq.errors import UnsupportedModelError
from edgeseq.runtime import Model

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    sru = pytest.importorskip("sru")

TOL = 1e-5


def module(n_in=7, hidden=5, **kw):
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = sru.SRU(n_in, hidden, **kw)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return m.eval()


CONFIGS = [dict(num_layers=1), dict(num_layers=2, bidirectional=True, rescale=True),
           dict(num_layers=3, projection_size=3, layer_norm=True, highway_bias=-2.0),
           dict(num_layers=2, layer_norm=True, normalize_after=True, use_tanh=True),
           dict(num_layers=2, v1=True, has_skip_term=False, bidirectional=True),
           dict(num_layers=2, proj_input_to_hidden_first=True, rescale=True)]


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_from_module_runtime_matches_package(kw, rng):
    m = module(**kw)
    n_batch = 1 if kw.get("num_layers") == 1 else 3
    x = rng.standard_normal((9, n_batch, 7)).astype(np.float32)
    c0 = rng.standard_normal((m.num_layers, n_batch, m.output_size)).astype(np.float32)
    with torch.no_grad():
        want_y, want_c = m(torch.from_numpy(x), torch.from_numpy(c0))
    g = from_module(m, (torch.from_numpy(x), torch.from_numpy(c0)))
    got = Model(g).run({"x": x, "c0": c0})
    assert np.abs(got["output_0"] - want_y.numpy()).max() <= TOL
    assert np.abs(got["output_1"] - want_c.numpy()).max() <= TOL
    # the sequence and batch axes are free: another length and batch run too
    x2 = rng.standard_normal((4, 2, 7)).astype(np.float32)
    with torch.no_grad():
        want2 = m(torch.from_numpy(x2))[0].numpy()
    g2 = from_module(m, (torch.from_numpy(x),))
    assert np.abs(Model(g2).run({"x": x2})["output_0"] - want2).max() <= TOL


def test_sru_cell_from_module(rng):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cell = sru.SRUCell(6, 3, bidirectional=True).eval()
    x = rng.standard_normal((5, 2, 6)).astype(np.float32)
    with torch.no_grad():
        want_y, want_c = cell(torch.from_numpy(x))
    got = Model(from_module(cell, (torch.from_numpy(x),))).run({"x": x})
    assert np.abs(got["output_0"] - want_y.numpy()).max() <= TOL
    assert np.abs(got["output_1"] - want_c.numpy()).max() <= TOL


class _Tagger(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = module(n_in=7, hidden=5, num_layers=2, bidirectional=True,
                              projection_size=4, rescale=True, layer_norm=True)
        self.head = torch.nn.Linear(10, 3)

    def forward(self, x):
        return torch.log_softmax(self.head(self.encoder(x)[0]), dim=-1)


def test_state_dict_with_arch_spec(tmp_path, rng):
    net = _Tagger().eval()
    x = rng.standard_normal((8, 2, 7)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    spec = "sru:encoder(bidirectional,rescale,layers=2)+linear+log_softmax"
    pt = tmp_path / "tagger.pt"
    torch.save(net.state_dict(), pt)
    from safetensors.torch import save_file
    st = tmp_path / "tagger.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, st)
    for path in (pt, st):
        g = convert_state_dict(path, arch=spec)
        assert [n.op.value for n in g.nodes].count("SRU") == 2
        got = Model(g).run({g.inputs[0].name: x})["output"]
        assert np.abs(got - want).max() <= TOL
    # the CLI: convert, then run the artifact
    out = tmp_path / "tagger.eseq"
    r = subprocess.run([sys.executable, "-m", "edgeseq", "convert", str(pt), "--arch", spec,
                        "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = Model(artifact.load(out)).run({"x": x})["output"]
    assert np.abs(got - want).max() <= TOL


def test_state_dict_spec_checked_against_weights(tmp_path):
    net = _Tagger()
    pt = tmp_path / "t.pt"
    torch.save(net.state_dict(), pt)
    with pytest.raises(UnsupportedModelError, match="hidden=6 but the weights have hidden=5"):
        convert_state_dict(pt, arch="sru(bidirectional,hidden=6)+linear")
    with pytest.raises(UnsupportedModelError, match="layers=3 but the weights have layers=2"):
        convert_state_dict(pt, arch="sru(bidirectional,layers=3)+linear")
    with pytest.raises(UnsupportedModelError, match="hidden"):
        convert_state_dict(pt, arch="sru(bidirectional,hidden=3)+linear")


def test_refusals(rng):
    x = torch.from_numpy(rng.standard_normal((3, 1, 4)).astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        custom = sru.SRU(4, 4, num_layers=1, custom_m=torch.nn.Linear(4, 12, bias=False))
    with pytest.raises(UnsupportedModelError, match="custom_m"):
        from_module(custom, (x,))
    with pytest.raises(UnsupportedModelError, match="c0 must be"):
        from_module(module(n_in=4), (x, torch.zeros(1, 1, 5)))
