"""Hostile run-time use of a Model: a working-memory budget checked before allocating
(naming the node), and stream state of the wrong kind refused with an InputError."""
from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

import edgeseq
from edgeseq import artifact
from edgeseq.errors import EdgeseqError, InputError, MemoryLimitError
from edgeseq.limits import LIMITS
from edgeseq.testing import gru_graph, lstm_graph


# the per-node interpreter (the whole-graph compiler, where present, has its own checks)
NO_CODEGEN = {"codegen": False} \
    if "codegen" in inspect.signature(edgeseq.runtime.Model).parameters else {}


def pad_artifact(tmp_path, columns: int):
    """x (T, 4) -> Pad to `columns` columns: columns * 4 bytes per time step."""
    g = {"name": "pad", "inputs": [{"name": "x", "dtype": "float32", "shape": ["T", 4]}],
         "outputs": [{"name": "y", "dtype": "float32", "shape": []}],
         "nodes": [{"name": "pad", "op": "Pad", "inputs": ["x"], "outputs": ["y"],
                    "attrs": {"pads": [0, columns - 4, 0, 0]}, "weights": {}}],
         "constants": {}, "metadata": {}}
    return artifact.write_raw(tmp_path / "pad.eseq", json.dumps(g), {})


def test_working_memory_over_budget_names_the_node(tmp_path):
    """Pad to 2^20 columns: 4 MiB per time step. Refused when building the Model with a
    smaller budget (naming node and file), and per call when T makes it pass the budget."""
    path = pad_artifact(tmp_path, 2**20)
    with pytest.raises(MemoryLimitError, match=rf"{path}.*node 'pad' \(Pad\)"):
        edgeseq.load(path, memory_limit=2**22 - 1)
    model = edgeseq.load(path, memory_limit=2**23, warmup=False)
    with pytest.raises(MemoryLimitError, match=r"node 'pad' \(Pad\).*T=3"):
        model.run({"x": np.zeros((3, 4), np.float32)})
    with pytest.raises(MemoryLimitError, match="node 'pad'"):
        model.stream().push({"x": np.zeros((3, 4), np.float32)})
    assert model.run({"x": np.zeros((2, 4), np.float32)})["y"].shape == (2, 2**20)


def test_default_budget_is_finite_and_generous():
    assert LIMITS.memory_bytes == 4 * 2**30
    m = edgeseq.runtime.Model(lstm_graph(np.random.default_rng(0), 3, 4))
    assert m.memory_limit == LIMITS.memory_bytes


@pytest.mark.parametrize("value", [None, [], ["gru"], {"gru": None}, {"gru": {"h": "abc"}},
                                   {"gru": {"h": [[1.0], [1.0, 2.0]]}}, {"gru": {"h": object()}},
                                   {"gru": {"h": {"x": 1}}}, 3.0],
                         ids=lambda v: repr(v)[:30])
def test_bad_stream_state_is_an_input_error(value):
    model = edgeseq.runtime.Model(gru_graph(np.random.default_rng(0), 3, 4))
    stream = model.stream()
    with pytest.raises(InputError, match="stream state"):
        stream.state = value
    stream.state = {"gru": {"h": np.ones((1, 1, 4), np.float32)}}   # still usable after
    assert stream.state["gru"]["h"].sum() == 4


def test_memory_limit_none_turns_the_budget_off(tmp_path):
    model = edgeseq.load(pad_artifact(tmp_path, 2**20), memory_limit=None, warmup=False)
    assert model.run({"x": np.zeros((3, 4), np.float32)})["y"].shape == (3, 2**20)
    assert issubclass(MemoryLimitError, EdgeseqError)


def test_inputs_that_disagree_with_a_symbolic_dim_the_weights_fix_name_the_node():
    """x declared (T, N, N): validation accepts it (the feature dim is a symbol), but w_x fixes
    the feature size to 3; x of shape (4, 2, 2) reached the LSTM kernel, which raised a raw
    NumPy ValueError or, for other sizes, read past x and returned garbage (found by
    tools/fuzz.py, graph-json target)."""
    g = lstm_graph(np.random.default_rng(0), 3, 4)
    g.inputs[0].shape = ("T", "N", "N")
    model = edgeseq.runtime.Model(g.validate(), warmup=False, **NO_CODEGEN)
    for shape in [(4, 2, 2), (1, 1, 1), (4, 5, 5)]:    # the kernel read past x (no error)
        with pytest.raises(InputError, match=r"node 'lstm'.* needs .*3"):
            model.run({"x": np.zeros(shape, np.float32)})
    assert model.run({"x": np.zeros((4, 3, 3), np.float32)})["y"].shape == (4, 1, 3, 4)


def test_the_compiled_path_refuses_them_too():
    """The same graph with the whole-graph compiler (when this runtime has one): the graph
    input's symbol is checked against the size the weights fix before any compiled code runs."""
    g = lstm_graph(np.random.default_rng(0), 3, 4)
    g.inputs[0].shape = ("T", "N", "N")
    model = edgeseq.runtime.Model(g.validate(), warmup=False)
    for shape in [(4, 2, 2), (1, 1, 1), (4, 5, 5)]:
        with pytest.raises(InputError, match=r"'N' is \d, but node 'lstm' needs it to be 3"):
            model.run({"x": np.zeros(shape, np.float32)})
        with pytest.raises(InputError, match="node 'lstm'"):
            model.stream().push({"x": np.zeros(shape, np.float32)})


@pytest.mark.parametrize("engine", ["runtime", "reference"])
def test_edgeseq_run_names_file_and_node_when_over_budget(engine, tmp_path, capsys):
    from edgeseq.cli import main
    path = pad_artifact(tmp_path, 2**28)             # 1 GiB a time step
    np.save(tmp_path / "x.npy", np.zeros((5, 4), np.float32))
    rc = main(["run", str(path), "--input", f"x={tmp_path}/x.npy", "--engine", engine])
    err = capsys.readouterr().err
    assert rc == 2 and f"MemoryLimitError: {path}: " in err and "node 'pad' (Pad)" in err, err
