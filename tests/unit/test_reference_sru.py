"""The float64 reference of the SRU op against the `sru` package (2.6) in float64.

The package's forward runs its pure-PyTorch recurrence when gradients are enabled (with no
gradients it calls its float32-only C++ op), so these comparisons run under enable_grad in
float64. Modules are converted with from_module (converters/torch/_sru.py), so the weight
layout mapping is under test too. Every structural combination (directions x projection x
layer norm before/after/none x skip input/projected/none) runs with two layers; the scalar
options (v1, use_tanh, rescale, highway bias) are cycled so that each of their 16
combinations occurs. Sizes are odd; batch 1 and 3; per-row lengths against mask_pad.
"""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch

from edgeseq import reference
from edgeseq.converters.torch import from_module
from edgeseq.graph import Value

with warnings.catch_warnings():
    warnings.simplefilter("ignore")        # no CUDA here: the package says so on import
    sru = pytest.importorskip("sru")

HIDDEN = 5
STRUCTURE = list(itertools.product((False, True), (0, 3), ("none", "before", "after"),
                                   ("input", "projected", "none")))


def make_sru(case: int, bidirectional: bool, proj: int, ln: str, skip: str,
             layers: int = 2) -> tuple:
    """A package SRU in float64 with random (not initial) weights; returns (module, n_in)."""
    v1, tanh, rescale, negative_bias = ((case >> k) & 1 for k in range(4))
    d_h = HIDDEN * (2 if bidirectional else 1)
    n_in = d_h if skip == "input" else 7
    torch.manual_seed(case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # use_tanh / v1 are deprecated options
        m = sru.SRU(n_in, HIDDEN, num_layers=layers, bidirectional=bidirectional,
                    projection_size=proj, layer_norm=ln != "none", normalize_after=ln == "after",
                    has_skip_term=skip != "none", v1=bool(v1), use_tanh=bool(tanh),
                    rescale=bool(rescale), highway_bias=-1.0 if negative_bias else 0.0)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if not name.endswith("weight_c") or not v1:     # v1 keeps weight_c at zero
                p.add_(0.3 * torch.randn_like(p))
    return m.double().eval(), n_in


def package_run(m, x: np.ndarray, c0: np.ndarray, mask_pad=None) -> tuple:
    with warnings.catch_warnings(), torch.enable_grad():
        warnings.simplefilter("ignore")     # "Running SRU on CPU with grad_enabled=True"
        y, c = m(torch.from_numpy(x), torch.from_numpy(c0), mask_pad=mask_pad)
    return y.detach().numpy(), c.detach().numpy()


@pytest.mark.parametrize("bidirectional,proj,ln,skip", STRUCTURE)
def test_reference_matches_package(bidirectional, proj, ln, skip, tol):
    case = STRUCTURE.index((bidirectional, proj, ln, skip))
    m, n_in = make_sru(case, bidirectional, proj, ln, skip)
    rng = np.random.default_rng(case)
    n_batch = 1 + 2 * (case % 2)
    x = rng.standard_normal((6, n_batch, n_in))
    c0 = rng.standard_normal((2, n_batch, m.output_size))
    g = from_module(m, (torch.from_numpy(x), torch.from_numpy(c0)))
    want_y, want_c = package_run(m, x, c0)
    got = reference.run(g, {"x": x, "c0": c0})
    assert np.abs(got["output_0"] - want_y).max() <= tol["reference_vs_torch_f64"]
    assert np.abs(got["output_1"] - want_c).max() <= tol["reference_vs_torch_f64"]


def test_every_scalar_option_combination_is_covered():
    assert len({case % 16 for case in range(len(STRUCTURE))}) == 16


@pytest.mark.parametrize("bidirectional", [False, True])
def test_sequence_lengths_match_package_mask_pad(bidirectional, tol):
    """sequence_lens on every layer equals the package's mask_pad (padding at the end)."""
    m, n_in = make_sru(5, bidirectional, 0, "after", "projected")
    rng = np.random.default_rng(3)
    lens = np.array([6, 2, 0, 4], np.int64)
    x = rng.standard_normal((6, 4, n_in))
    c0 = rng.standard_normal((2, 4, m.output_size))
    mask = torch.from_numpy(np.arange(6)[:, None] >= lens[None, :])
    want_y, want_c = package_run(m, x, c0, mask_pad=mask)
    g = from_module(m, (torch.from_numpy(x), torch.from_numpy(c0)))
    g.inputs.append(Value("lens", "int64", ("N",)))
    for node in g.nodes:
        if node.op.value == "SRU":
            node.inputs[1] = "lens"
    g.validate()
    got = reference.run(g, {"x": x, "c0": c0, "lens": lens})
    assert np.abs(got["output_0"] - want_y).max() <= tol["reference_vs_torch_f64"]
    assert np.abs(got["output_1"] - want_c).max() <= tol["reference_vs_torch_f64"]


def test_batch_first_node_equals_time_major(rng):
    m, n_in = make_sru(2, True, 0, "before", "projected", layers=1)
    x = rng.standard_normal((5, 3, n_in))
    g = from_module(m, (torch.from_numpy(x),))
    want = reference.run(g, {"x": x})
    node = next(n for n in g.nodes if n.op.value == "SRU")
    node.attrs["batch_first"] = True
    g.inputs[0] = Value("x", "float32", ("N", "T", n_in))
    g.outputs = [v for v in g.outputs if v.name == "output_0"]
    g.values = {}
    g.validate()
    got = reference.run(g, {"x": x.transpose(1, 0, 2)})["output_0"]
    assert np.abs(got.transpose(1, 0, 2) - want["output_0"]).max() == 0.0


def test_sru_cell_and_rnn_compatible_state(tol, rng):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cell = sru.SRUCell(7, HIDDEN, bidirectional=True).double().eval()
        stack = sru.SRU(7, HIDDEN, num_layers=2, bidirectional=True,
                        nn_rnn_compatible_return=True).double().eval()
    x = rng.standard_normal((4, 2, 7))
    c0 = rng.standard_normal((2, 2 * HIDDEN))
    want_y, want_c = package_run(cell, x, c0)
    got = reference.run(from_module(cell, (torch.from_numpy(x), torch.from_numpy(c0))),
                        {"x": x, "c0": c0})
    assert np.abs(got["output_0"] - want_y).max() <= tol["reference_vs_torch_f64"]
    assert np.abs(got["output_1"] - want_c).max() <= tol["reference_vs_torch_f64"]
    c0 = rng.standard_normal((2, 2, 2 * HIDDEN))
    want_y, want_c = package_run(stack, x, c0)
    assert want_c.shape == (4, 2, HIDDEN)
    got = reference.run(from_module(stack, (torch.from_numpy(x), torch.from_numpy(c0))),
                        {"x": x, "c0": c0})
    assert np.abs(got["output_1"] - want_c).max() <= tol["reference_vs_torch_f64"]
