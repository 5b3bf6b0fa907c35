"""The edgeseq runtime (Numba kernels) on converted TFLite models against the TFLite
interpreter: whole sequences, and streaming, where TFLite keeps the LSTM state in variable
tensors across invoke() and edgeseq's Stream.push carries it across chunks."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edgeseq import reference
from edgeseq.converters.tflite import convert
from edgeseq.converters.tflite.interpreter import TfliteSession, run_tflite
from edgeseq.runtime import Model

# the fixture maker is a tool script, not a package module
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import make_tflite_fixtures as fx  # noqa: E402
FLOAT = ["uni_full_clip_tm", "uni_full_clip_bm", "uni_plain_noclip_tm", "uni_ln_clip_bm",
         "uni_projbias_clip_tm", "uni_plain_relu_tm", "bidi_full_merge_bm", "bidi_peephole_split_tm",
         "keras_bidi_classifier"]
HYBRID = ["uni_full_clip_tm_hybrid", "uni_full_clip_bm_hybrid", "uni_peephole_clip_tm_hybrid"]


def _err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, f"shape {a.shape} vs {b.shape}"
    return float(np.max(np.abs(a - b)))


def _feeds(path, rng):
    return {d["name"]: rng.standard_normal(d["shape"]).astype(np.float32)
            for d in TfliteSession(path).it.get_input_details()}


@pytest.mark.parametrize("name", FLOAT)
def test_runtime_float_matches_tflite(tmp_path, rng, tol, name):
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(fx.build(name, rng).data)
    feeds = _feeds(path, rng)
    got = Model(convert(path)).run(feeds)
    want = run_tflite(path, feeds)
    assert max(_err(got[k], want[k]) for k in want) <= tol["float32"]


@pytest.mark.parametrize("name", HYBRID)
def test_runtime_hybrid(tmp_path, rng, tol, name):
    """int8 weights: the runtime equals the reference (same int8 model) to float32 rounding,
    so it inherits the reference's derived bound against TFLite's hybrid kernel."""
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(fx.build(name, rng).data)
    g = convert(path)
    feeds = _feeds(path, rng)
    got = Model(g).run(feeds)["y"]
    ref = reference.run(g, feeds)["y"]
    want = run_tflite(path, feeds)["y"]
    assert _err(got, ref) <= tol["float32"]
    assert np.all(np.abs(got - want) <= np.abs(ref - want) + tol["float32"])


@pytest.mark.parametrize("name", ["uni_full_clip_tm", "uni_full_clip_bm", "uni_full_clip_tm_hybrid",
                                  "uni_full_clip_tm_hybrid_asym"])
def test_stream_matches_tflite_invokes(tmp_path, rng, tol, name):
    """Chunks of 3 steps: TFLite invoke() after invoke() (state in variable tensors) vs
    edgeseq Stream.push after push, chunk by chunk (hybrid files: with TFLite's own int8
    activations, symmetric or with zero points, by default)."""
    f = fx.build(name, rng)
    s = fx.replace(f.spec, n_time=3)
    path = tmp_path / "chunk.tflite"
    path.write_bytes(fx.unidirectional_lstm(s, f.weights))
    sess = TfliteSession(path)
    stream = Model(convert(path)).stream()
    hybrid = bool(s.hybrid)
    chunks = [rng.standard_normal(fx._x_shape(s)).astype(np.float32) for _ in range(4)]
    outs_tfl, outs_es = [], []
    for x in chunks:
        outs_tfl.append(sess.run({"x": x})["y"])
        outs_es.append(stream.push({"x": x})["y"])
        assert _err(outs_es[-1], outs_tfl[-1]) <= tol["float32"]
    axis = 0 if s.time_major else 1
    if hybrid:
        # the stream equals one whole run of the same int8 model, and stays within what the
        # whole run differs from TFLite's hybrid kernel
        g = convert(path)
        whole = reference.run(g, {"x": np.concatenate(chunks, axis)})["y"]
        es, tfl = np.concatenate(outs_es, axis), np.concatenate(outs_tfl, axis)
        assert _err(es, whole) <= tol["float32"]
        assert np.all(np.abs(es - tfl) <= np.abs(whole - tfl) + tol["float32"])


@pytest.mark.parametrize("source", ["uni_full_clip_tm_hybrid_asym", "keras_lstm40_hybrid"])
def test_runtime_asymmetric_hybrid_equals_tflite(tmp_path, rng, tol, source):
    """asymmetric_quantize_inputs (a zero point per row; what TF's dynamic-range quantiser
    writes: keras_lstm40_hybrid is its file): converted with int8_asymmetric activations by
    default, the runtime equals the TFLite interpreter to float32 rounding (measured
    3e-8 / 1.5e-7), where int16 activations are 1.4e-3 / 2.2e-3 off."""
    if source.startswith("keras"):
        path = Path(__file__).resolve().parents[1] / "fixtures" / "tflite" / f"{source}.tflite"
    else:
        path = tmp_path / f"{source}.tflite"
        path.write_bytes(fx.build(source, rng).data)
    g = convert(path)
    assert g.metadata[reference.INT8_ACTIVATIONS] == reference.INT8_ASYMMETRIC
    feeds = _feeds(path, rng)
    want = run_tflite(path, feeds)
    model = Model(g)
    assert "int8 activations with zero points" in model.describe()
    got = model.run(feeds)
    assert max(_err(got[k], want[k]) for k in want) <= tol["float32"]
    got16 = Model(convert(path, activations="int16")).run(feeds)
    assert max(_err(got16[k], want[k]) for k in want) > 1e-4


def test_stream_step_op(tmp_path, rng, tol):
    """LSTM (full kernel, one step per invoke, state in variable tensors) against Stream.push
    of one step at a time. The converted step graph itself takes x [N, I] with no time axis,
    which the runtime's Stream cannot carry state over (it needs a time axis in the input), so
    the same cell is streamed through its one-step UNIDIRECTIONAL_SEQUENCE_LSTM twin."""
    f = fx.build("step_full_clip_tm", rng)
    path, twin = tmp_path / "step.tflite", tmp_path / "twin.tflite"
    path.write_bytes(f.data)
    twin.write_bytes(fx.unidirectional_lstm(fx.replace(f.spec, n_time=1), f.weights))
    sess = TfliteSession(path)
    first = rng.standard_normal((f.spec.n_batch, f.spec.n_input)).astype(np.float32)
    # the step graph runs (one step from zero state) in the runtime as well
    assert _err(Model(convert(path)).run({"x": first})["y"], run_tflite(path, {"x": first})["y"]) \
        <= tol["float32"]
    stream = Model(convert(twin)).stream()
    for _ in range(5):
        x = rng.standard_normal((f.spec.n_batch, f.spec.n_input)).astype(np.float32)
        want = sess.run({"x": x})["y"]
        assert _err(stream.push({"x": x[None]})["y"][0], want) <= tol["float32"]


@pytest.mark.parametrize("name", ["stacked_classifier", "stacked_classifier_hybrid"])
def test_stream_stacked_classifier(tmp_path, rng, tol, name):
    """Two stacked LSTMs (the second the full Android-NN cell) + per-step FULLY_CONNECTED +
    SOFTMAX(beta=2): chunks pushed through a Stream equal TFLite's invoke() after invoke()
    (float); for hybrid int8 the stream equals one whole run of the same int8 model."""
    f = fx.build(name, rng)
    s1, s2 = fx.stacked_specs(n_time=2, hybrid=f.spec.hybrid)
    chunk_model = tmp_path / "chunk.tflite"
    chunk_model.write_bytes(fx.stacked(s1, f.weights["l1"], s2, f.weights["l2"], rng))
    g = convert(chunk_model)
    sess, stream = TfliteSession(chunk_model), Model(g).stream()
    chunks = [rng.standard_normal(fx._x_shape(s1)).astype(np.float32) for _ in range(4)]
    ours = []
    for x in chunks:
        want = sess.run({"x": x})["probs"]
        ours.append(stream.push({"x": x})["probs"])
        if not s1.hybrid:
            assert _err(ours[-1], want) <= tol["float32"]
    whole = reference.run(g, {"x": np.concatenate(chunks, 0)})["probs"]
    assert _err(np.concatenate(ours, 0), whole) <= tol["float32"]


def test_artifact_round_trip_hybrid(tmp_path, rng, tol):
    """A converted hybrid model (int8 weights + '.scale' constants) survives .eseq save/load
    and runs from the memory-mapped artifact like the in-memory graph."""
    import edgeseq
    from edgeseq import artifact
    path = tmp_path / "full.tflite"
    path.write_bytes(fx.build("uni_full_clip_bm_hybrid", rng).data)
    g = convert(path)
    art = artifact.save(g, tmp_path / "full.eseq", source=path)
    x = rng.standard_normal((2, 9, 5)).astype(np.float32)
    got = edgeseq.load(art).run({"x": x})["y"]
    assert _err(got, reference.run(g, {"x": x})["y"]) <= tol["float32"]
