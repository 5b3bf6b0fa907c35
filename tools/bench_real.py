"""The `real` benchmark suite: whole models of the shapes real users run, edgeseq vs
onnxruntime (1 thread) in one process, calls alternating A B C A B C, medians.

    python tools/bench.py real [--quick] [--only NAME,...]     (or python tools/bench_real.py)
    python tools/bench.py real --cold                          start-up (fresh processes)
    python tools/bench.py real --kernels                       per-step kernel bounds
    python tools/bench.py real --overhead [--quick]            Python side of a call vs native

Models are rebuilt here as PyTorch modules with seeded random weights, exported with the
legacy ONNX exporter (torch is a tool dependency only), converted by edgeseq's ONNX
converter; the shipped demo classifier and silero-vad (one 576-sample frame per
`Stream.push`, state carried) are run from their files. Columns: edgeseq with the
whole-graph compiler ("codegen"), edgeseq's per-node interpreter ("interp", what Model.run
was before the compiler), onnxruntime with one thread; ratios are medians over medians
("r(min)": the fastest call of each, the steadier number when the machine is shared).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _torch_models() -> dict:
    """name -> (module, example inputs dict, dynamic axes, note)."""
    import torch
    from torch import nn
    torch.manual_seed(0)

    class Kws(nn.Module):              # keyword spotter: LSTM + Linear on the last step
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(40, 128)
            self.head = nn.Linear(128, 12)

        def forward(self, x):
            y, _ = self.lstm(x)
            return self.head(y[-1])

    class Tagger(nn.Module):           # g2p-style 2-layer BiLSTM tagger with lengths
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(64, 128, num_layers=2, bidirectional=True)
            self.head = nn.Linear(256, 50)

        def forward(self, x, lengths):
            p = nn.utils.rnn.pack_padded_sequence(x, lengths)
            y, _ = self.lstm(p)
            y, _ = nn.utils.rnn.pad_packed_sequence(y, total_length=x.shape[0])
            return torch.log_softmax(self.head(y), dim=-1)

    class EncDec(nn.Module):           # GRU encoder + one decoder step
        def __init__(self):
            super().__init__()
            self.enc = nn.GRU(64, 128)
            self.dec = nn.GRU(64, 128)
            self.head = nn.Linear(128, 50)

        def forward(self, x, y_prev):
            _, h = self.enc(x)
            o, _ = self.dec(y_prev, h)
            return torch.log_softmax(self.head(o[0]), dim=-1)

    class Beat(nn.Module):             # 3-layer BiLSTM 25 units over 266 features
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(266, 25, num_layers=3, bidirectional=True)
            self.head = nn.Linear(50, 3)

        def forward(self, x):
            y, _ = self.lstm(x)
            return torch.softmax(self.head(y), dim=-1)

    class BiGru(nn.Module):            # 3-layer BiGRU 25 units, learned initial state
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(266, 25, num_layers=3, bidirectional=True)
            self.h0 = nn.Parameter(torch.randn(6, 1, 25) * 0.1)
            self.head = nn.Linear(50, 3)

        def forward(self, x):
            y, _ = self.gru(x, self.h0)
            return self.head(y)

    class DeepSpeech(nn.Module):       # Linear stack + bidirectional ReLU RNN + Linear
        def __init__(self):
            super().__init__()
            self.fc = nn.Sequential(nn.Linear(161, 256), nn.ReLU(), nn.Linear(256, 256),
                                    nn.ReLU(), nn.Linear(256, 256), nn.ReLU())
            self.rnn = nn.RNN(256, 256, nonlinearity="relu", bidirectional=True)
            self.out = nn.Linear(512, 29)

        def forward(self, x):
            y, _ = self.rnn(self.fc(x))
            return torch.log_softmax(self.out(y), dim=-1)

    class Tacotron(nn.Module):         # Tacotron2 encoder: Conv1d x3 (+BN, ReLU) + BiLSTM
        def __init__(self):
            super().__init__()
            self.convs = nn.Sequential(*[nn.Sequential(nn.Conv1d(512, 512, 5, padding=2),
                                                       nn.BatchNorm1d(512), nn.ReLU())
                                         for _ in range(3)])
            self.lstm = nn.LSTM(512, 256, bidirectional=True)

        def forward(self, x):
            y = self.convs(x).permute(2, 0, 1)
            y, _ = self.lstm(y)
            return y

    r = np.random.default_rng(0)

    def f(*s):
        return r.standard_normal(s).astype(np.float32)
    return {
        "kws": (Kws(), {"x": f(100, 1, 40)}, {"x": {0: "T"}}, "T=100, 40 MFCC, LSTM 128"),
        "g2p_tagger": (Tagger(), {"x": f(30, 1, 64), "lengths": np.array([30], np.int64)},
                       {"x": {0: "T"}}, "T=30, 2-layer BiLSTM 128 with lengths"),
        "g2p_encdec": (EncDec(), {"x": f(30, 1, 64), "y_prev": f(1, 1, 64)}, {"x": {0: "T"}},
                       "T=30 GRU 128 encoder + 1 decoder step"),
        "beat_bilstm": (Beat(), {"x": f(1200, 1, 266)}, {"x": {0: "T"}},
                        "1200x266, 3-layer BiLSTM 25 (no peephole: torch has none)"),
        "bigru_h0": (BiGru(), {"x": f(1200, 1, 266)}, {"x": {0: "T"}},
                     "1200x266, 3-layer BiGRU 25, learned h0"),
        "deepspeech": (DeepSpeech(), {"x": f(200, 1, 161)}, {"x": {0: "T"}},
                       "T=200x161, 3 Linear 256 + BiRNN 256"),
        "tacotron_enc": (Tacotron(), {"x": f(1, 512, 100)}, {"x": {2: "T"}},
                         "T=100, 3x Conv1d 512 k5 + BiLSTM 256"),
    }


def _export(name: str, module, inputs: dict, dyn: dict, out: Path) -> Path:
    import torch
    path = out / f"{name}.onnx"
    module.eval()
    args = tuple(torch.from_numpy(v) for v in inputs.values())
    with torch.no_grad():
        torch.onnx.export(module, args, str(path), dynamo=False, input_names=list(inputs),
                          dynamic_axes=dyn, opset_version=17)
    return path


def _with_peepholes(path: Path) -> Path:
    """A copy of an exported model whose LSTM nodes get random peephole weights (ONNX input
    P, [D, 3H]): the madmom-style beat tracker has peepholes, torch's LSTM has none."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(str(path))
    r = np.random.default_rng(3)
    for k, node in enumerate(m.graph.node):
        if node.op_type != "LSTM":
            continue
        hs = next(a.i for a in node.attribute if a.name == "hidden_size")
        dirs = 2 if any(a.name == "direction" and a.s == b"bidirectional"
                        for a in node.attribute) else 1
        name = f"peephole_{k}"
        m.graph.initializer.append(numpy_helper.from_array(
            (r.standard_normal((dirs, 3 * hs)) * 0.3).astype(np.float32), name))
        while len(node.input) < 7:
            node.input.append("")
        node.input.append(name)
    out = path.with_name(path.stem + "_peephole.onnx")
    onnx.save(m, str(out))
    return out


