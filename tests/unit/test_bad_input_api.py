"""Bad and unusual input through the Python API (edgeseq.load -> Model.run / stream): a typed
edgeseq error naming what is wrong, or -- for input that is merely unusual (empty, float64,
non-contiguous, read-only) -- the same numbers as the NumPy reference. Never a crash and never
silently wrong output."""
from __future__ import annotations

import numpy as np
import pytest

import edgeseq
from edgeseq import artifact, reference, testing
from edgeseq.errors import ArtifactError, EdgeseqError, GraphError, InputError


def _max_abs(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, f"shape {a.shape} vs {b.shape}"
    return float(np.max(np.abs(a - b))) if a.size else 0.0


@pytest.fixture(scope="module")
def bidi(tmp_path_factory):
    """Bidirectional batch-first LSTMP with lengths and initial states, loaded from disk."""
    g = testing.lstm_graph(np.random.default_rng(3), 4, 6, proj_size=3, direction="bidirectional",
                           batch_first=True, seq_lens=True, initial_state=True)
    path = artifact.save(g, tmp_path_factory.mktemp("bidi") / "m.eseq")
    return g, edgeseq.load(path)


def _feeds(rng, n=2, t=5):
    return {"x": rng.standard_normal((n, t, 4)).astype(np.float32),
            "sequence_lens": np.array([t, 0, 2][:n], np.int32),
            "initial_h": rng.standard_normal((n, 2, 3)).astype(np.float32),
            "initial_c": rng.standard_normal((n, 2, 6)).astype(np.float32)}


@pytest.mark.parametrize("make", [
    lambda f: {**f, "x": f["x"].astype(np.float64)},                       # float64
    lambda f: {**f, "x": np.asfortranarray(f["x"])},                       # Fortran order
    lambda f: {**f, "x": np.repeat(f["x"], 2, axis=2)[:, :, ::2]},         # strided view
    lambda f: {k: _readonly(v) for k, v in f.items()},                     # read-only
    lambda f: {**f, "sequence_lens": f["sequence_lens"].astype(np.int64)},  # int64 lengths
], ids=["float64", "fortran", "strided", "readonly", "int64_lens"])
def test_unusual_but_valid_inputs_give_the_reference_result(bidi, make, rng, tol):
    g, model = bidi
    feeds = _feeds(rng)
    want = reference.run(g, feeds)
    got = model.run(make(feeds))
    for k in want:
        assert got[k].dtype == np.float32
        assert _max_abs(got[k], want[k]) <= tol["float32"], k


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("n,t", [(2, 0), (0, 5), (0, 0)])
def test_empty_inputs(bidi, n, t, rng):
    """T = 0 or N = 0: empty outputs of the right shape, states = initial states (T = 0)."""
    g, model = bidi
    feeds = _feeds(rng, n=max(n, 1), t=max(t, 1))
    feeds = {"x": np.zeros((n, t, 4), np.float32),
             "sequence_lens": np.zeros(n, np.int32),
             "initial_h": feeds["initial_h"][:n], "initial_c": feeds["initial_c"][:n]}
    got = model.run(feeds)
    assert got["y"].shape == (n, t, 2, 3)
    assert got["y_h"].shape == (n, 2, 3) and got["y_c"].shape == (n, 2, 6)
    np.testing.assert_array_equal(got["y_h"], feeds["initial_h"])
    np.testing.assert_array_equal(got["y_c"], feeds["initial_c"])


@pytest.mark.parametrize("change,match", [
    (lambda f: {**f, "sequence_lens": np.array([6, 1], np.int32)},
     r"node 'lstm' \(LSTM\): sequence_lens must be 2 values in \[0, 5\], got \[6, 1\]"),
    (lambda f: {**f, "sequence_lens": np.array([-1, 1], np.int32)}, r"in \[0, 5\], got \[-1, 1\]"),
    (lambda f: {**f, "sequence_lens": np.array([1.5, 1.0])}, r"'sequence_lens'.*dtype float64"),
    (lambda f: {**f, "initial_c": f["initial_c"][:, :, :3]}, r"'initial_c'.*dim 2 must be 6"),
    (lambda f: {**f, "initial_h": np.full((2, 2, 3), np.nan, np.float32)},
     r"'initial_h': 12 non-finite"),
    (lambda f: {**f, "x": f["x"][None]}, r"'x': expected \(N, T, 4\) float32, got rank 4"),
    (lambda f: {**f, "x": f["x"].astype(np.int16)}, r"'x'.*got dtype int16"),
    (lambda f: {**f, "x": f["x"].astype(np.complex64)}, r"'x'.*got dtype complex64"),
    (lambda f: {**f, "X": f["x"]}, r"unknown input\(s\) \['X'\]"),
    (lambda f: {k: v for k, v in f.items() if k != "x"}, r"missing input 'x'"),
])
def test_bad_inputs_name_what_is_wrong(bidi, change, match, rng):
    _, model = bidi
    with pytest.raises(InputError, match=match):
        model.run(change(_feeds(rng)))


def test_streaming_refusals_are_typed(bidi):
    """A bidirectional layer cannot stream: a GraphError naming the node, not a crash."""
    _, model = bidi
    with pytest.raises(GraphError, match=r"node 'lstm' \(LSTM\).*bidirectional"):
        model.stream()


@pytest.fixture(scope="module")
def gru_stream_model(tmp_path_factory):
    g = testing.gru_graph(np.random.default_rng(5), 3, 4, linear_before_reset=True)
    return g, edgeseq.load(artifact.save(g, tmp_path_factory.mktemp("gru") / "g.eseq"))


def test_stream_bad_chunks(gru_stream_model, rng):
    _, model = gru_stream_model
    s = model.stream()
    s.push({"x": rng.standard_normal((2, 1, 3)).astype(np.float32)})
    with pytest.raises(InputError, match="carries state for batch 1, but this chunk has batch 2"):
        s.push({"x": np.zeros((2, 2, 3), np.float32)})
    x = np.zeros((2, 1, 3), np.float32)
    x[1, 0, 2] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        s.push({"x": x})
    with pytest.raises(InputError, match=r"stream state of 'gru'\['h'\]: expected"):
        s.state = {"gru": {"h": np.zeros((1, 1, 7), np.float32)}}


def test_stream_state_setter_refuses_non_finite(gru_stream_model):
    _, model = gru_stream_model
    s = model.stream()
    try:
        s.state = {"gru": {"h": np.full((1, 1, 4), np.nan, np.float32)}}
    except InputError:
        return
    out = s.push({"x": np.zeros((2, 1, 3), np.float32)})
    assert np.isfinite(out["y"]).all(), "non-finite state silently produced non-finite outputs"


def test_damaged_artifacts_raise_artifact_error(tmp_path):
    g = testing.rnn_graph(np.random.default_rng(1), 2, 3)
    raw = artifact.save(g, tmp_path / "ok.eseq").read_bytes()
    cases = {"empty": b"", "short": raw[:5], "half": raw[:len(raw) // 2],
             "junk": np.random.default_rng(0).bytes(2000),
             "flipped": raw[:-3] + bytes([raw[-3] ^ 0x55]) + raw[-2:]}
    for name, data in cases.items():
        p = tmp_path / f"{name}.eseq"
        p.write_bytes(data)
        with pytest.raises(ArtifactError, match=name):
            edgeseq.load(p)


def test_missing_path_and_directory_are_os_errors(tmp_path):
    """Python's own typed errors (the CLI turns them into one line, exit 2)."""
    with pytest.raises(FileNotFoundError):
        edgeseq.load(tmp_path / "nope.eseq")
    with pytest.raises(IsADirectoryError):
        edgeseq.load(tmp_path)
    assert issubclass(ArtifactError, EdgeseqError)
