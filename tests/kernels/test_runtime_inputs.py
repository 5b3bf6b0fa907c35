"""Bad inputs get an InputError naming the input and saying expected vs got; kernels never
see them. Artifacts load memory-mapped and run."""
from __future__ import annotations

import numpy as np
import pytest

import edgeseq
from edgeseq import artifact, reference, testing
from edgeseq.errors import InputError
from edgeseq.runtime import Model


@pytest.fixture(scope="module")
def model():
    g = testing.lstm_graph(np.random.default_rng(0), 4, 5, seq_lens=True, initial_state=True)
    return Model(g, warmup=False)


def _x(t=3, n=2, i=4, dtype=np.float32):
    return np.zeros((t, n, i), dtype=dtype)


@pytest.mark.parametrize("inputs,match", [
    ({}, r"missing input 'x' \(expected \(T, N, 4\) float32\)"),
    ({"x": _x(), "z": _x()}, r"unknown input\(s\) \['z'\]"),
    ({"x": np.zeros((3, 4), np.float32)}, r"input 'x': expected \(T, N, 4\) float32, got rank 2"),
    ({"x": _x(i=5)}, r"input 'x': expected \(T, N, 4\) float32, got \(3, 2, 5\).*dim 2 must be 4"),
    ({"x": _x(dtype=np.int32)}, r"input 'x': expected \(T, N, 4\) float32, got dtype int32"),
    ({"x": _x(), "initial_h": np.zeros((1, 3, 5), np.float32)},
     r"input 'initial_h': dim 1 \('N'\) is 3 but input 'x' has 'N' = 2"),
    ({"x": _x(), "sequence_lens": np.array([1.0, 2.0])},
     r"input 'sequence_lens': expected \(N\) int32, got dtype float64"),
    ({"x": _x(), "sequence_lens": np.array([1, 4])},
     r"node 'lstm' \(LSTM\): sequence_lens must be 2 values in \[0, 3\], got \[1, 4\]"),
])
def test_bad_inputs_are_named(model, inputs, match):
    with pytest.raises(InputError, match=match):
        model.run(inputs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_raise_by_default(model, bad):
    x = _x()
    x[1, 0, 2] = bad
    with pytest.raises(InputError, match=r"input 'x': 1 non-finite value"):
        model.run({"x": x})
    streaming = Model(testing.lstm_graph(np.random.default_rng(0), 4, 5), warmup=False)
    with pytest.raises(InputError, match="non-finite"):
        streaming.stream().push({"x": x})


def test_non_finite_allowed_when_asked():
    g = testing.rnn_graph(np.random.default_rng(1), 3, 4)
    x = np.zeros((2, 1, 3), np.float32)
    x[0, 0, 0] = np.inf
    out = Model(g, warmup=False, check_finite=False).run({"x": x})
    assert out["y"].shape == (2, 1, 1, 4)


def test_float64_and_float16_are_converted(model, tol):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 2, 4))
    a = model.run({"x": x})["y"]
    b = model.run({"x": x.astype(np.float32)})["y"]
    c = model.run({"x": x.astype(np.float16)})["y"]
    assert a.dtype == np.float32 and np.array_equal(a, b)
    assert np.max(np.abs(c - b)) < 1e-2


def test_optional_state_inputs_default_to_zero(model):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 4)).astype(np.float32)
    z = {"initial_h": np.zeros((1, 2, 5), np.float32), "initial_c": np.zeros((1, 2, 5), np.float32),
         "sequence_lens": np.array([3, 3], np.int32)}
    assert np.array_equal(model.run({"x": x})["y"], model.run({"x": x, **z})["y"])


def test_inputs_must_be_a_dict(model):
    with pytest.raises(InputError, match="must be a dict"):
        model.run(_x())


def test_artifact_load_runs_memory_mapped(tmp_path, tol):
    rng = np.random.default_rng(4)
    g = testing.gru_graph(rng, 6, 8, linear_before_reset=True, direction="bidirectional")
    path = artifact.save(g, tmp_path / "gru.eseq")
    loaded = artifact.load(path)
    assert any(not c.flags.writeable for c in loaded.constants.values())
    model = edgeseq.load(path)
    ins = testing.random_inputs(g, rng, 9, 2)
    want = reference.run(g, ins)
    got = model.run(ins)
    for k in want:
        assert np.max(np.abs(got[k] - want[k])) <= tol["float32"]
    # the graph's read-only arrays are untouched
    for name, c in artifact.load(path).constants.items():
        assert np.array_equal(c, loaded.constants[name])