def _ort(path: Path):
    from edgeseq.commands._demo import _ort as one_thread_session
    return one_thread_session(path)


def _models(path: Path) -> tuple:
    """(converted graph, compiled Model, interpreter Model, seconds to build the compiled one)."""
    from edgeseq.converters.onnx import convert
    from edgeseq.runtime import Model
    g = convert(str(path))
    t0 = time.perf_counter()
    cg = Model(g, codegen=True)
    return g, cg, Model(g, codegen=False), time.perf_counter() - t0


def _alternate(fns: dict, budget_s: float, max_calls: int) -> dict:
    """Median seconds per call of each fn, calls alternating, after one warm-up round. The
    order rotates every round (A B C, B C A, C A B): the call right after onnxruntime's runs
    on caches it evicted (silero push 66.9 us in a fixed order against 64.7 us rotated)."""
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    order = list(fns.items())
    start, rnd = time.perf_counter(), 0
    while len(times[next(iter(fns))]) < max_calls and \
            (time.perf_counter() - start < budget_s or len(times[next(iter(fns))]) < 5):
        for k, f in order[rnd % len(order):] + order[:rnd % len(order)]:
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
        rnd += 1
    out = {k: statistics.median(v) for k, v in times.items()}
    out.update({f"{k}_min": min(v) for k, v in times.items()})   # robust on a loaded machine
    return out


