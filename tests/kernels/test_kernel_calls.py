"""Generated code calls the kernels through function pointers (runtime/codegen/kernel_calls.py,
kernels/pointer_calls.py) for the JIT, and links them for ahead-of-time compilation. These
checks read the generated source and compile one tiny function: the generated graphs
themselves are run against the reference in test_codegen_vs_reference.py."""
from __future__ import annotations

import re

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from edgeseq import testing
from edgeseq.runtime import Model
from edgeseq.runtime.codegen.lower import lower
from edgeseq.runtime.kernels import pointer_calls as K

CALL = re.compile(r"\bK\.(\w+)\(kt\[(\d+)\]")


def _lowered(linked: bool):
    graph = testing.lstm_graph(np.random.default_rng(3), 5, 8, direction="bidirectional")
    model = Model(graph, warmup=False, codegen=False)
    return lower(graph, {s.node.name: s.kernel for s in model.plan.steps}, linked)


def test_pointer_calls_index_the_address_table_in_the_order_of_kernel_calls():
    low = _lowered(False)
    calls = CALL.findall(low.source)
    assert calls and not low.linked
    # every call reads the address of its own entry: a slot shifted by one would call another
    # kernel with the wrong arguments
    for name, slot in calls:
        assert low.kernel_calls[int(slot)] == name
    assert set(low.kernel_calls) == {name for name, _ in calls}
    assert {"project_panels", "state3"} <= set(low.kernel_calls)
    assert re.search(r"def graph_run\(.*, kt\):", low.source)


def test_linked_form_has_no_pointer_calls_and_no_table_argument():
    """The ahead-of-time form (runtime/aot sets EDGESEQ_CODEGEN_LINKED=1): plain calls, the
    argument layout runtime/native/layout.py expects."""
    low = _lowered(True)
    assert low.linked and low.kernel_calls == ()
    assert "K." not in low.source and "kt" not in low.source
    assert "P.project_panels(" in low.source and "G.state3(" in low.source
    assert re.search(r"def graph_run\(.*, ws, wsp\):", low.source)


def test_an_entry_called_with_the_wrong_types_is_a_typing_error_naming_it():
    """One signature per kernel: a caller cannot make a second specialisation."""
    @njit
    def bad(kt, w):
        return K.take1(kt[0], w, np.zeros(1, np.int64), 3)

    with pytest.raises(TypingError, match="kernel entry 'take1' argument 0"):
        bad(np.zeros(1, np.int64), np.zeros(4, np.float64))
