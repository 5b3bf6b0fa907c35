"""silero-vad's shipped ONNX detectors (Conv front end + LSTM 128) convert and match
onnxruntime on audio-like input: synthesised vowels (glottal pulse train through formant
resonators, with intonation) separated by silence, plus a little noise, at 16 kHz. The model
reads frames of 576 samples: 512 new samples with 64 samples of context from the previous
frame. The input is checked to be meaningful: the detector must say speech (> 0.9) in the
vowels and silence (< 0.1) in the gaps, so a conversion that agrees only on near-constant
outputs cannot pass."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edgeseq import reference
from edgeseq.converters.onnx import convert
from edgeseq.peers import run_peer

import silero_vad  # noqa: E402 - test dependency: pip install --no-deps silero-vad==6.2.3
DATA = Path(silero_vad.__file__).parent / "data"
_TOOL = Path(__file__).resolve().parents[2] / "tools" / "silero_frames.py"


def _tool():
    spec = importlib.util.spec_from_file_location("silero_frames", _TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return _tool().speech_like_frames()


def _assert_meaningful(probs: np.ndarray) -> None:
    assert probs.max() > 0.9 and probs.min() < 0.1, \
        f"test audio does not exercise the detector: probs in [{probs.min():.2f}, {probs.max():.2f}]"


def test_sequence_model_matches_onnxruntime(frames, tol):
    path = DATA / "silero_vad_16k_sequence.onnx"
    graph = convert(path)
    assert [n.op.value for n in graph.recurrent_nodes()] == ["LSTM"]
    zeros = np.zeros((1, 1, 128), np.float32)
    feeds = {"input": frames, "h": zeros, "c": zeros}
    want = run_peer(path, feeds)
    _assert_meaningful(want["speech_probs"])
    from edgeseq.runtime import Model
    for engine, got in (("reference", reference.run(graph, feeds)),
                        ("runtime", Model(graph).run(feeds))):
        err = float(np.max(np.abs(got["speech_probs"] - want["speech_probs"])))
        assert err <= tol["silero_prob"], (engine, err)
        for k in ("hn", "cn"):
            assert float(np.max(np.abs(got[k] - want[k]))) <= 1e-4, (engine, k)


def test_sequence_model_in_two_halves_carries_state(frames, tol):
    """The h/c inputs are honoured: two halves with carried state equal ORT on the whole."""
    path = DATA / "silero_vad_16k_sequence.onnx"
    graph = convert(path)
    zeros = np.zeros((1, 1, 128), np.float32)
    want = run_peer(path, {"input": frames, "h": zeros, "c": zeros})["speech_probs"]
    half = len(frames) // 2
    a = reference.run(graph, {"input": frames[:half], "h": zeros, "c": zeros})
    b = reference.run(graph, {"input": frames[half:], "h": a["hn"].astype(np.float32),
                              "c": a["cn"].astype(np.float32)})
    got = np.concatenate([a["speech_probs"], b["speech_probs"]])
    assert float(np.max(np.abs(got - want))) <= tol["silero_prob"]


def _stream_and_compare(path: Path, graph, frames: np.ndarray, peer_extra: dict, tol) -> None:
    """Frame by frame with a [2, 1, 128] state tensor carried on both sides."""
    ours = theirs = np.zeros((2, 1, 128), np.float32)
    got, want = [], []
    for f in frames:
        w = run_peer(path, {"input": f[None], "state": theirs, **peer_extra})
        g = reference.run(graph, {"input": f[None], "state": ours})
        theirs, ours = w["stateN"], g["stateN"].astype(np.float32)
        want.append(float(w["output"].ravel()[0]))
        got.append(float(g["output"].ravel()[0]))
    want, got = np.array(want), np.array(got)
    _assert_meaningful(want)
    assert float(np.max(np.abs(got - want))) <= tol["silero_prob"]


def test_openvino_model_streams_and_matches_onnxruntime(frames, tol):
    """The static [1, 576] model with one state tensor (its LSTM weights are sliced and
    concatenated in the graph: folded at conversion)."""
    path = DATA / "silero_vad_openvino_16k.onnx"
    _stream_and_compare(path, convert(path), frames, {}, tol)


@pytest.mark.parametrize("fname,fix,shapes", [
    # nested If on the sample rate: fixing sr folds the outer If to its 16 kHz branch; the
    # inner Ifs test batch size / chunk length, so those dims are fixed too
    ("silero_vad.onnx", {"sr": 16000}, {"input": (1, 576), "state": (2, 1, 128)}),
    # the LSTM decomposed into Gemm/Split/Sigmoid/Tanh, If on sr only
    ("silero_vad_op18_ifless.onnx", {"sr": 16000}, {}),
])
def test_models_with_if_convert_with_fixed_sample_rate(fname, fix, shapes, frames, tol):
    path = DATA / fname
    graph = convert(path, fix=fix, shapes=shapes)
    assert [v.name for v in graph.inputs] == ["input", "state"]
    _stream_and_compare(path, graph, frames[:48], {"sr": np.array(16000, np.int64)}, tol)


def test_if_on_an_unfixed_input_is_reported():
    """The error names the If and the input whose value (sr) or dims (input) must be fixed."""
    from edgeseq.errors import UnsupportedModelError
    with pytest.raises(UnsupportedModelError) as e:
        convert(DATA / "silero_vad.onnx")
    assert "'If_0' (If)" in str(e.value) and "fix the value of sr with --fix" in str(e.value)
    assert e.value.needs_fix == ["sr"]
    with pytest.raises(UnsupportedModelError) as e:
        convert(DATA / "silero_vad.onnx", fix={"sr": 16000})
    assert "fix the dims of input with --shape" in str(e.value)
