"""The layout kernels generated code calls for rank-3 values (kernels/graph_ops.py
slice3_ws, permute3_ws) against NumPy's slicing and transpose, every axis and permutation,
with the results taken from a workspace arena."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgeseq.runtime.kernels import graph_ops as G

X = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
BIG = 2 ** 62


def _arena():
    return np.zeros(256, np.float32), np.zeros(1, np.int64)


@pytest.mark.parametrize("perm", list(itertools.permutations(range(3))))
def test_permute3_equals_numpy_transpose(perm):
    ws, wsp = _arena()
    y = G.permute3_ws(X, *perm, ws, wsp)
    assert y.flags.c_contiguous and np.array_equal(y, np.transpose(X, perm))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice3_equals_numpy_slicing(axis):
    for start, end, step in [(1, BIG, 1), (-1, -BIG, -1), (4, 0, -2), (1, 5, 2), (7, 9, 1),
                             (-3, -1, 1)]:
        ws, wsp = _arena()
        y = G.slice3_ws(X, axis, start, end, step, ws, wsp)
        key = [slice(None)] * 3
        key[axis] = slice(start, end, step)
        assert np.array_equal(y, X[tuple(key)]), (axis, start, end, step)
