"""Pad's reflect/edge modes (slice assignments in runtime/glue.py) vs the reference over
widths up to the reflect limit (n - 1), both axes, crops mixed with pads."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgeseq import reference
from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import Op
from edgeseq.runtime import Model

R = np.random.default_rng(17)
SHAPE = (3, 5)
WIDTHS = [0, 1, 2, 4]                                 # 4 = n - 1 on the last axis
CASES = [(mode, pads) for mode in ("reflect", "edge")
         for pads in itertools.product([0, 1, 2], WIDTHS, [0, 2], WIDTHS)]
CASES += [("reflect", (0, -1, 0, 2)), ("edge", (-1, 1, 0, 0))]


@pytest.mark.parametrize("mode,pads", CASES)
def test_pad_matches_reference(mode, pads):
    g = Graph("pad", [Value("x", "float32", SHAPE)], [Value("y", "float32", ())],
              [Node("p", Op.PAD, ["x"], ["y"], {"pads": pads, "mode": mode})]).validate()
    x = R.standard_normal(SHAPE).astype(np.float32)
    got = Model(g, warmup=False).run({"x": x})["y"]
    want = reference.run(g, {"x": x})["y"]
    assert got.shape == want.shape
    assert np.array_equal(got, want.astype(np.float32))
