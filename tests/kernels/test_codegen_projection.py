"""The generated code's input projection: W_x in the panels that hold its rows (rows padded to
16, not to the interpreter's 64), every (time, batch) row projected exactly as the four-panel
GEMV does."""
from __future__ import annotations

import re

import numpy as np
import pytest

from edgeseq import testing
from edgeseq.runtime import Model
from edgeseq.runtime.codegen.lower import lower
from edgeseq.runtime.kernels.panels import (panel_gemv_acc, project_panels, to_whole_panels,
                                            to_panels)


@pytest.mark.parametrize("w_rows,k_len,t_len,n_batch", [(75, 11, 9, 1), (10, 7, 3, 2),
                                                        (100, 5, 1, 3), (75, 6, 0, 1),
                                                        (40, 3, 17, 1), (128, 4, 5, 1)])
def test_whole_panels_project_every_row_as_the_gemv_does(w_rows, k_len, t_len, n_batch):
    """Row counts that leave 1-7 rows after the groups of 4 and 8, with 1 to 8 panels (odd
    counts: the last panel in groups of eight rows)."""
    rng = np.random.default_rng(w_rows + k_len)
    w = rng.standard_normal((w_rows, k_len)).astype(np.float32)
    x = rng.standard_normal((t_len, n_batch, k_len)).astype(np.float32)
    wp = to_whole_panels(w)
    assert wp.shape[0] == -(-w_rows // 16)
    got = project_panels(x, wp)
    assert got.shape == (t_len, n_batch, wp.shape[0] * 16)
    full = to_panels(w)
    for t in range(t_len):
        for b in range(n_batch):
            want = np.zeros(full.shape[0] * 16, np.float32)
            panel_gemv_acc(full, x[t, b], want)
            assert np.array_equal(got[t, b], want[:got.shape[2]]), (t, b)
    ref = x.astype(np.float64) @ w.T.astype(np.float64)
    assert np.max(np.abs(got[:, :, :w_rows] - ref), initial=0.0) <= 1e-4
    assert np.all(got[:, :, w_rows:] == 0.0)


def test_generated_gru_reads_w_x_as_its_whole_panels():
    """A 25-unit GRU's 75 W_x rows: 5 panels in the generated code (8 is 60% more projection
    work: the 3-layer BiGRU ran slower generated than interpreted)."""
    graph = testing.gru_graph(np.random.default_rng(5), 13, 25, direction="bidirectional")
    model = Model(graph, warmup=False, codegen=False)
    low = lower(graph, {s.node.name: s.kernel for s in model.plan.steps}, False)
    w_x = re.findall(r"view3\(kt\[\d+\], wf, \d+, (\d+), 13, 16\)", low.source)
    assert w_x == ["5", "5"]