def _fmt(s: float) -> str:
    return f"{s * 1e3:8.2f} ms" if s >= 1e-3 else f"{s * 1e6:8.1f} us"


def _whole(name, path, feed, note, budget):
    g, cg, it, t_compile = _models(path)
    sess = _ort(path)
    names = [i.name for i in sess.get_inputs()]
    ofeed = {k: v for k, v in feed.items() if k in names}
    a, b, c = cg.run(feed), it.run(feed), sess.run(None, ofeed)
    diff = max(float(np.max(np.abs(a[k] - o))) for k, o in zip(cg.output_names, c))
    med = _alternate({"cg": lambda: cg.run(feed), "it": lambda: it.run(feed),
                      "ort": lambda: sess.run(None, ofeed)}, budget, 2000)
    return dict(name=name, note=note, compiled=cg.source() is not None, diff=diff,
                compile_s=t_compile, **med)


def _silero_stream(budget):
    import silero_vad
    path = Path(silero_vad.__file__).parent / "data" / "silero_vad_16k_sequence.onnx"
    g, cg, it, t_compile = _models(path)
    sess = _ort(path)
    fr = (np.random.default_rng(1).standard_normal((1, 576)) * 0.1).astype(np.float32)
    zero = {"h": np.zeros((1, 1, 128), np.float32), "c": np.zeros((1, 1, 128), np.float32)}
    s1, s2 = cg.stream(), it.stream()
    st = dict(zero)
    p1 = s1.push({"input": fr, **zero})["speech_probs"]
    s2.push({"input": fr, **zero})
    r = sess.run(None, {"input": fr, **st})
    diff = float(np.max(np.abs(p1 - r[0])))

    def ort_step():
        out = sess.run(None, {"input": fr, **st})
        st["h"], st["c"] = out[1], out[2]
    med = _alternate({"cg": lambda: s1.push({"input": fr}), "it": lambda: s2.push({"input": fr}),
                      "ort": ort_step}, budget, 5000)
    return dict(name="silero_stream", note="one 576-sample frame per Stream.push",
                compiled=cg.source() is not None, diff=diff, compile_s=t_compile, **med)


# prints per phase the wall time, then the process's CPU time (all threads; on a loaded
# machine the steadier number for an A/B)
_COLD = """
import os, sys, time
w0, c0 = time.perf_counter(), time.process_time()
import numpy as np, silero_vad
from edgeseq.converters.onnx import convert
from edgeseq.runtime import Model
g = convert(os.path.join(os.path.dirname(silero_vad.__file__), "data",
                         "silero_vad_16k_sequence.onnx"))
g2 = convert(sys.argv[1])
w1, c1 = time.perf_counter(), time.process_time()
Model(g).stream().push({"input": np.zeros((1, 576), np.float32)})
w2, c2 = time.perf_counter(), time.process_time()
Model(g2).run({"x": np.zeros((1, 29, 12), np.float32)})
w3, c3 = time.perf_counter(), time.process_time()
print(f"{w1 - w0:.2f} {w2 - w1:.2f} {w3 - w2:.2f} {c1 - c0:.2f} {c2 - c1:.2f} {c3 - c2:.2f}")
"""


# start-up variants: label -> environment (the generated code calls the kernels through
# pointers by default; "linked" is the ahead-of-time form, kernels linked into the function)
COLD_VARIANTS = {
    "compiled": {"EDGESEQ_CODEGEN": "1", "EDGESEQ_CODEGEN_LINKED": "0"},
    "linked": {"EDGESEQ_CODEGEN": "1", "EDGESEQ_CODEGEN_LINKED": "1"},
    "interpreter": {"EDGESEQ_CODEGEN": "0"},
}


