"""What compression costs and buys, measured: markdown tables (as in docs/quant.md) and a
plot, printed and written into --out (default: a new folder under the current directory);
--update-docs also overwrites the tracked docs/quant_tradeoff.png.

Sections (all by default; pick with --only):
  classifier  the shipped JapaneseVowels LSTM (edgeseq/data): test accuracy and artifact bytes
              for fp32, fp16, int8, svd at several ranks, lstmp (+ int8), and onnxruntime's
              quantize_dynamic of the same ONNX file.
  silero      the silero VAD sequence model on speech synthesised with espeak-ng (plus silence
              and noise): max |Δ speech probability| vs the float model and the fraction of
              frames whose 0.5-threshold decision is unchanged, for fp16 / int8 / svd, next to
              onnxruntime's quantize_dynamic (per-tensor and per-channel). Needs espeak-ng
              (apt-get install espeak-ng); --synthetic-speech runs without it, on synthetic
              voiced syllables, with numbers that differ from the documented ones.
  latency     one LSTM with 1024 units, batch 1, full sequence: edgeseq int8 / fp16 / fp32 vs
              onnxruntime fp32 (1 thread) and ORT's DynamicQuantizeLSTM, and the int8 graph on
              the float-product path (A/B for the int16-activation products); medians of
              alternating runs, warm-up excluded; max abs output error vs ORT fp32.

    .venv/bin/python tools/quant_report.py                 # ~2-3 min on 2 busy cores
    .venv/bin/python tools/quant_report.py --only latency --hidden 1024 --steps 50
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "edgeseq" / "data"


# ---- helpers -----------------------------------------------------------------------------------
def artifact_bytes(graph, tmp: Path, name: str) -> int:
    from edgeseq.artifact import save
    return save(graph, tmp / f"{name}.eseq").stat().st_size


def table(head: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def ort_session(path_or_bytes, threads: int = 1):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path_or_bytes) if isinstance(path_or_bytes, Path)
                                else path_or_bytes, so, providers=["CPUExecutionProvider"])


def ort_quantize(src: Path, tmp: Path, per_channel: bool, ops: list[str] | None = None) -> Path:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic
    logging.getLogger().setLevel(logging.ERROR)     # its "consider pre-processing" advice
    out = tmp / f"{src.stem}.q{'c' if per_channel else 't'}{'_'.join(ops or [])}.onnx"
    quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, per_channel=per_channel,
                     op_types_to_quantize=ops)
    return out


# ---- classifier ---------------------------------------------------------------------------------
CLASSIFIER_VARIANTS = [
    ("fp32", {}),
    ("fp16", dict(weights="fp16")),
    ("int8", dict(weights="int8")),
    ("svd r=64", dict(svd_rank=64)),
    ("svd r=32", dict(svd_rank=32)),
    ("svd r=16", dict(svd_rank=16)),
    ("svd r=8", dict(svd_rank=8)),
    ("svd r=4", dict(svd_rank=4)),
    ("svd r=32 + int8", dict(svd_rank=32, weights="int8")),
    ("lstmp r=64 + int8", dict(lstmp=64, weights="int8")),
    ("lstmp r=32", dict(lstmp=32)),
    ("lstmp r=32 + int8", dict(lstmp=32, weights="int8")),
    ("lstmp r=16 + int8", dict(lstmp=16, weights="int8")),
    ("lstmp r=8 + int8", dict(lstmp=8, weights="int8")),
    ("lstmp r=4 + int8", dict(lstmp=4, weights="int8")),
]


def classifier(tmp: Path, curves: dict) -> str:
    from edgeseq.converters.onnx import convert
    from edgeseq.quant.pipeline import compress
    from edgeseq.runtime import Model

    src = DATA / "demo_classifier.onnx"
    z = np.load(DATA / "demo_test.npz")
    x, y = z["x"], z["y"]
    g = convert(src)
    rows, base_bytes, base_acc = [], None, None
    for label, opts in CLASSIFIER_VARIANTS:
        q, report = compress(g, **opts)
        nbytes = artifact_bytes(q, tmp, "clf")
        logits = Model(q).run({"x": x})["logits"]
        acc = float((logits.argmax(-1) == y).mean()) * 100
        if base_bytes is None:
            base_bytes, base_acc, base_logits = nbytes, acc, logits
        rank = "/".join(str(r["rank"] or r["proj"] or "-") for r in report if r["op"] == "LSTM")
        rows.append([label, f"{acc:.2f}", f"{acc - base_acc:+.2f}", nbytes,
                     f"{nbytes / base_bytes:.3f}", rank,
                     f"{np.abs(logits - base_logits).max():.3f}"])
        for kind in ("svd", "lstmp"):
            if label.startswith(kind) and ("int8" in label) == (kind == "lstmp"):
                curves.setdefault(f"classifier {kind}", []).append((nbytes, acc, label))
    onnx_bytes = src.stat().st_size
    for per_channel in (False, True):
        qp = ort_quantize(src, tmp, per_channel)
        out = ort_session(qp).run(None, {"x": x})[0]
        acc = float((out.argmax(-1) == y).mean()) * 100
        rows.append([f"onnxruntime quantize_dynamic ({'per-channel' if per_channel else 'per-tensor'})",
                     f"{acc:.2f}", f"{acc - base_acc:+.2f}", f"{qp.stat().st_size} (.onnx)",
                     f"{qp.stat().st_size / onnx_bytes:.3f} of .onnx", "-",
                     f"{np.abs(out - base_logits).max():.3f}"])
    head = ["variant", "test acc %", "Δ points", "artifact bytes", "× fp32", "rank/proj per layer",
            "max |Δ logit|"]
    return (f"JapaneseVowels test set (N={len(y)}), edgeseq runtime; fp32 ONNX file "
            f"{onnx_bytes} bytes.\n\n" + table(head, rows))


# ---- silero VAD -----------------------------------------------------------------------------------
SENTENCES = [
    "Voice activity detection decides which parts of a recording contain speech.",
    "The quick brown fox jumps over the lazy dog, then takes a long nap in the sun.",
    "Small machines can run recurrent networks if the weights are compressed with care.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Seven hundred and forty two kilometres separate the two cities on the northern coast.",
    "It was a bright cold day in April, and the clocks were striking thirteen.",
]
VOICES = ["en-us", "en", "en-us+f3", "en+m3", "en-us+f2", "en+m7"]


def _resample(a: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling by FFT zero-padding/truncation (whole signal at once)."""
    n_out = int(round(len(a) * sr_out / sr_in))
    spec = np.fft.rfft(a)
    keep = n_out // 2 + 1
    spec = spec[:keep] if len(spec) >= keep else np.pad(spec, (0, keep - len(spec)))
    return (np.fft.irfft(spec, n_out) * (n_out / len(a))).astype(np.float32)


