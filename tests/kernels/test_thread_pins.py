"""BLAS thread pinning (runtime/threads.py): the count is n inside a pin, the caller's value
after, through the direct OpenBLAS calls and through threadpoolctl."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseq import testing
from edgeseq.runtime import Model
from edgeseq.runtime import threads

libs = threads._blas_libs()
pytestmark = pytest.mark.skipif(not libs, reason="threadpoolctl sees no BLAS (not pinned)")


@pytest.mark.parametrize("direct", [True, False])
def test_pin_sets_and_restores(direct):
    pins = threads.ThreadPins(1)
    if not direct:
        pins._raw = None                      # the threadpoolctl route
    lib = libs[0]
    old = lib.num_threads
    try:
        lib.set_num_threads(3)
        saved = pins.pin()
        assert lib.num_threads == 1
        pins.restore(saved)
        assert lib.num_threads == 3
    finally:
        lib.set_num_threads(old)


def test_model_run_restores_the_callers_setting(rng):
    lib = libs[0]
    old = lib.num_threads
    try:
        lib.set_num_threads(2)
        g = testing.lstm_graph(rng, 4, 8)
        Model(g).run({"x": np.zeros((300, 1, 4), np.float32)})   # long: BLAS GEMM path
        assert lib.num_threads == 2
    finally:
        lib.set_num_threads(old)
