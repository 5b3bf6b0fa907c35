"""The PyTorch part of the real-exports corpus: torchaudio's recurrent models and modules users
write, each converted three ways (from_module, ONNX export -> convert, .pt2 -> convert) and
compared with PyTorch on the same inputs.

    python tools/real_exports_torch.py            # ~3 min; prints the markdown table
    python tools/real_exports_torch.py --only crnn

torchaudio's model sources (DeepSpeech, Wav2Letter, WaveRNN, the Tacotron2 encoder, the RNN-T
predictor and the Emformer RNN-T) import nothing of torchaudio's C extension: the pinned wheel
is downloaded once into the cache (pip download --no-deps, no install) and the six files are
loaded from it as a private package. Weights are random (seeded), sizes small; torch is the
project's test extra. Acceptance as for the TensorFlow corpus (docs/real_exports.md): float
outputs within 1e-5 * max(1, max|y|) of PyTorch, or a refusal naming the op and node.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

TORCHAUDIO = "2.11.0"
FILES = ("deepspeech", "wav2letter", "wavernn", "tacotron2", "emformer", "rnnt")
CACHE = Path(os.environ.get("EDGESEQ_CACHE", Path.home() / ".cache" / "edgeseq")) / "torchaudio"
TOL = 1e-5


def torchaudio_sources() -> Path:
    """The six model sources of the pinned torchaudio wheel, as package `ta_models`."""
    pkg = CACHE / TORCHAUDIO / "ta_models"
    if (pkg / "rnnt.py").exists():
        return pkg
    pkg.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", f"torchaudio=={TORCHAUDIO}",
                        "--no-deps", "-q", "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("torchaudio-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            for name in FILES:
                src = z.read(f"torchaudio/models/{name}.py").decode()
                # the one cross-import: rnnt builds on emformer
                src = src.replace("from torchaudio.models import Emformer",
                                  "from .emformer import Emformer")
                (pkg / f"{name}.py").write_text(src)
    (pkg / "__init__.py").write_text("")
    return pkg


def _package(pkg: Path):
    spec = importlib.util.spec_from_file_location("ta_models", pkg / "__init__.py",
                                                  submodule_search_locations=[str(pkg)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ta_models"] = mod
    spec.loader.exec_module(mod)
    return {name: importlib.import_module(f"ta_models.{name}") for name in FILES}


def models(torch) -> dict:
    """name -> (module, example inputs tuple, ONNX input names, time axes {input: axis})."""
    from torch import nn
    ta = _package(torchaudio_sources())
    torch.manual_seed(0)            # PyTorch's default initialisation, seeded
    g = torch.Generator().manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=g)

    class Predictor(nn.Module):      # RNN-T prediction network: targets -> (output, lengths)
        def __init__(self):
            super().__init__()
            self.p = ta["rnnt"]._Predictor(20, 12, 8, 2, 16, True, 1e-5, 0.0)

        def forward(self, tokens, lengths):
            out, lens, _ = self.p(tokens, lengths)
            return out, lens

    class TacotronEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.e = ta["tacotron2"]._Encoder(16, 3, 5)

        def forward(self, x, lengths):
            return self.e(x, lengths)

    class CRNN(nn.Module):           # OCR: Conv2d+BN+ReLU+MaxPool2d x2 -> BiLSTM -> Linear
        def __init__(self):
            super().__init__()
            self.cnn = nn.Sequential(
                nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16),
                nn.ReLU(inplace=True), nn.MaxPool2d((2, 1)))
            self.rnn = nn.LSTM(32, 16, bidirectional=True)
            self.fc = nn.Linear(32, 11)

        def forward(self, x):                       # x [N, 1, 8, W]
            f = self.cnn(x)                         # [N, 16, 2, W/2]
            n, c, h, w = f.shape
            f = f.reshape(n, c * h, w).permute(2, 0, 1)
            y, _ = self.rnn(f)
            return self.fc(y).log_softmax(-1)

    class CellLoop(nn.Module):       # an LSTMCell stepped in Python
        def __init__(self):
            super().__init__()
            self.cell = nn.LSTMCell(6, 9)
            self.out = nn.Linear(9, 4)

        def forward(self, x):                       # x [T, N, 6]
            h = x.new_zeros(x.shape[1], 9)
            c = x.new_zeros(x.shape[1], 9)
            ys = []
            for t in range(x.shape[0]):
                h, c = self.cell(x[t], (h, c))
                ys.append(self.out(h))
            return torch.stack(ys)

    class GruTagger(nn.Module):      # a streaming-style tagger: GRU + Linear, batch first
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(7, 12, num_layers=2, batch_first=True)
            self.fc = nn.Linear(12, 5)

        def forward(self, x):
            return self.fc(torch.relu(self.gru(x)[0]))

    wavernn = ta["wavernn"].WaveRNN(upsample_scales=[2, 2], n_classes=16, hop_length=4,
                                    n_res_block=1, n_rnn=16, n_fc=16, kernel_size=5, n_freq=8,
                                    n_hidden=8, n_output=8)
    spec_t = 12
    table = {
        "deepspeech": (ta["deepspeech"].DeepSpeech(13, n_hidden=32, n_class=10),
                       (rnd(1, 1, 40, 13),), ["x"], {"x": 2}),
        "wav2letter": (ta["wav2letter"].Wav2Letter(10, "mfcc", 13), (rnd(1, 13, 40),), ["x"],
                       {"x": 2}),
        "wavernn": (wavernn, (rnd(1, 1, (spec_t - 5 + 1) * 4), rnd(1, 1, 8, spec_t)),
                    ["waveform", "specgram"], {}),
        "tacotron2_encoder": (TacotronEncoder(), (rnd(2, 16, 30), torch.tensor([30, 21])),
                              ["x", "lengths"], {"x": 2}),
        "rnnt_predictor": (Predictor(), (torch.randint(0, 20, (2, 9), generator=g),
                                         torch.tensor([9, 6])), ["tokens", "lengths"],
                           {"tokens": 1}),
        "crnn_ocr": (CRNN(), (rnd(1, 1, 8, 24),), ["x"], {"x": 3}),
        "lstmcell_loop": (CellLoop(), (rnd(10, 2, 6),), ["x"], {"x": 0}),
        "gru_tagger": (GruTagger(), (rnd(1, 20, 7),), ["x"], {"x": 1}),
    }
    for m, *_ in table.values():
        for b in m.modules():        # running statistics a trained BatchNorm would have
            if isinstance(b, (nn.BatchNorm1d, nn.BatchNorm2d)):
                b.running_mean.copy_(torch.randn(b.num_features, generator=g) * 0.1)
                b.running_var.copy_(torch.rand(b.num_features, generator=g) + 0.5)
        m.eval()
    return table


def _compare(graph, args, want) -> float:
    from edgeseq.runtime import Model
    feeds = {v.name: a.numpy() for v, a in zip(graph.inputs, args)}
    out = Model(graph).run(feeds)
    got = [out[v.name] for v in graph.outputs]
    errs, free = [], list(range(len(got)))
    for w in want:
        if not np.issubdtype(w.dtype, np.floating):
            continue
        k = next((k for k in free if np.shape(got[k]) == w.shape), None)
        if k is None:
            return float("inf")
        free.remove(k)
        # relative to the output's scale: deep random stacks reach large values
        errs.append(float(np.max(np.abs(got[k] - w)) / max(1.0, float(np.max(np.abs(w)))))
                    if w.size else 0.0)
    return max(errs) if errs else float("inf")


def _paths(torch, name, module, args, names, taxes, tmp: Path) -> dict:
    from edgeseq.converters.onnx import convert as convert_onnx
    from edgeseq.converters.torch import convert_exported, from_module

    def from_mod():
        return from_module(module, args, dynamic_time=bool(taxes),
                           time_axis=taxes or None)

    def onnx_path():
        f = tmp / f"{name}.onnx"
        torch.onnx.export(module, args, str(f), input_names=names, opset_version=17,
                          dynamo=False, dynamic_axes={k: {a: "T"} for k, a in taxes.items()})
        return convert_onnx(f)

    def pt2_path():
        f = tmp / f"{name}.pt2"
        torch.export.save(torch.export.export(module, args), str(f))
        return convert_exported(f, dynamic_time=bool(taxes))
    return {"from_module": from_mod, "onnx": onnx_path, ".pt2": pt2_path}


def evaluate(only: str = "") -> list[dict]:
    import torch
    from edgeseq.converters.torch import from_module
    from edgeseq.errors import EdgeseqError
    rows = []
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        for name, (module, args, names, taxes) in models(torch).items():
            if only not in name:
                continue
            out = module(*args)
            want = [t.numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]
            for path, make in _paths(torch, name, module, args, names, taxes, Path(tmp)).items():
                row = {"model": name, "path": path}
                try:
                    graph = make()
                except EdgeseqError as e:
                    if path != "from_module" or not _fixed_length_advised(e):
                        row["result"] = "refused: " + str(e).splitlines()[0][:150]
                        rows.append(row)
                        continue
                    # as the refusal advises (the model's graph depends on the length)
                    graph = from_module(module, args, dynamic_time=False)
                    row["path"] = "from_module, fixed length"
                except Exception as e:   # noqa: BLE001 - the exporter failed: not counted
                    row["result"] = f"export failed: {type(e).__name__}: {str(e)[:100]}"
                    rows.append(row)
                    continue
                try:
                    err = _compare(graph, args, want)
                    row["result"] = "match" if err <= TOL else "WRONG"
                    row["err"] = err
                except EdgeseqError as e:
                    row["result"] = "run refused: " + str(e).splitlines()[0][:150]
                rows.append(row)
    return rows


def _fixed_length_advised(e) -> bool:
    msg = str(e)
    return "dynamic_time=False" in msg or "holds for one sequence length" in msg


def table(rows: list[dict]) -> str:
    lines = ["| model | path | result | max err / max(1, max abs y) vs PyTorch |",
             "|---|---|---|---|"]
    for r in rows:
        err = f"{r['err']:.1e}" if "err" in r else ""
        lines.append(f"| {r['model']} | {r['path']} | {r['result'].replace('|', '/')} | {err} |")
    counted = [r for r in rows if not r["result"].startswith("export failed")]
    ok = sum(r["result"] == "match" for r in counted)
    lines.append(f"\n{len(rows)} conversions, {len(rows) - len(counted)} not written by the "
                 f"exporter; of the {len(counted)} others {ok} match, "
                 f"{sum(r['result'] == 'WRONG' for r in counted)} wrong, "
                 f"{sum('refused' in r['result'] for r in counted)} refused")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="models whose name contains this")
    a = ap.parse_args(argv)
    rows = evaluate(a.only)
    print(table(rows))
    return 1 if any(r["result"] == "WRONG" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
