"""Delta execution through generated code (runtime/delta_codegen.py, codegen/delta_ops.py)
against the interpreter's delta path (bit for bit, statistics included) and the float64
reference; streams carry the delta state across pushes. Two graphs, one generated function
each (Numba compile time)."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseq import reference, testing
from edgeseq.errors import InputError
from edgeseq.ops import Op
from edgeseq.runtime import Model
from edgeseq.runtime.delta_runner import DeltaRunner


def _generated(g) -> Model:
    m = Model(g, codegen=True, warmup=False)
    assert m.source() is not None, m.describe()
    return m


def _used_codegen(m: Model) -> None:
    runner = DeltaRunner.of(m)
    assert runner.compiled and all(c is not None for c in runner.compiled.values()), \
        runner.codegen_note


def _smooth(x: np.ndarray, axis: int) -> np.ndarray:
    """A random walk along time, so thresholds skip a real share of columns."""
    return np.cumsum(0.3 * x, axis=axis).astype(np.float32)


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def stack():
    """Two bidirectional LSTM layers with lengths and initial states, batch 3: layer 0 at
    θ = (0, 0) runs its dense kernel (counted), layer 1 its delta kernel."""
    rng = np.random.default_rng(5)
    attrs = {"hidden_size": 7, "direction": "bidirectional"}
    g = testing.stacked_graph(Op.LSTM, 5, attrs, [testing.lstm_weights(rng, 5, 7, d=2),
                                                  testing.lstm_weights(rng, 14, 7, d=2)],
                              seq_lens=True, initial_state=True)
    x = testing.random_inputs(g, rng, 13, 3)
    x["x"] = _smooth(x["x"], 0)
    names = [n.name for n in g.nodes if n.op is Op.LSTM]
    return g, x, names, _generated(g), Model(g, codegen=False, warmup=False)


def test_delta_run_equals_interpreter_bitwise(stack):
    g, x, names, gen, interp = stack
    th = {names[0]: (0.0, 0.0), names[1]: (0.15, 0.1)}
    got = gen.run(x, delta=th)
    _used_codegen(gen)
    want = interp.run(x, delta=th)
    _same(got, want)
    assert gen.last_stats.as_dict() == interp.last_stats.as_dict()
    s = gen.last_stats.layers[names[1]]
    assert 0 < s.kept_recurrent < s.row_steps * s.n_recurrent       # it does skip
    dense = gen.last_stats.layers[names[0]]
    assert dense.macs == dense.macs_dense > 0 and dense.row_steps == 2 * x["sequence_lens"].sum()
    # skipping changes the result (a test that can fail)
    assert np.max(np.abs(got["y"] - interp.run(x)["y"])) > 1e-4


def test_delta_kernel_at_tiny_threshold_equals_reference(stack, tol):
    """θ = 1e-30 runs the delta kernel keeping every column that changed (θ = 0 exactly
    dispatches to the dense kernel): the float64 reference's result."""
    g, x, names, gen, _ = stack
    got = gen.run(x, delta={names[0]: (0.0, 0.0), names[1]: (0.0, 1e-30)})
    _used_codegen(gen)
    want = reference.run(g, x)
    for k, w in want.items():
        assert np.max(np.abs(got[k] - w)) <= tol["float32"], k


@pytest.fixture(scope="module")
def gru():
    """A forward GRU (linear_before_reset = 0: its reset-gated product runs densely) with an
    initial state, batch-first, batch 2."""
    rng = np.random.default_rng(6)
    g = testing.gru_graph(rng, 4, 6, batch_first=True, initial_state=True)
    x = testing.random_inputs(g, rng, 17, 2)
    x["x"] = _smooth(x["x"], 1)
    return g, x, _generated(g), Model(g, codegen=False, warmup=False)


def _stream(model: Model, x: dict, sizes: tuple, th) -> tuple[dict, object]:
    s = model.stream(delta=th)
    ys, start, k = [], 0, 0
    while start < 17:
        n = min(sizes[k % len(sizes)], 17 - start)
        chunk = {"x": x["x"][:, start:start + n]}
        if start == 0:
            chunk["initial_h"] = x["initial_h"]
        out = s.push(chunk)
        ys.append(out["y"])
        start, k = start + n, k + 1
    return {"y": np.concatenate(ys, axis=1), "y_h": out["y_h"]}, s


@pytest.mark.parametrize("sizes", [(1,), (3, 1, 7)], ids=["1", "3-1-7"])
def test_delta_stream_equals_interpreter_and_full_run(gru, sizes):
    g, x, gen, interp = gru
    th = (0.1, 0.05)
    got, s = _stream(gen, x, sizes, th)
    _used_codegen(gen)
    want, si = _stream(interp, x, sizes, th)
    _same(got, want)
    st, sti = s.state, si.state
    assert set(st["gru"]) == {"h", "x_hat", "h_hat", "m_x", "m_h"}
    _same(st["gru"], sti["gru"])
    assert s.stats.as_dict() == si.stats.as_dict()
    full = gen.run(x, delta=th)
    assert np.max(np.abs(got["y"] - full["y"])) <= 1e-6
    assert s.stats.layers["gru"].kept_recurrent == gen.last_stats.layers["gru"].kept_recurrent
    assert gen.last_stats.layers["gru"].skipped_recurrent > 0.05


def test_delta_stream_checkpoint_and_bad_state(gru):
    g, x, gen, _ = gru
    s = gen.stream(delta=0.1)
    s.push({"x": x["x"][:, :9], "initial_h": x["initial_h"]})
    saved = s.state
    tail = s.push({"x": x["x"][:, 9:]})["y"]
    s2 = gen.stream(delta=0.1)
    s2.state = saved
    np.testing.assert_array_equal(s2.push({"x": x["x"][:, 9:]})["y"], tail)
    bad = {k: (v[:, :1] if k in ("x_hat", "h_hat", "m_x", "m_h") else v)
           for k, v in saved["gru"].items()}
    s2.state = {"gru": bad}
    with pytest.raises(InputError, match="delta state"):
        s2.push({"x": x["x"][:, 9:]})
