"""The parts of `edgeseq demo` (see edgeseq/commands/demo.py): convert a model, run it on the
Numba runtime and on onnxruntime side by side, print accuracy/agreement and latency.

Without --model: the packaged classifier (edgeseq/data/demo_classifier.onnx, a small LSTM
trained on JapaneseVowels; test split in demo_test.npz), then silero-vad's sequence model
streamed frame by frame (its ONNX files are read from the silero-vad package, which is not
imported: its __init__ needs torch). Each part says what ran; a part whose files are missing
is skipped with the reason. onnx and onnxruntime (the `onnx` extra) are required."""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "data"

LEGEND = """\
Each part converts an ONNX model to an .eseq artifact, runs it on edgeseq's Numba runtime and
on onnxruntime (the model's own runtime, 1 thread) with the same inputs, and prints:
  accuracy  fraction of test sequences whose predicted class is the true label, per engine,
            and how far the two engines' outputs are apart (max |diff|)
  latency   median time per call; calls alternate between the two engines after a warm-up
  ratio     edgeseq time / onnxruntime time: below 1.00 edgeseq is faster, above 1.00 slower"""


def run(args: argparse.Namespace) -> int:
    import onnx  # noqa: F401  (both engines' inputs come through ONNX: the `onnx` extra;
    import onnxruntime  # noqa: F401  a missing one is reported by the CLI in one line)
    print(LEGEND)
    parts = [("user model", lambda: _demo_user(args))] if args.model else [
        ("packaged classifier", lambda: _demo_classifier(args)),
        ("silero-vad streaming", lambda: _demo_silero(args))]
    status = 0
    for title, fn in parts:
        print(f"\n== {title} ==")
        try:
            fn()
        except (_Unavailable, FileNotFoundError) as e:
            print(f"SKIPPED: {e}")
        except Exception as e:  # report, keep going with the other parts
            from edgeseq.errors import EdgeseqError
            if args.model and isinstance(e, EdgeseqError):
                raise  # the user's own model: the CLI's one-line error and exit status 2
            print(f"FAILED: {type(e).__name__}: {e}")
            status = 1
    return status


class _Unavailable(Exception):
    """A demo part cannot run here (file or package missing)."""


def _compile(onnx_path: Path):
    """ONNX -> Graph -> .eseq artifact -> runtime Model, timing each stage."""
    from edgeseq import artifact
    from edgeseq.commands._progress import COMPILING, SlowStepNotice
    from edgeseq.converters.onnx import convert
    from edgeseq.runtime import Model
    t0 = time.perf_counter()
    graph = convert(onnx_path)
    t1 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="edgeseq-demo-"))
    path = artifact.save(graph, tmp / (onnx_path.stem + ".eseq"), source=onnx_path)
    t2 = time.perf_counter()
    with SlowStepNotice(COMPILING):
        model = Model(artifact.load(path))
    t3 = time.perf_counter()
    print(f"converted {onnx_path.name}: {len(graph.nodes)} nodes "
          f"({', '.join(sorted({n.op.value for n in graph.nodes}))}) in {t1 - t0:.2f} s; "
          f"artifact {path.stat().st_size / 1024:.0f} KiB; load + compile/warm-up {t3 - t2:.2f} s")
    return model


def _ort(onnx_path: Path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])


