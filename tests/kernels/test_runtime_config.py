"""Every Numba kernel in runtime/ takes its flags from runtime/kernels/flags.py (re-exported by
runtime/config.py)."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from edgeseq.ops import ACT_CODES, ACTIVATIONS
from edgeseq.reference import ACTIVATION_FNS
from edgeseq.runtime import config
from edgeseq.runtime.kernels.activations import activate, fast_sigmoid, fast_tanh
from edgeseq.runtime.kernels.flags import FASTMATH_FLAGS, NJIT

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"


def _njit_calls():
    for path in sorted(RUNTIME.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef,)):
                for dec in node.decorator_list:
                    name = dec.func if isinstance(dec, ast.Call) else dec
                    ident = getattr(name, "id", getattr(name, "attr", ""))
                    if ident in ("njit", "jit", "vectorize", "guvectorize", "stencil"):
                        yield path.name, node.name, dec


def test_every_njit_uses_the_config():
    found = list(_njit_calls())
    assert len(found) > 10, "expected the kernels to be found"
    for fname, fn, dec in found:
        assert isinstance(dec, ast.Call), f"{fname}:{fn} uses bare @{ast.unparse(dec)}"
        assert not dec.args, f"{fname}:{fn}: positional njit arguments"
        kw = dec.keywords
        assert len(kw) == 1 and kw[0].arg is None and ast.unparse(kw[0].value) == "NJIT", \
            f"{fname}:{fn}: must be @njit(**NJIT), got @{ast.unparse(dec)}"


def test_config_flags():
    assert not {"nnan", "ninf", "fast"} & set(NJIT["fastmath"])
    assert set(NJIT["fastmath"]) == set(FASTMATH_FLAGS)
    assert NJIT["error_model"] == "numpy" and NJIT["cache"] is True
    assert config.NJIT is NJIT and config.FASTMATH_FLAGS is FASTMATH_FLAGS


def test_rational_tanh_sigmoid_accuracy():
    x = np.concatenate([np.linspace(-12, 12, 20001), [-np.inf, np.inf, 0.0, -0.0, 1e-30]])
    x32 = x.astype(np.float32)
    t = np.array([fast_tanh(v) for v in x32], dtype=np.float64)
    s = np.array([fast_sigmoid(v) for v in x32], dtype=np.float64)
    x64 = x32.astype(np.float64)
    assert np.max(np.abs(t - np.tanh(x64))) < 5e-7
    with np.errstate(over="ignore"):
        assert np.max(np.abs(s - 1.0 / (1.0 + np.exp(-x64)))) < 5e-7
    # +-inf saturate (within the approximation's error, never NaN)
    assert abs(t[-5] + 1) < 5e-7 and abs(t[-4] - 1) < 5e-7
    assert abs(s[-5]) < 5e-7 and abs(s[-4] - 1) < 5e-7


def test_activation_codes_follow_the_one_table():
    """The compiled `activate(code)` computes, for the code of each name in
    edgeseq.ops.ACTIVATIONS, the float64 reference function of that name."""
    assert list(ACT_CODES) == list(ACTIVATIONS) == sorted(ACTIVATIONS, key=ACT_CODES.get)
    assert set(ACTIVATION_FNS) == set(ACTIVATIONS)
    x = np.linspace(-4.0, 4.0, 161)
    for name, code in ACT_CODES.items():
        alpha, beta = 0.7, -0.3
        buf = x.astype(np.float32)
        activate(buf, 0, buf.size, code, alpha, beta)
        want = ACTIVATION_FNS[name](x.astype(np.float32).astype(np.float64), alpha, beta)
        assert np.allclose(buf, want, rtol=1e-5, atol=2e-6), name
