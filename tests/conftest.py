"""Shared seeds, tolerances and helpers for every test tier."""
from __future__ import annotations

import os

import numpy as np
import pytest

# The whole-graph compiler compiles one Numba function per distinct graph: the hundreds of
# one-off graphs of the suite run on the per-node interpreter, and
# tests/kernels/test_codegen_vs_reference.py turns the compiler on explicitly
# (Model(..., codegen=True)) for the graphs it checks against the reference.
os.environ.setdefault("EDGESEQ_CODEGEN", "0")

# One table of tolerances (max abs error) for the whole suite; docs/design.md (correctness) says who checks whom.
TOL = {
    "reference_vs_torch_f64": 1e-6,   # float64 reference vs float64 PyTorch
    "float32": 1e-5,                  # float32 cell outputs of unit-scale data
    "silero_prob": 1e-4,              # speech probabilities of the silero VAD
    # compressed weights vs the float graph, small random LSTM/GRU/RNN (unit-scale outputs)
    "int8_small_lstm": 1e-2,
    "fp16_small_lstm": 1e-3,
}

SEED = 20261125


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


def max_abs(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape {a.shape} vs {b.shape}"
    return float(np.max(np.abs(a - b))) if a.size else 0.0


@pytest.fixture
def tol() -> dict:
    """The tolerance table (tests cannot import conftest under --import-mode=importlib)."""
    return TOL