def cold_start(variants=tuple(COLD_VARIANTS)) -> None:
    """Fresh processes: silero Model + first push, then classifier Model + first run, with
    private empty caches and then warm ones, per variant (compiled with pointer calls,
    compiled with the kernels linked, interpreter)."""
    import resource
    import subprocess
    demo = str(ROOT / "edgeseq" / "data" / "demo_classifier.onnx")
    print(f"start-up, fresh process (load average {os.getloadavg()[0]:.1f}): import+convert / "
          f"silero Model + first push / classifier Model + first run, wall [CPU] seconds; "
          f"cpu: the child's whole CPU time (getrusage)")
    for what in variants:
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, NUMBA_CACHE_DIR=cache, EDGESEQ_CACHE_DIR=cache,
                       **COLD_VARIANTS[what])
            for label in ("empty caches", "warm caches"):
                r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                out = subprocess.run([sys.executable, "-c", _COLD, demo], env=env, check=True,
                                     capture_output=True, text=True).stdout.split()
                r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
                phases = " / ".join(f"{w} [{c}]" for w, c in zip(out[:3], out[3:]))
                print(f"  {what:11s} {label:12s} {phases} s; cpu {cpu:.2f} s")


def call_overhead(calls: int) -> None:
    """Per call of silero (one frame per Stream.push) and the demo classifier (Model.run):
    the whole call and, inside it, the generated function's native call (timed by a
    wrapper around it, so both come from the same call); their difference is the Python
    side (input checks, argument and result building). Then NRT allocations per call."""
    import silero_vad
    from numba.core.runtime import _nrt_python, rtsys
    from edgeseq.converters.onnx import convert
    from edgeseq.runtime import Model
    fr = (np.random.default_rng(1).standard_normal((1, 576)) * 0.1).astype(np.float32)
    x = np.random.default_rng(2).standard_normal((1, 29, 12)).astype(np.float32)
    silero = Model(convert(str(Path(silero_vad.__file__).parent / "data" /
                               "silero_vad_16k_sequence.onnx")))
    demo = Model(convert(str(ROOT / "edgeseq" / "data" / "demo_classifier.onnx")))
    stream = silero.stream()
    cases = {"silero Stream.push": (silero, lambda: stream.push({"input": fr})),
             "classifier Model.run": (demo, lambda: demo.run({"x": x}))}
    print(f"per call, {calls} calls each (median / 10th percentile):")
    for label, (model, call) in cases.items():
        compiled = model._compiled
        inner, native = compiled.fn, []

        def timed(*args, _inner=inner, _native=native):
            t0 = time.perf_counter()
            out = _inner(*args)
            _native.append(time.perf_counter() - t0)
            return out
        compiled.fn = timed
        try:
            call()
            native.clear()
            whole = []
            for _ in range(calls):
                t0 = time.perf_counter()
                call()
                whole.append(time.perf_counter() - t0)
        finally:
            compiled.fn = inner
        py = sorted(w - n for w, n in zip(whole, native))
        whole, native = sorted(whole), sorted(native)
        _nrt_python.memsys_enable_stats()
        try:
            before = rtsys.get_allocation_stats().alloc
            call()
            allocs = rtsys.get_allocation_stats().alloc - before
        finally:
            _nrt_python.memsys_disable_stats()
        q = calls // 10
        print(f"  {label:22s} whole {_fmt(whole[calls // 2])} / {_fmt(whole[q])}   native "
              f"{_fmt(native[calls // 2])} / {_fmt(native[q])}   Python {_fmt(py[calls // 2])} / "
              f"{_fmt(py[q])}   NRT allocations {allocs}")