def speech_audio(rng: np.random.Generator, sr: int = 16000,
                 synthetic: bool = False) -> tuple[np.ndarray, str]:
    """~60 s of espeak-ng speech, silence, and noise at 16 kHz; with `synthetic`, synthetic
    voiced syllables (harmonics under formant-like envelopes) instead of espeak-ng."""
    parts = []
    exe = None if synthetic else shutil.which("espeak-ng")
    with tempfile.TemporaryDirectory() as td:
        for k, text in enumerate(SENTENCES):
            if exe:
                wav = Path(td) / f"s{k}.wav"
                subprocess.run([exe, "-v", VOICES[k % len(VOICES)], "-s", str(140 + 15 * k),
                                "-w", str(wav), text], check=True, capture_output=True)
                with wave.open(str(wav)) as w:
                    a = np.frombuffer(w.readframes(w.getnframes()), np.int16) / 32768.0
                    a = _resample(a, w.getframerate(), sr)
            else:
                a = _synthetic_speech(rng, 3.0, sr)
            gain = 10 ** rng.uniform(-0.6, 0.0)
            parts.append(a * gain / max(np.abs(a).max(), 1e-6) * 0.6)
            gap = int(sr * rng.uniform(0.5, 2.0))
            kind = k % 3
            if kind == 0:
                parts.append(np.zeros(gap, np.float32))                          # silence
            elif kind == 1:
                parts.append(0.01 * rng.standard_normal(gap).astype(np.float32))  # white noise
            else:
                brown = np.cumsum(rng.standard_normal(gap))
                brown -= np.linspace(brown[0], brown[-1], gap)
                parts.append((0.05 * brown / np.abs(brown).max()).astype(np.float32))
    audio = np.concatenate(parts).astype(np.float32)
    # mild background noise under everything, as a real recording has
    audio += 0.002 * rng.standard_normal(audio.size).astype(np.float32)
    return audio, ("espeak-ng speech" if exe else "synthetic voiced syllables (no espeak-ng)")


