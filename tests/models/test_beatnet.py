"""A real checkpoint nobody here wrote: BeatNet's CRNN (Conv1d, max-pool, Linear, 2-layer LSTM
150, Linear) with the weights the `BeatNet` package ships, on its bundled test audio.

BeatNet's `model.py` needs only torch and numpy, so its `BDA` class is imported as is (the
package itself is installed with --no-deps; importing `BeatNet.BeatNet` would need madmom,
librosa and pyaudio). BeatNet computes its input features with madmom, which does not build
here, so `_features` recomputes them with numpy following madmom's LOG_SPECT pipeline
(22.05 kHz mono, 1411-sample Hann frames every 441 samples, 24-per-octave log filterbank
30 Hz-17 kHz with unit-area triangles -> 136 bands, log10(1 + x), positive first difference
stacked -> 272 features). The audio (mp3) is decoded with soundfile. The features are a close
reimplementation, not bit-identical to madmom; both sides of the comparison see the same ones.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sf = pytest.importorskip("soundfile")
beatnet_model = pytest.importorskip("BeatNet.model")

from edgeseq import reference  # noqa: E402
from edgeseq.converters.torch import from_module  # noqa: E402
from edgeseq.ops import Op  # noqa: E402
from edgeseq.runtime import Model  # noqa: E402

PKG = os.path.dirname(beatnet_model.__file__)
SR, FRAME, HOP, BANDS = 22050, 1411, 441, 24


def _resample_half(a: np.ndarray) -> np.ndarray:
    """44.1 kHz -> 22.05 kHz: windowed-sinc low-pass at 0.9 of the new Nyquist, keep every 2nd."""
    n = np.arange(-64, 65)
    fc = 0.25 * 0.9
    h = 2 * fc * np.sinc(2 * fc * n) * np.hanning(len(n))
    return np.convolve(a, h / h.sum(), mode="same")[::2]


def _log_filterbank(n_bins: int) -> np.ndarray:
    """madmom LogarithmicFilterbank(num_bands=24, fmin=30, fmax=17000, norm_filters=True)."""
    bin_f = np.fft.fftfreq(n_bins * 2, 1.0 / SR)[:n_bins]
    fref = 440.0
    k = np.arange(np.floor(np.log2(30.0 / fref) * BANDS), np.ceil(np.log2(17000.0 / fref) * BANDS))
    freqs = fref * 2.0 ** (k / BANDS)
    freqs = freqs[(freqs >= 30.0) & (freqs <= 17000.0)]
    idx = np.clip(bin_f.searchsorted(freqs), 1, n_bins - 1)
    idx -= freqs - bin_f[idx - 1] < bin_f[idx] - freqs          # nearest bin
    bins = np.unique(idx)
    fb = np.zeros((n_bins, len(bins) - 2))
    for j in range(len(bins) - 2):
        start, center, stop = bins[j:j + 3]
        if stop - start < 2:
            center, stop = start, start + 1
        tri = np.concatenate([np.linspace(0, 1, center - start, endpoint=False),
                              np.linspace(1, 0, stop - center, endpoint=False)])
        tri = tri if tri.sum() > 0 else np.eye(1, stop - start)[0]
        fb[start:stop, j] = tri / tri.sum()
    return fb


def _features(path: str) -> np.ndarray:
    audio, sr = sf.read(path, dtype="float64")
    assert sr == 2 * SR
    x = _resample_half(audio.mean(axis=1) if audio.ndim == 2 else audio)
    n_frames = -(-len(x) // HOP)
    padded = np.concatenate([np.zeros(FRAME // 2), x, np.zeros(FRAME)])
    win = np.hanning(FRAME)
    frames = np.stack([padded[i * HOP:i * HOP + FRAME] for i in range(n_frames)])
    mag = np.abs(np.fft.fft(frames * win, axis=1)[:, :FRAME >> 1])
    spec = np.log10(mag @ _log_filterbank(FRAME >> 1) + 1.0)
    sample = int(np.argmax(win > 0.5 * win.max()))          # madmom's diff_frames rule
    lag = max(1, int(round((FRAME / 2 - sample) / HOP)))
    diff = np.zeros_like(spec)
    diff[lag:] = np.maximum(spec[lag:] - spec[:-lag], 0.0)
    return np.hstack([spec, diff]).astype(np.float32)[None]    # [1, T, 272]


class Activations(torch.nn.Module):
    """BDA's forward plus its final_pred (softmax over the 3 classes), as BeatNet uses it."""

    def __init__(self, bda):
        super().__init__()
        self.bda = bda

    def forward(self, x):
        out = self.bda(x)
        return out, self.bda.final_pred(out[0])


def _bda(k: int):
    m = beatnet_model.BDA(272, 150, 2, "cpu")
    sd = torch.load(os.path.join(PKG, "models", f"model_{k}_weights.pt"), map_location="cpu")
    m.load_state_dict(sd, strict=False)
    return m.eval()


@pytest.fixture(scope="module")
def feats() -> np.ndarray:
    f = _features(os.path.join(PKG, "test_data", "808kick120bpm.mp3"))
    assert f.shape == (1, 500, 272) and np.isfinite(f).all()
    return f


@pytest.mark.parametrize("k", [1, 2, 3])
def test_beatnet_matches_pytorch_on_real_audio(k, feats, tol):
    g = from_module(Activations(_bda(k)), (torch.from_numpy(feats[:, :12]),))
    assert g.inputs[0].shape == (1, "T", 272)
    assert [n.op for n in g.nodes].count(Op.LSTM) == 2
    with torch.no_grad():        # a fresh module: BDA keeps its LSTM state between calls
        want = [t.numpy() for t in Activations(_bda(k))(torch.from_numpy(feats))]
    assert want[1].shape == (3, 500)
    for label, got in (("reference", reference.run(g, {"x": feats})),
                       ("runtime", Model(g).run({"x": feats}))):
        logits, probs = got["output_0"], got["output_1"]
        scale = float(np.max(np.abs(want[0])))
        err = float(np.max(np.abs(logits - want[0])))
        assert err <= tol["float32"] * max(1.0, scale), f"{label} logits: {err:.2e} (scale {scale:.1f})"
        assert float(np.max(np.abs(probs - want[1]))) <= tol["float32"], label


def test_beatnet_streams_frame_chunks_like_pytorch(feats, tol):
    """BeatNet's streaming mode feeds frames as they arrive with the LSTM state carried."""
    g = from_module(_bda(1), (torch.from_numpy(feats[:, :12]),))
    with torch.no_grad():
        want = _bda(1)(torch.from_numpy(feats)).numpy()
    s = Model(g).stream()
    chunks, t = [], 0
    for n in (1, 1, 30, 68, 200, 200):
        chunks.append(s.push({"data": feats[:, t:t + n]})["output"])
        t += n
    got = np.concatenate(chunks, axis=2)
    err = float(np.max(np.abs(got - want)))
    assert err <= tol["float32"] * max(1.0, float(np.max(np.abs(want)))), f"{err:.2e}"
