"""Checks on input values that a converted model's origin makes (beyond shape and dtype).

A graph lists them in `graph.metadata["input_checks"]` as {input name: check name}; the
reference interpreter and the runtime apply them to every call, so a converted model refuses
what its original refuses instead of computing an answer the original never gives.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from edgeseq.errors import InputError

KEY = "input_checks"


def _non_increasing(name: str, a: np.ndarray) -> None:
    # NOTE: PyTorch's pack_padded_sequence(enforce_sorted=True) raises on unsorted lengths
    if a.ndim == 1 and np.any(a[1:] > a[:-1]):
        raise InputError(f"input '{name}': `lengths` array must be sorted in decreasing order "
                         f"(the model was exported with pack_padded_sequence(enforce_sorted="
                         f"True)); got {a.tolist()}")


CHECKS: dict[str, Callable[[str, np.ndarray], None]] = {"non_increasing": _non_increasing}


def check(metadata: dict, env: dict) -> None:
    """Apply the graph's input checks to the given inputs (absent inputs are skipped)."""
    for name, what in (metadata.get(KEY) or {}).items():
        fn = CHECKS.get(what)
        if fn is None:
            raise InputError(f"input '{name}': unknown input check '{what}' in the model; "
                             f"known: {sorted(CHECKS)}")
        if name in env:
            fn(name, np.asarray(env[name]))