def _alternate(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call, calls alternating between engines after one warm-up round."""
    for f in fns.values():
        f(0)
    times: dict[str, list] = {k: [] for k in fns}
    for i in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f(i)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _latency_line(label: str, t: dict) -> None:
    r = t["edgeseq"] / t["ort"]
    print(f"{label}: edgeseq {_seconds(t['edgeseq'])}   onnxruntime (1 thread) "
          f"{_seconds(t['ort'])}   ratio {r:.2f} ({'faster' if r < 1 else 'slower'})")


def _seconds(s: float) -> str:
    return f"{s * 1e6:7.1f} us" if s < 1e-3 else f"{s * 1e3:7.2f} ms"


def _demo_classifier(args) -> None:
    onnx_path, data_path = DATA / "demo_classifier.onnx", DATA / "demo_test.npz"
    for p in (onnx_path, data_path):
        if not p.exists():
            raise _Unavailable(f"{p} is not shipped yet")
    data = np.load(data_path)
    x, labels = data["x"].astype(np.float32), data["y"]
    model = _compile(onnx_path)
    sess = _ort(onnx_path)
    ours = model.run({"x": x})["logits"]
    theirs = sess.run(None, {"x": x})[0]
    acc_e = float(np.mean(ours.argmax(-1) == labels))
    acc_o = float(np.mean(theirs.argmax(-1) == labels))
    agree = float(np.mean(ours.argmax(-1) == theirs.argmax(-1)))
    print(f"test sequences: {len(labels)} (JapaneseVowels, {x.shape[1]} steps x {x.shape[2]} "
          f"channels, {len(np.unique(labels))} classes)")
    print(f"accuracy: edgeseq {acc_e:.4f}   onnxruntime {acc_o:.4f}   same predicted class "
          f"{agree:.4f}   max |logit diff| {np.max(np.abs(ours - theirs)):.2e}")
    one = [x[i:i + 1] for i in range(len(x))]
    t = _alternate({"edgeseq": lambda i: model.run({"x": one[i % len(one)]}),
                    "ort": lambda i: sess.run(None, {"x": one[i % len(one)]})}, args.repeats)
    _latency_line("latency per sequence (batch 1)", t)
    t = _alternate({"edgeseq": lambda i: model.run({"x": x}),
                    "ort": lambda i: sess.run(None, {"x": x})}, max(5, args.repeats // 10))
    _latency_line(f"latency whole test set (batch {len(x)})", t)


def _speech_frames(seed: int = 0) -> np.ndarray:
    """[n, 576] frames (512 new samples + 64 of context), 16 kHz: synthetic vowels (a glottal
    pulse train with vibrato through three formant resonators, source-filter style) between
    stretches of near silence."""
    sr, hop, ctx = 16000, 512, 64

    def vowel(dur, f0, formants):
        n = int(dur * sr)
        t = np.arange(n) / sr
        phase = np.cumsum(f0 * (1 + 0.06 * np.sin(2 * np.pi * 4 * t))) / sr
        src = (np.diff(np.floor(phase), prepend=0) > 0).astype(float)
        src = np.convolve(src, np.exp(-np.arange(40) / 8.0))[:n]
        k = np.arange(400)
        out = np.zeros(n)
        for f, bw, gain in formants:
            # impulse response of a two-pole resonator: r^k sin((k+1) th) / sin th
            r, th = np.exp(-np.pi * bw / sr), 2 * np.pi * f / sr
            out += gain * np.convolve(src, r ** k * np.sin((k + 1) * th) / np.sin(th))[:n]
        env = np.minimum(1, np.minimum(t / 0.04, (dur - t) / 0.04))
        return out / np.abs(out).max() * 0.5 * env

    quiet = lambda d: np.zeros(int(d * sr))  # noqa: E731
    a = [(730, 90, 1.0), (1090, 110, 0.5), (2440, 170, 0.25)]
    u = [(300, 70, 1.0), (870, 100, 0.4), (2240, 150, 0.1)]
    audio = np.concatenate([quiet(0.6), vowel(0.5, 125, a), vowel(0.4, 110, u), quiet(0.6),
                            vowel(0.6, 140, a), quiet(0.6)])
    audio += 0.003 * np.random.default_rng(seed).standard_normal(audio.size)
    padded = np.concatenate([np.zeros(ctx), audio]).astype(np.float32)
    n = audio.size // hop
    return np.stack([padded[k * hop:k * hop + hop + ctx] for k in range(n)])


def _demo_silero(args) -> None:
    from edgeseq.commands._silero import silero_onnx
    onnx_path = silero_onnx()
    model = _compile(onnx_path)
    sess = _ort(onnx_path)
    frames = _speech_frames()
    z = np.zeros((1, 1, 128), np.float32)
    theirs = sess.run(None, {"input": frames, "h": z, "c": z})[0]
    ours = model.run({"input": frames, "h": z, "c": z})["speech_probs"]
    stream = model.stream()
    streamed = np.concatenate([stream.push({"input": frames[i:i + 1]})["speech_probs"]
                               for i in range(len(frames))])
    print(f"{len(frames)} frames of 32 ms; speech probability range (onnxruntime) "
          f"{theirs.min():.2f}..{theirs.max():.2f}")
    print(f"max |prob diff| vs onnxruntime: whole sequence {np.max(np.abs(ours - theirs)):.2e}, "
          f"streamed frame by frame {np.max(np.abs(streamed - theirs)):.2e}; "
          f"same speech/non-speech decision (0.5) on "
          f"{np.mean((streamed > 0.5) == (theirs > 0.5)) * 100:.1f}% of frames")
    state = {"h": z, "c": z}

    def ort_step(i):
        hn = sess.run(None, {"input": frames[i % len(frames)][None], **state})
        state["h"], state["c"] = hn[1], hn[2]
    stream.reset()
    t = _alternate({"edgeseq": lambda i: stream.push({"input": frames[i % len(frames)][None]}),
                    "ort": ort_step}, args.repeats * 4)
    _latency_line("latency per 32 ms frame, streaming (state carried)", t)


def _demo_user(args) -> None:
    from edgeseq.converters.onnx import convert  # noqa: F401  (fail early if missing)
    model = _compile(args.model)
    sess = _ort(args.model)
    if args.data:
        data = dict(np.load(args.data))
    else:
        rng = np.random.default_rng(0)
        data = {}
        for spec in model.inputs:
            # symbolic dims: 50 steps for time-like names ("T", "sequence_length"), else 1
            shape = tuple(d if isinstance(d, int) else
                          (50 if "t" in d.lower() or "seq" in d.lower() else 1)
                          for d in spec.shape)
            data[spec.name] = (rng.standard_normal(shape).astype(np.float32) if spec.is_float
                               else np.full(shape, 1, np.int64))
        print(f"random inputs: {', '.join(f'{k} {v.shape}' for k, v in data.items())}")
    labels = data.pop("y", None)
    feed = {s.name: data[s.name] for s in model.inputs if s.name in data}
    ours = model.run(feed)
    ort_names = [o.name for o in sess.get_outputs()]
    theirs = dict(zip(ort_names, sess.run(None, {i.name: feed[i.name] for i in sess.get_inputs()
                                                 if i.name in feed})))
    for name in model.output_names:
        if name in theirs:
            print(f"output {name}: max |diff| vs onnxruntime "
                  f"{np.max(np.abs(ours[name] - theirs[name])):.2e}")
    if labels is not None:
        first = model.output_names[0]
        acc = lambda o: float(np.mean(o.argmax(-1) == labels))  # noqa: E731
        print(f"accuracy on '{first}': edgeseq {acc(ours[first]):.4f}   onnxruntime "
              f"{acc(theirs[first]):.4f}")
    ort_feed = {i.name: feed[i.name] for i in sess.get_inputs() if i.name in feed}
    t = _alternate({"edgeseq": lambda i: model.run(feed),
                    "ort": lambda i: sess.run(None, ort_feed)}, args.repeats)
    _latency_line("latency per call", t)


