"""silero-vad compiled ahead of time (edgeseq compile --target native): the native code on
speech-like frames matches the float64 reference and the JIT runtime at odd lengths, and
frame-by-frame runs carrying h/c through the inputs equal one whole run."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import edgeseq
from edgeseq import artifact, reference
from edgeseq.errors import InputError

silero_vad = pytest.importorskip("silero_vad")   # test dependency (Makefile installs it)
ONNX = Path(silero_vad.__file__).parent / "data" / "silero_vad_16k_sequence.onnx"
_TOOL = Path(__file__).resolve().parents[2] / "tools" / "silero_frames.py"
ZERO = np.zeros((1, 1, 128), np.float32)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    spec = importlib.util.spec_from_file_location("silero_frames", _TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.speech_like_frames()


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    from edgeseq.converters.onnx import convert
    d = tmp_path_factory.mktemp("silero_aot")
    plain = artifact.save(convert(ONNX), d / "silero.eseq")
    out = edgeseq.compile_native(plain, d / "silero_native.eseq", ["native"])
    m = edgeseq.load(out, native_code=True)
    assert type(m).__name__ == "NativeModel", m.describe()
    return m


@pytest.mark.parametrize("start, length", [(0, 1), (40, 7), (3, 60)])
def test_native_matches_reference_and_jit(native, frames, start, length):
    from edgeseq.runtime import Model
    x = frames[start:start + length]
    feeds = {"input": x, "h": ZERO, "c": ZERO}
    got = native.run(feeds)
    want = reference.run(native.graph, {k: v.astype(np.float64) for k, v in feeds.items()})
    jit = Model(native.graph, codegen=True).run(feeds)
    for name in ("speech_probs", "hn", "cn"):
        assert got[name].shape == jit[name].shape
        assert np.abs(got[name] - want[name]).max() <= 1e-5 * max(1, np.abs(want[name]).max())
        assert np.abs(got[name] - jit[name]).max() <= 1e-6 * max(1, np.abs(jit[name]).max())
    if length == 60:
        assert got["speech_probs"].max() > 0.9 and got["speech_probs"].min() < 0.1


def test_frame_by_frame_equals_one_run(native, frames):
    x = frames[20:33]
    whole = native.run({"input": x, "h": ZERO, "c": ZERO})
    h, c, probs = ZERO, ZERO, []
    for k in range(len(x)):
        out = native.run({"input": x[k:k + 1], "h": h, "c": c})
        h, c = out["hn"], out["cn"]
        probs.append(out["speech_probs"])
    np.testing.assert_allclose(np.concatenate(probs), whole["speech_probs"], atol=1e-6)
    np.testing.assert_allclose(h, whole["hn"], atol=1e-6)


def test_wrong_frame_size_is_refused_by_name(native, frames):
    with pytest.raises(InputError, match="input 'input'"):
        native.run({"input": frames[:2, :575], "h": ZERO, "c": ZERO})


def test_stream_in_chunks_equals_one_run_and_the_jit_stream(native, frames):
    from edgeseq.runtime import Model
    x = frames[5:45]
    whole = native.run({"input": x, "h": ZERO, "c": ZERO})
    s, js = native.stream(), Model(native.graph, codegen=True).stream()
    got, jit = [], []
    for chunk in np.array_split(x, 7):
        got.append(s.push({"input": chunk})["speech_probs"])
        jit.append(js.push({"input": chunk})["speech_probs"])
    np.testing.assert_allclose(np.concatenate(got), whole["speech_probs"], atol=1e-6)
    np.testing.assert_allclose(np.concatenate(got), np.concatenate(jit), atol=1e-6)
    np.testing.assert_allclose(s.state["/recurrent/LSTM"]["c"], whole["cn"], atol=1e-6)
    s.reset()
    first = s.push({"input": x[:3]})["speech_probs"]
    np.testing.assert_allclose(first, whole["speech_probs"][:3], atol=1e-6)