def _synthetic_speech(rng, seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20))
    syll = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    return (voiced * syll).astype(np.float32)


SILERO_VARIANTS = [
    ("fp32 (edgeseq)", {}),
    ("fp16", dict(weights="fp16")),
    ("int8", dict(weights="int8")),
    ("int8, int8 activations", dict(weights="int8", activations="int8")),
    ("svd r=96", dict(svd_rank=96)),
    ("svd r=64", dict(svd_rank=64)),
    ("svd r=32", dict(svd_rank=32)),
    ("svd r=64 + int8", dict(svd_rank=64, weights="int8")),
]


def silero(tmp: Path, curves: dict, rng, synthetic: bool = False) -> str:
    import silero_vad
    from silero_vad.sequence_vad import frame_blocks

    from edgeseq.converters.onnx import convert
    from edgeseq.quant.pipeline import compress
    from edgeseq.runtime import Model

    src = Path(silero_vad.__file__).parent / "data" / "silero_vad_16k_sequence.onnx"
    audio, origin = speech_audio(rng, synthetic=synthetic)
    frames = np.concatenate(list(frame_blocks(audio, 512, 64, 10 ** 9)))
    zeros = np.zeros((1, 1, 128), np.float32)
    feeds = {"input": frames, "h": zeros, "c": zeros}
    ref = ort_session(src).run(None, feeds)[0].reshape(-1)
    ref_dec = ref > 0.5
    g = convert(src)
    rows = []

    def row(label, probs, nbytes, base):
        d = np.abs(probs - ref)
        same = float(np.mean((probs > 0.5) == ref_dec)) * 100
        rows.append([label, f"{d.max():.4f}", f"{d.mean():.5f}", f"{same:.2f}", nbytes,
                     f"{nbytes / base:.3f}"])
        return d.max()

    base = None
    for label, opts in SILERO_VARIANTS:
        q, report = compress(g, **opts)
        nbytes = artifact_bytes(q, tmp, "vad")
        base = base or nbytes
        probs = Model(q).run(feeds)["speech_probs"].reshape(-1)
        err = row(label, probs, nbytes, base)
        if label.startswith("svd") and "int8" not in label:
            curves.setdefault("silero svd", []).append((nbytes, err, label))
    onnx_bytes = src.stat().st_size
    # all ops (its default: the Conv front end too, activations quantised as well) and LSTM
    # only (DynamicQuantizeLSTM, float32 Conv weights)
    for per_channel, ops in ((False, None), (True, None), (False, ["LSTM"]), (True, ["LSTM"])):
        qp = ort_quantize(src, tmp, per_channel, ops)
        probs = ort_session(qp).run(None, feeds)[0].reshape(-1)
        what = "LSTM only" if ops else "all ops"
        row(f"onnxruntime quantize_dynamic, {what}, "
            f"{'per-channel' if per_channel else 'per-tensor'}", probs, qp.stat().st_size,
            onnx_bytes)
    head = ["variant", "max |Δp|", "mean |Δp|", "decisions unchanged %", "bytes", "× fp32"]
    speech = float(np.mean(ref_dec)) * 100
    return (f"{len(frames)} frames ({audio.size / 16000:.1f} s) of {origin} with silence and "
            f"noise; {speech:.1f} % of frames are speech for the float model (onnxruntime "
            f"fp32, the reference for every row). edgeseq rows run on the edgeseq runtime; "
            f"bytes are .eseq artifacts (ORT rows: .onnx files, × relative to the fp32 .onnx).\n\n"
            + table(head, rows))


