"""The PyTorch part of the real-exports corpus: torchaudio's recurrent models and modules users
write, each converted four ways (from_module; ONNX export by the TorchScript exporter and by
the torch.export-based one, the default since PyTorch 2.9; .pt2) and compared with PyTorch on
the same inputs; models with a time axis are also streamed.

    python tools/real_exports_torch.py            # ~20 min on 2 busy cores; the markdown table
    python tools/real_exports_torch.py --only crnn

torchaudio's model sources (DeepSpeech, Wav2Letter, WaveRNN, the Tacotron2 encoder, the RNN-T
predictor and the Emformer RNN-T) import nothing of torchaudio's C extension: the pinned wheel
is downloaded once into the cache (pip download --no-deps, no install) and the six files are
loaded from it as a private package. The Luong-attention seq2seq with greedy decoding comes
from tools/seq2seq_models.py (a `while` loop, TorchScripted to one ONNX Loop, and the
fixed-steps form torch.export can trace). Weights are random (seeded), sizes small; torch is
the project's test extra. Acceptance as for the TensorFlow corpus (docs/real_exports.md):
float outputs within 1e-5 * max(1, max|y|) of PyTorch and integer outputs (token ids, lengths)
equal, or a refusal naming the op and node. An ONNX file onnxruntime cannot run, or a module
the exporter cannot write, is listed but not counted. A refusal that advises a fixed length
(from_module) or `--shape` (ONNX) is followed, as a user would, and the row says so.
Streams: chunks of 2, 1 and the rest of the time inputs pushed through `Model.stream()` equal
the whole run (other inputs, such as lengths, with the first chunk).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

TORCHAUDIO = "2.11.0"
FILES = ("deepspeech", "wav2letter", "wavernn", "tacotron2", "emformer", "rnnt")
CACHE = Path(os.environ.get("EDGESEQ_CACHE", Path.home() / ".cache" / "edgeseq")) / "torchaudio"
TOL = 1e-5
sys.path.insert(0, str(Path(__file__).resolve().parent))     # seq2seq_models


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


@dataclass
class Case:
    """One corpus model: the module, example inputs, ONNX input names, time axes {input: axis}
    (empty: fixed length, no streaming check), and how a user writes its ONNX file when plain
    `torch.onnx.export` is not it (`onnx(module, args, path)`, e.g. TorchScript for a loop)."""
    module: Any
    args: tuple
    names: list              # the forward's parameter names (from_module's input names)
    time_axes: dict
    onnx: Callable | None = None


def models(torch) -> dict[str, Case]:
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
    # Emformer RNN-T as torchaudio builds it (emformer_rnnt_model), small dims; the whole
    # network's forward (transcriber + predictor + joiner -> joint logits, lengths, predictor
    # state) is what `export(model, (sources, source_lengths, targets, target_lengths))`
    # writes. Its attention mask is built in Python from the length: fixed length.
    emformer = ta["rnnt"].emformer_rnnt_model(
        input_dim=8, encoding_dim=12, num_symbols=10, segment_length=4, right_context_length=2,
        time_reduction_input_dim=6, time_reduction_stride=2, transformer_num_heads=2,
        transformer_ffn_dim=16, transformer_num_layers=2, transformer_dropout=0.0,
        transformer_activation="relu", transformer_left_context_length=4,
        transformer_max_memory_size=0, transformer_weight_init_scale_strategy="depthwise",
        transformer_tanh_on_mem=False, symbol_embedding_dim=8, num_lstm_layers=2,
        lstm_layer_norm=True, lstm_layer_norm_epsilon=1e-5, lstm_dropout=0.0)
    step, step_args = _emformer_step(torch, emformer, rnd)
    luong, luong_fixed, src = _seq2seq(torch)
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
        "emformer_rnnt": (emformer, (rnd(1, 18, 8), torch.tensor([16]),
                                     torch.randint(0, 10, (1, 5), generator=g),
                                     torch.tensor([5])),
                          ["sources", "source_lengths", "targets", "target_lengths"], {}),
        "emformer_rnnt_step": (step, step_args, ["x", "lengths", "mem0", "key0", "val0",
                                                 "past0", "mem1", "key1", "val1", "past1"], {}),
        "luong_seq2seq": (luong, (src,), ["src"], {"src": 0}, _torchscript_onnx),
        "luong_seq2seq_fixed_steps": (luong_fixed, (src,), ["src"], {"src": 0}),
    }
    table = {k: Case(*v) for k, v in table.items()}
    for m in (c.module for c in table.values()):
        for b in m.modules():        # running statistics a trained BatchNorm would have
            if isinstance(b, (nn.BatchNorm1d, nn.BatchNorm2d)):
                b.running_mean.copy_(torch.randn(b.num_features, generator=g) * 0.1)
                b.running_var.copy_(torch.rand(b.num_features, generator=g) + 0.5)
        m.eval()
    return table


def _emformer_step(torch, rnnt, rnd):
    """The streaming form users deploy: the transcriber's `infer` on one segment (+ right
    context) with its per-layer state [memory, left-context keys, values, past length] as
    explicit inputs and outputs; example state after three segments."""
    class EmformerStep(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.t = rnnt.transcriber

        def forward(self, x, lengths, mem0, key0, val0, past0, mem1, key1, val1, past1):
            out, lens, st = self.t.infer(x, lengths, [[mem0, key0, val0, past0],
                                                      [mem1, key1, val1, past1]])
            return (out, lens) + tuple(t for layer in st for t in layer)
    state = None
    with torch.no_grad():
        for _ in range(3):
            state = rnnt.transcriber.infer(rnd(1, 6, 8), torch.tensor([6]), state)[2]
    return EmformerStep(), (rnd(1, 6, 8), torch.tensor([6])) + tuple(
        t for layer in state for t in layer)


def _seq2seq(torch):
    """The Luong-attention (general) GRU encoder-decoder of tools/seq2seq_models.py with
    greedy decoding: as written with a `while` loop that stops when every row has ended, and
    with a fixed number of steps (how it is written for torch.export). Batch 2; the end token
    is row 0's third free-running token, so row 0 ends early and the other may not."""
    import seq2seq_models as s2s
    spec = replace(s2s.TEST_BEDS["dates"], attention="general", eos=-1)
    src = torch.randint(3, spec.src_vocab, (7, 2), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        free = s2s.build(spec)(src)[0]
    spec = replace(spec, eos=int(free[0, 2]))
    return s2s.build(spec), s2s.build_fixed_steps(spec), src


def _torchscript_onnx(module, args, path):
    import seq2seq_models as s2s
    s2s.export_onnx(module, args[0], path)


def _compare(graph, args, want) -> tuple[float, list]:
    """Largest error over the outputs, in order (floats relative to max(1, max|y|), integer
    outputs such as token ids and lengths exact: inf when any differs), and the outputs."""
    from edgeseq.runtime import Model
    feeds = {v.name: a.numpy() for v, a in zip(graph.inputs, args)}
    out = Model(graph).run(feeds)
    got = [out[v.name] for v in graph.outputs]
    if len(got) != len(want):
        return float("inf"), got
    return max(_error(g, w) for g, w in zip(got, want)), got


def _error(got, want) -> float:
    if np.shape(got) != want.shape:
        return float("inf")
    if not np.issubdtype(want.dtype, np.floating):
        return 0.0 if np.array_equal(got, want) else float("inf")
    # relative to the output's scale: deep random stacks reach large values
    return float(np.max(np.abs(got - want)) / max(1.0, float(np.max(np.abs(want))))) \
        if want.size else 0.0


class PeerFailed(Exception):
    """The written file's own runtime (onnxruntime) cannot run it: the file is not counted."""


def _paths(torch, name: str, case: Case, tmp: Path) -> dict:
    from edgeseq.converters.onnx import convert as convert_onnx
    from edgeseq.converters.torch import convert_exported, from_module
    module, args, taxes = case.module, case.args, case.time_axes

    def from_mod():
        return from_module(module, args, dynamic_time=bool(taxes),
                           time_axis=taxes or None)

    def onnx_path():
        f = tmp / f"{name}.onnx"
        if case.onnx is not None:
            case.onnx(module, args, f)
        else:
            torch.onnx.export(module, args, str(f), input_names=case.names, opset_version=17,
                              dynamo=False,
                              dynamic_axes={k: {a: "T"} for k, a in taxes.items()})
        _onnxruntime_runs(f, case)
        return convert_onnx(f)

    def onnx_dynamo_path():
        # torch.onnx.export's default since PyTorch 2.9: the torch.export-based exporter
        f = tmp / f"{name}.dynamo.onnx"
        label = None
        # NOTE: copies: the exporter marks the dynamic dims on the tensors it is given, and a
        # later torch.export of the same tensors (another model's from_module) then fails
        args_ = tuple(a.clone() for a in args)
        try:
            torch.onnx.export(module, args_, str(f), input_names=case.names, dynamo=True,
                              dynamic_axes={k: {a: "T"} for k, a in taxes.items()} or None,
                              verbose=False)
        except Exception:   # noqa: BLE001 - torch.export refuses the dynamic length
            if not taxes:
                raise
            # as a user would: export at the example's length
            torch.onnx.export(module, args_, str(f), input_names=case.names, dynamo=True,
                              verbose=False)
            label = "onnx (dynamo), fixed length (the exporter refuses a dynamic T)"
        _onnxruntime_runs(f, case)
        graph = convert_onnx(f)
        return graph if label is None else (graph, label)

    def pt2_path():
        f = tmp / f"{name}.pt2"
        torch.export.save(torch.export.export(module, args), str(f))
        return convert_exported(f, dynamic_time=bool(taxes))
    return {"from_module": from_mod, "onnx": onnx_path, "onnx (dynamo)": onnx_dynamo_path,
            ".pt2": pt2_path}


def _onnxruntime_runs(path: Path, case: Case) -> None:
    import onnxruntime as ort
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        sess.run(None, {i.name: a.numpy() for i, a in zip(sess.get_inputs(), case.args)})
    except Exception as e:   # noqa: BLE001 - whatever onnxruntime raises
        raise PeerFailed(" ".join(str(e).split())[:140]) from None


def evaluate(only: str = "") -> list[dict]:
    import torch
    from torch.utils._pytree import tree_flatten
    from edgeseq.errors import EdgeseqError
    rows = []
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        for name, case in models(torch).items():
            if only not in name:
                continue
            want = [t.numpy() for t in tree_flatten(case.module(*case.args))[0]]
            for path, make in _paths(torch, name, case, Path(tmp)).items():
                row = {"model": name, "path": path, "stream": ""}
                rows.append(row)
                try:
                    graph = make()
                    if isinstance(graph, tuple):
                        graph, row["path"] = graph
                except PeerFailed as e:
                    row["result"] = f"onnxruntime fails on the file: {e}"
                    continue
                except EdgeseqError as e:
                    if _exporter_failed(e):
                        row["result"] = f"export failed: {str(e)[:120]}"
                        continue
                    advised = _as_advised(path, e, name, case, Path(tmp))
                    if advised is None:
                        row["result"] = "refused: " + str(e).splitlines()[0][:150]
                        continue
                    graph, row["path"] = advised
                except Exception as e:   # noqa: BLE001 - the exporter failed: not counted
                    msg = re.sub(r"\x1b\[[0-9;]*m", "", " ".join(str(e).split()))
                    row["result"] = f"export failed: {type(e).__name__}: {msg[:100]}"
                    continue
                try:
                    err, whole = _compare(graph, case.args, want)
                    row["result"] = "match" if err <= TOL else "WRONG"
                    row["err"] = err
                except EdgeseqError as e:
                    row["result"] = "run refused: " + str(e).splitlines()[0][:150]
                    continue
                if case.time_axes:
                    row["stream"] = _stream(graph, case, whole)
    return rows


def _exporter_failed(e) -> bool:
    """from_module's own torch.export step failed (the exporter, not the conversion)."""
    return str(e).startswith("torch.export could not trace")


def _as_advised(path: str, e, name: str, case: Case, tmp: Path):
    """(graph, path label) converted again as the refusal advises, as a user would, or None:
    from_module at the traced length when the graph depends on it; an ONNX file with its
    dynamic dims given (`--shape`): all but the time axis first, then all."""
    from edgeseq.converters.onnx import convert as convert_onnx
    from edgeseq.converters.torch import from_module
    from edgeseq.errors import EdgeseqError
    msg = str(e)
    if path == "from_module" and ("dynamic_time=False" in msg
                                  or "holds for one sequence length" in msg):
        return (from_module(case.module, case.args, dynamic_time=False),
                "from_module, fixed length")
    if not path.startswith("onnx") or "--shape" not in msg:
        return None
    onnx_file = tmp / f"{name}{'.dynamo' if 'dynamo' in path else ''}.onnx"
    shapes = {k: list(a.shape) for k, a in zip(case.names, case.args)}
    for k, a in case.time_axes.items():
        shapes[k][a] = "T"
    for _ in range(2):
        try:
            graph = convert_onnx(onnx_file, shapes=shapes)
        except EdgeseqError:
            shapes = {k: list(a.shape) for k, a in zip(case.names, case.args)}
            continue
        given = " ".join(f"{k}={','.join(map(str, d))}" for k, d in shapes.items())
        return graph, f"{path}, --shape {given}"
    return None


def _stream(graph, case: Case, whole: list) -> str:
    """'yes (err)' when pushing the time inputs in chunks of 2, 1 and the rest reproduces the
    whole run (other inputs with every chunk, or with the first one where they only set
    initial states or lengths), else 'no: why'."""
    from edgeseq.errors import EdgeseqError
    from edgeseq.runtime import Model
    feeds = {v.name: a.numpy() for v, a in zip(graph.inputs, case.args)}
    axes = {graph.inputs[case.names.index(k)].name: a for k, a in case.time_axes.items()}
    n_steps = min(feeds[k].shape[a] for k, a in axes.items())
    try:
        model = Model(graph)
        stream = model.stream(time_axes=axes)
        every = {s.name for s in model.inputs if not s.optional}   # needed by each push
        parts = []
        for lo, hi in ((0, 2), (2, 3), (3, n_steps)):
            chunk = dict(feeds) if lo == 0 else {k: feeds[k] for k in every}
            for k, a in axes.items():
                chunk[k] = np.take(feeds[k], np.arange(lo, hi), axis=a)
            parts.append(stream.push(chunk))
    except (EdgeseqError, ValueError, NotImplementedError) as e:
        return "no: " + str(e).splitlines()[0][:90]
    errs = []
    for v, want in zip(graph.outputs, whole):
        axis = stream.axes.get(v.name)
        got = np.concatenate([p[v.name] for p in parts], axis=axis) if axis is not None \
            else parts[-1][v.name]      # a final value: the last push gives the whole run's
        errs.append(_error(got, want))
    return f"yes {max(errs):.1e}" if max(errs) <= TOL else f"no: differs ({max(errs):.1e})"


def table(rows: list[dict]) -> str:
    lines = ["| model | path | result | max err / max(1, max abs y) vs PyTorch | streams |",
             "|---|---|---|---|---|"]
    for r in rows:
        err = f"{r['err']:.1e}" if "err" in r else ""
        lines.append(f"| {r['model']} | {r['path']} | {r['result'].replace('|', '/')} | {err} "
                     f"| {r['stream'].replace('|', '/')} |")
    counted = [r for r in rows if not r["result"].startswith(("export failed", "onnxruntime"))]
    ok = sum(r["result"] == "match" for r in counted)
    timed = [r for r in rows if r["stream"]]
    lines.append(f"\n{len(rows)} conversions, {len(rows) - len(counted)} not written by the "
                 f"exporter or not run by onnxruntime; of the {len(counted)} others {ok} "
                 f"match, {sum(r['result'] == 'WRONG' for r in counted)} wrong, "
                 f"{sum('refused' in r['result'] for r in counted)} refused; streaming "
                 f"checked on {len(timed)} (models with a time axis): "
                 f"{sum(r['stream'].startswith('yes') for r in timed)} stream")
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
