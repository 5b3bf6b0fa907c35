"""Real models that no issue names, end to end (convert -> .eseq save -> edgeseq.load -> run /
stream) against their own runtime: silero-vad's fp16 and opset-15 ONNX variants against
onnxruntime, and PyTorch architectures built here (DeepSpeech-like Conv1d + bidirectional GRU
+ Linear; an LSTMP keyword spotter; a 3-layer bidirectional batch-first GRU) against PyTorch."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import edgeseq
from edgeseq import artifact
from edgeseq.peers import run_peer

import silero_vad  # noqa: E402 - test dependency: pip install --no-deps silero-vad==6.2.3
torch = pytest.importorskip("torch")  # the [torch] extra; the suite installs it

DATA = Path(silero_vad.__file__).parent / "data"
_TOOL = Path(__file__).resolve().parents[2] / "tools" / "silero_frames.py"


def _frames() -> np.ndarray:
    spec = importlib.util.spec_from_file_location("silero_frames", _TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.speech_like_frames()


def _max_abs(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, f"shape {a.shape} vs {b.shape}"
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def _through_artifact(graph, tmp_path: Path):
    return edgeseq.load(artifact.save(graph, tmp_path / "m.eseq"))


# silero_vad_half.onnx (the "half" export) and the opset-15 export both carry If nodes on the
# sample rate and on the input dims: they convert with sr fixed and input/state shapes fixed.
@pytest.mark.parametrize("fname,fix,feed_extra", [
    ("silero_vad_half.onnx", {}, {}),
    ("silero_vad_16k_op15.onnx", {"sr": 16000}, {"sr": np.array(16000, np.int64)}),
])
def test_silero_variants_stream_like_onnxruntime(fname, fix, feed_extra, tmp_path, tol):
    from edgeseq.converters.onnx import convert
    path = DATA / fname
    graph = convert(path, fix=fix, shapes={"input": (1, 576), "state": (2, 1, 128)})
    model = _through_artifact(graph, tmp_path)
    frames = _frames()[:60]
    ours = theirs = np.zeros((2, 1, 128), np.float32)
    got, want = [], []
    for f in frames:
        w = run_peer(path, {"input": f[None], "state": theirs, **feed_extra})
        g = model.run({"input": f[None], "state": ours})
        theirs, ours = w["stateN"].astype(np.float32), g["stateN"]
        want.append(float(w["output"].ravel()[0]))
        got.append(float(g["output"].ravel()[0]))
    want, got = np.array(want), np.array(got)
    assert want.max() > 0.9 and want.min() < 0.1, "audio does not exercise the detector"
    err = float(np.max(np.abs(got - want)))
    assert err <= tol["silero_prob"], f"{fname}: max |prob diff| {err:.2e}"
    assert np.array_equal(got > 0.5, want > 0.5)


class DeepSpeechLike(torch.nn.Module):
    """Conv1d front end over features, bidirectional GRU, per-frame Linear + log_softmax."""

    def __init__(self, n_feat=13, hidden=17, n_out=29):
        super().__init__()
        self.conv = torch.nn.Conv1d(n_feat, 32, kernel_size=5, padding=2)
        self.gru = torch.nn.GRU(32, hidden, bidirectional=True)
        self.fc = torch.nn.Linear(2 * hidden, n_out)

    def forward(self, x):                       # x [T, N, F]
        z = torch.relu(self.conv(x.permute(1, 2, 0)))          # [N, 32, T]
        y, _ = self.gru(z.permute(2, 0, 1))                    # [T, N, 2H]
        return torch.log_softmax(self.fc(y), dim=-1)


class LstmpKws(torch.nn.Module):
    """Keyword spotter: 2-layer LSTMP (proj_size < hidden), classifier on the last frame."""

    def __init__(self, n_feat=40, hidden=33, proj=9, n_out=12):
        super().__init__()
        self.lstm = torch.nn.LSTM(n_feat, hidden, num_layers=2, proj_size=proj, batch_first=True)
        self.fc = torch.nn.Linear(proj, n_out)

    def forward(self, x):                       # x [N, T, F]
        y, _ = self.lstm(x)
        return self.fc(y[:, -1])


class DeepGru(torch.nn.Module):
    def __init__(self, n_feat=3, hidden=8):
        super().__init__()
        self.gru = torch.nn.GRU(n_feat, hidden, num_layers=3, batch_first=True,
                                bidirectional=True)

    def forward(self, x):
        y, h = self.gru(x)
        return y, h


class PackedBidiLstmp(torch.nn.Module):
    """2-layer bidirectional batch-first LSTMP over unsorted packed lengths, all states out."""

    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.LSTM(5, 7, num_layers=2, proj_size=3, bidirectional=True,
                                 batch_first=True)

    def forward(self, x, lens):
        p = torch.nn.utils.rnn.pack_padded_sequence(x, lens, batch_first=True,
                                                    enforce_sorted=False)
        y, (h, c) = self.rnn(p)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=True,
                                                      total_length=x.shape[1])
        return y, h, c


def _packed_args(t):
    return torch.randn(3, t, 5), torch.tensor([t, max(1, t // 3), 1])


@pytest.mark.parametrize("make,args", [
    (DeepSpeechLike, lambda t: (torch.randn(t, 2, 13),)),
    (LstmpKws, lambda t: (torch.randn(3, t, 40),)),
    (DeepGru, lambda t: (torch.randn(2, t, 3),)),
    (PackedBidiLstmp, _packed_args),
], ids=["deepspeech_like", "lstmp_kws", "gru_3layer_bidi_bf", "packed_bidi_lstmp"])
def test_torch_architectures_match_pytorch(make, args, tmp_path, tol):
    from edgeseq.converters.torch import from_module
    torch.manual_seed(0)
    module = make().eval()
    graph = from_module(module, args(11))
    model = _through_artifact(graph, tmp_path)
    for t in (11, 26):   # the traced length and a held-out one
        a = args(t)
        with torch.no_grad():
            want = module(*a)
        want = [w.numpy() for w in (want if isinstance(want, tuple) else (want,))]
        feeds = {v.name: x.numpy().astype(v.dtype) for v, x in zip(graph.inputs, a)}
        got = model.run(feeds)
        got = [got[o.name] for o in graph.outputs]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert _max_abs(g, w) <= tol["float32"]
