"""silero-vad's shipped ONNX detectors (Conv front end + LSTM 128) convert and match
onnxruntime on audio-like input: synthesised vowels (glottal pulse train through formant
resonators, with intonation) separated by silence, plus a little noise, at 16 kHz. The model
reads frames of 576 samples: 512 new samples with 64 samples of context from the previous
frame. The input is checked to be meaningful: the detector must say speech (> 0.9) in the
vowels and silence (< 0.1) in the gaps, so a conversion that agrees only on near-constant
outputs cannot pass."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeseq import reference
from edgeseq.converters.onnx import convert
from edgeseq.peers import run_peer

silero_vad = pytest.importorskip("silero_vad", reason="pip install --no-deps silero-vad==6.2.3")
DATA = Path(silero_vad.__file__).parent / "data"
SR, HOP, CONTEXT = 16000, 512, 64


def _resonator_ir(freq: float, bw: float, n: int = 400) -> np.ndarray:
    r, th = np.exp(-np.pi * bw / SR), 2 * np.pi * freq / SR
    a1, a2 = -2 * r * np.cos(th), r * r
    y = np.zeros(n)
    y[0] = 1.0
    y[1] = -a1 * y[0]
    for i in range(2, n):
        y[i] = -a1 * y[i - 1] - a2 * y[i - 2]
    return y


def _vowel(dur: float, f0: float, formants) -> np.ndarray:
    n = int(dur * SR)
    t = np.arange(n) / SR
    phase = np.cumsum(f0 * (1 + 0.08 * np.sin(2 * np.pi * 3 * t))) / SR
    pulses = (np.diff(np.floor(phase), prepend=0) > 0).astype(float)
    src = np.convolve(pulses, np.exp(-np.arange(40) / 8.0))[:n]
    out = sum(g * np.convolve(src, _resonator_ir(f, b))[:n] for f, b, g in formants)
    env = np.minimum(1, np.minimum(t / 0.05, (dur - t) / 0.05))
    return out / np.abs(out).max() * 0.5 * env


def speech_like_frames(seed: int = 0) -> np.ndarray:
    """[n_frames, 576] float32 frames of vowels and silence."""
    a = [(700, 110, 1.0), (1220, 120, 0.5), (2600, 160, 0.25)]
    i = [(300, 80, 1.0), (2300, 120, 0.4), (3000, 200, 0.2)]
    u = [(350, 80, 1.0), (900, 100, 0.4), (2300, 150, 0.1)]
    sil = lambda s: np.zeros(int(s * SR))  # noqa: E731
    audio = np.concatenate([sil(0.5), _vowel(0.4, 120, a), _vowel(0.3, 140, i), sil(0.3),
                            _vowel(0.5, 110, u), _vowel(0.4, 130, a), sil(0.6)])
    audio = (audio + 0.003 * np.random.default_rng(seed).standard_normal(audio.size))
    padded = np.concatenate([np.zeros(CONTEXT), audio]).astype(np.float32)
    n = audio.size // HOP
    return np.stack([padded[k * HOP:k * HOP + HOP + CONTEXT] for k in range(n)])


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return speech_like_frames()


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
    got = reference.run(graph, feeds)
    _assert_meaningful(want["speech_probs"])
    err = float(np.max(np.abs(got["speech_probs"] - want["speech_probs"])))
    assert err <= tol["silero_prob"], err
    for k in ("hn", "cn"):
        assert float(np.max(np.abs(got[k] - want[k]))) <= 1e-4


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


def test_openvino_model_streams_and_matches_onnxruntime(frames, tol):
    """The static [1, 576] model with a [2, 1, 128] state tensor, run frame by frame."""
    path = DATA / "silero_vad_openvino_16k.onnx"
    graph = convert(path)
    ours = theirs = np.zeros((2, 1, 128), np.float32)
    got, want = [], []
    for f in frames:
        w = run_peer(path, {"input": f[None], "state": theirs})
        g = reference.run(graph, {"input": f[None], "state": ours})
        theirs, ours = w["stateN"], g["stateN"].astype(np.float32)
        want.append(float(w["output"].ravel()[0]))
        got.append(float(g["output"].ravel()[0]))
    want, got = np.array(want), np.array(got)
    _assert_meaningful(want)
    assert float(np.max(np.abs(got - want))) <= tol["silero_prob"]


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
    ours = theirs = np.zeros((2, 1, 128), np.float32)
    got, want = [], []
    for f in frames[:48]:
        w = run_peer(path, {"input": f[None], "state": theirs, "sr": np.array(16000, np.int64)})
        g = reference.run(graph, {"input": f[None], "state": ours})
        theirs, ours = w["stateN"], g["stateN"].astype(np.float32)
        want.append(float(w["output"].ravel()[0]))
        got.append(float(g["output"].ravel()[0]))
    want, got = np.array(want), np.array(got)
    _assert_meaningful(want)
    assert float(np.max(np.abs(got - want))) <= tol["silero_prob"]


def test_if_on_an_unfixed_input_is_reported():
    from edgeseq.errors import UnsupportedModelError
    with pytest.raises(UnsupportedModelError, match=r"If \(opset 16\)"):
        convert(DATA / "silero_vad.onnx")