# ---- latency ---------------------------------------------------------------------------------------
def lstm_onnx(graph, path: Path) -> Path:
    """The one-node LSTM graph as an ONNX LSTM (gate order i,f,c,o -> ONNX i,o,f,c)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    node = graph.nodes[0]
    h = node.attrs["hidden_size"]
    order = np.concatenate([np.arange(k * h, (k + 1) * h) for k in (0, 3, 1, 2)])
    w = graph.constants[node.weights["w_x"]][:, order]
    r = graph.constants[node.weights["w_h"]][:, order]
    b = np.concatenate([graph.constants[node.weights["b"]][:, order],
                        np.zeros_like(graph.constants[node.weights["b"]])], axis=1)
    n_in = w.shape[-1]
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for a, n in ((w, "W"), (r, "R"), (b, "B"))]
    lstm = helper.make_node("LSTM", ["x", "W", "R", "B"], ["y"], hidden_size=h)
    model = helper.make_model(helper.make_graph(
        [lstm], "lstm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", 1, n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits),
        opset_imports=[helper.make_opsetid("", 14)])
    onnx.save(model, str(path))
    return path


def _median_alternating(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Median wall time and median process CPU time per function, runs alternating.

    On a shared machine the wall time includes time the OS gave to other processes; process
    CPU time (all threads of this process) does not, so both are reported."""
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for f in fns.values():
        f()                                  # warm-up (compilation / allocation)
    for _ in range(repeats):
        for k, f in fns.items():
            c, t = time.process_time(), time.perf_counter()
            f()
            wall[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
    return ({k: float(np.median(v)) for k, v in wall.items()},
            {k: float(np.median(v)) for k, v in cpu.items()})


def latency(tmp: Path, hidden: int, steps: int, repeats: int, n_input: int) -> str:
    from edgeseq.quant import fp16, int8
    from edgeseq.runtime import Model
    from edgeseq.testing import lstm_graph

    rng = np.random.default_rng(0)
    g = lstm_graph(rng, n_input, hidden)
    x = rng.standard_normal((steps, 1, n_input)).astype(np.float32)
    src = lstm_onnx(g, tmp / f"lstm{hidden}x{n_input}.onnx")
    ort32 = ort_session(src)
    ortq = ort_session(ort_quantize(src, tmp, per_channel=True))
    from edgeseq.runtime.compressed import _Compressed

    t0 = time.perf_counter()
    g8 = int8.apply(g)[0]
    models = {"int8": Model(g8), "fp16": Model(fp16.apply(g)[0]), "fp32": Model(g)}
    cold = time.perf_counter() - t0
    # the same int8 graph on the float path (int8 weights widened to float32 in the products,
    # exact activations): the kernels before the int16-activation products, for A/B
    keep = _Compressed.int16_min_cols
    _Compressed.int16_min_cols = 1 << 62
    try:
        models["int8, float products"] = Model(g8)
    finally:
        _Compressed.int16_min_cols = keep
    ref = ort32.run(None, {"x": x})[0]
    fns = {"ort fp32": lambda: ort32.run(None, {"x": x}),
           "ort DynamicQuantizeLSTM": lambda: ortq.run(None, {"x": x})}
    outs = {"ort fp32": ref, "ort DynamicQuantizeLSTM": ortq.run(None, {"x": x})[0]}
    for k, m in models.items():
        fns[f"edgeseq {k}"] = (lambda m=m: m.run({"x": x}))
        outs[f"edgeseq {k}"] = m.run({"x": x})["y"]
    med, cpu = _median_alternating(fns, repeats)
    rows = [[k, f"{med[k] * 1e3:.2f}", f"{med[k] / med['ort fp32']:.3f}", f"{cpu[k] * 1e3:.2f}",
             f"{cpu[k] / cpu['ort fp32']:.3f}", f"{cpu[k] / steps * 1e6:.0f}",
             f"{np.abs(outs[k] - ref).max():.2e}"] for k in fns]
    head = ["runtime", "wall ms", "wall × ORT fp32", "CPU ms", "CPU × ORT fp32",
            "CPU µs per step", "max |Δy| vs ORT fp32"]
    return (f"LSTM {hidden} units, input {n_input}, T = {steps}, batch 1, one thread each; "
            f"median of {repeats} alternating runs (model build incl. Numba cache load: "
            f"{cold:.1f} s); load average at the start: "
            f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}.\n\n" + table(head, rows))


# ---- plot -------------------------------------------------------------------------------------------
def plot(curves: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    for key, marker in (("classifier svd", "o-"), ("classifier lstmp", "s-")):
        pts = sorted(curves.get(key, []))
        if pts:
            ax.plot([p[0] / 1024 for p in pts], [p[1] for p in pts], marker,
                    label=key.replace("classifier ", "") + (" (fp32)" if "svd" in key else " + int8"))
            for b, a, lab in pts:
                ax.annotate(lab.split(" ")[1], (b / 1024, a), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("artifact KiB")
    ax.set_ylabel("test accuracy %")
    ax.set_title("JapaneseVowels classifier: size vs accuracy")
    if ax.lines:
        ax.legend()
    ax = axes[1]
    pts = sorted(curves.get("silero svd", []))
    if pts:
        ax.plot([p[0] / 1024 for p in pts], [p[1] for p in pts], "o-", label="svd of W_h (fp32)")
        for b, e, lab in pts:
            ax.annotate(lab.split(" ")[1], (b / 1024, e), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlabel("artifact KiB")
    ax.set_ylabel("max |Δ speech probability|")
    ax.set_title("silero VAD: size vs probability error")
    if pts:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    sys.path.insert(0, str(ROOT / "tools"))
    import report_out
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=("classifier", "silero", "latency"), action="append",
                    help="run only this section (repeatable; default: all three)")
    ap.add_argument("--hidden", type=int, default=1024, help="latency LSTM units")
    ap.add_argument("--steps", type=int, default=50, help="latency sequence length")
    ap.add_argument("--inputs", default="1024,80",
                    help="input sizes for the latency LSTM, comma-separated (one table each)")
    ap.add_argument("--repeats", type=int, default=15, help="timed runs per latency row")
    ap.add_argument("--synthetic-speech", action="store_true",
                    help="silero section without espeak-ng: synthetic voiced syllables "
                         "(numbers differ from docs/quant.md)")
    report_out.add_arguments(ap, "quant_report", "docs/quant_tradeoff.png")
    args = ap.parse_args(argv)
    sections = args.only or ["classifier", "silero", "latency"]
    if "silero" in sections and not args.synthetic_speech and not shutil.which("espeak-ng"):
        ap.error("the silero section speaks its test audio with espeak-ng, which is not "
                 "installed (apt-get install espeak-ng); or pass --synthetic-speech (numbers "
                 "then differ from docs/quant.md), or --only classifier --only latency")
    out = report_out.output_dir(args.out, "quant_report")
    plots = report_out.can_plot(ap, args.update_docs)
    report = []
    curves: dict = {}
    rng = np.random.default_rng(5)
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        if "classifier" in sections:
            report.append("### Classifier\n\n" + classifier(tmp, curves) + "\n")
            print(report[-1], flush=True)
        if "silero" in sections:
            report.append("### silero VAD\n\n" + silero(tmp, curves, rng,
                                                         args.synthetic_speech) + "\n")
            print(report[-1], flush=True)
        if "latency" in sections:
            for n_input in (int(v) for v in args.inputs.split(",")):
                report.append("### Latency\n\n" + latency(tmp, args.hidden, args.steps,
                                                          args.repeats, n_input) + "\n")
                print(report[-1], flush=True)
    (out / "report.md").write_text("\n".join(report))
    print(f"wrote {out / 'report.md'}")
    if curves and plots:
        plot(curves, out / "quant_tradeoff.png")
        print(f"plot: {out / 'quant_tradeoff.png'}")
        if args.update_docs:
            plot(curves, report_out.DOCS / "quant_tradeoff.png")
            print("updated docs/quant_tradeoff.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
