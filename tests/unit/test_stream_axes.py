"""Time-axis inference for streaming: its error names the node that really blocks."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseq import testing
from edgeseq.errors import GraphError
from edgeseq.graph import Node, Value
from edgeseq.ops import Op
from edgeseq.runtime.streaming import time_axes


def test_error_names_the_node_that_blocks_the_right_candidate():
    # batch-first LSTM, then a softmax over time: the batch axis (tried first) fails at the
    # LSTM, the time axis fails at the softmax, which is what stops this model streaming
    g = testing.lstm_graph(np.random.default_rng(0), 4, 5, batch_first=True)
    g.nodes.append(Node("over_time", Op.SOFTMAX, ["y"], ["p"], {"axis": 1}))
    g.outputs = [Value("p", "float32", ())]
    g.validate()
    with pytest.raises(GraphError, match="node 'over_time'.*over the time axis"):
        time_axes(g)
