"""Speech-like test audio for silero-vad, as the model's [n_frames, 576] input frames.

    python tools/silero_frames.py OUT_DIR     # writes frames.npy, h.npy, c.npy, state.npy

Synthesised vowels (glottal pulse train through three formant resonators, with intonation)
separated by silence, plus a little noise, at 16 kHz. Each frame holds 512 new samples and 64
samples of context from the previous frame, as silero's 16 kHz models expect.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

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



def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    frames = speech_like_frames()
    np.save(out / "frames.npy", frames)
    np.save(out / "h.npy", np.zeros((1, 1, 128), np.float32))
    np.save(out / "c.npy", np.zeros((1, 1, 128), np.float32))
    np.save(out / "state.npy", np.zeros((2, 1, 128), np.float32))
    print(f"{out / 'frames.npy'}: {frames.shape} {frames.dtype}")


if __name__ == "__main__":
    main()