def kernel_bounds() -> None:
    """Per-step parts of the recurrent kernels at real sizes, minimum of repeated calls: the
    one-row recurrent panel GEMV, the default LSTM cell's gate math per unit, and the input
    projection's FMA rate (what docs/runtime.md cites as the bounds)."""
    from edgeseq.runtime.kernels import lstm
    from edgeseq.runtime.kernels.panels import panel_gemv_acc, project_panels, to_panels
    r = np.random.default_rng(0)

    def best(fn, n):
        fn()
        out = float("inf")
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            out = min(out, time.perf_counter() - t0)
        return out
    print("kernel bounds (min of repeated calls)")
    for hs in (128, 256, 1024):
        wp = to_panels(r.standard_normal((4 * hs, hs)).astype(np.float32))
        h = r.standard_normal(hs).astype(np.float32)
        z = np.zeros(wp.shape[0] * 16, np.float32)
        t = best(lambda: panel_gemv_acc(wp, h, z), 200 if hs < 1024 else 20)
        print(f"  recurrent GEMV {4 * hs}x{hs} ({wp.nbytes >> 10} KiB): {t * 1e6:8.2f} us "
              f"({wp.nbytes / t / 1e9:.0f} GB/s)")
    for hs in (32, 128):
        t_len = 200
        x = np.zeros((t_len, 1, 4 * hs), np.float32)
        w0 = to_panels(np.zeros((4 * hs, 1), np.float32))     # K=1: the GEMV is ~free
        aux = np.zeros((12, hs), np.float32)
        st = np.zeros((1, hs), np.float32)
        y = np.empty((t_len, 1, hs), np.float32)
        t = best(lambda: lstm._plain_sequence(x, w0, aux, np.int64(0), False, np.int64(t_len),
                                              st, st.copy(), y), 50)
        print(f"  LSTM step without the recurrent GEMV, {hs} units: "
              f"{t / t_len / hs * 1e9:.2f} ns per unit")
    for rows, n_in, n_out in ((1200, 266, 100), (100, 1024, 4096)):
        wp = to_panels(r.standard_normal((n_out, n_in)).astype(np.float32))
        x = r.standard_normal((rows, 1, n_in)).astype(np.float32)
        t = best(lambda: project_panels(x, wp), 20)
        fma = rows * n_in * wp.shape[0] * 16
        print(f"  input projection {rows}x{n_in} -> {n_out} rows: {t * 1e3:.2f} ms "
              f"({fma / t / 1e9:.0f} GFMA/s incl. padding rows)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="0.5 s per model instead of 3 s")
    ap.add_argument("--only", default="", help="comma-separated model names")
    ap.add_argument("--cold", action="store_true", help="start-up times only (subprocesses)")
    ap.add_argument("--cold-variants", default=",".join(COLD_VARIANTS),
                    help="with --cold: comma-separated subset of " + ", ".join(COLD_VARIANTS))
    ap.add_argument("--kernels", action="store_true",
                    help="per-step bounds of the recurrent kernels only")
    ap.add_argument("--overhead", action="store_true",
                    help="per call: Python side vs the native call, NRT allocations")
    args = ap.parse_args(argv)
    if args.overhead:
        call_overhead(1000 if args.quick else 5000)
        return 0
    if args.cold:
        cold_start(tuple(v for v in args.cold_variants.split(",") if v))
        return 0
    if args.kernels:
        kernel_bounds()
        return 0
    budget = 0.5 if args.quick else 3.0
    only = set(filter(None, args.only.split(",")))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if not only or "silero_stream" in only:
            rows.append(_silero_stream(budget))
        if not only or "demo_classifier" in only:
            x = np.random.default_rng(2).standard_normal((1, 29, 12)).astype(np.float32)
            rows.append(_whole("demo_classifier", ROOT / "edgeseq" / "data" /
                               "demo_classifier.onnx", {"x": x}, "shipped, 29x12, 2x LSTM 128",
                               budget))
        for name, (mod, feed, dyn, note) in _torch_models().items():
            peep = name == "beat_bilstm" and (not only or "beat_peephole" in only)
            if only and name not in only and not peep:
                continue
            path = _export(name, mod, feed, dyn, Path(tmp))
            if not only or name in only:
                rows.append(_whole(name, path, feed, note, budget))
            if peep:
                rows.append(_whole("beat_peephole", _with_peepholes(path), feed,
                                   "the same with peepholes (the madmom beat tracker's cell)",
                                   budget))
            print(f"  done {name}", file=sys.stderr, flush=True)
    print("medians of alternating calls, batch 1; ratio = edgeseq / onnxruntime 1 thread")
    print(f"{'model':17s} {'codegen':>11s} {'interp':>11s} {'ORT 1thr':>11s} {'ratio':>6s} "
          f"{'before':>6s} {'r(min)':>6s} {'max|diff|':>9s}  shape")
    for r in rows:
        flag = "" if r["compiled"] else " (fallback)"
        print(f"{r['name']:17s} {_fmt(r['cg'])} {_fmt(r['it'])} {_fmt(r['ort'])} "
              f"{r['cg'] / r['ort']:6.2f} {r['it'] / r['ort']:6.2f} "
              f"{r['cg_min'] / r['ort_min']:6.2f} {r['diff']:9.1e}  "
              f"{r['note']}{flag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
