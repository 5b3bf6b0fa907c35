"""int8 benchmark: edgeseq's int8 LSTM (int8 and int16 activations) vs onnxruntime's
quantize_dynamic (DynamicQuantizeLSTM, per-tensor and per-channel) and onnxruntime fp32, one
thread each, calls alternating in one process; time ratios and max error vs the float model.

    python tools/bench.py int8 [--quick] [--repeats N] [--sizes 1024,256] [--steps 100]
                               [--haswell | --avx2] [--no-silero] [--pair] [--json PATH]

edgeseq rows run Model's default path, the generated whole-graph code; the "interpreter"
row is the same model on the per-node interpreter (Model(..., codegen=False)). The silero
part runs the int8 artifact one 576-sample frame per Stream.push: generated code vs
interpreter vs onnxruntime fp32 (1 thread) on the float model, calls alternating (rotated).

--haswell runs the same in a child process as on an AVX2-only CPU (`--avx2`): Numba compiles
for haswell (NUMBA_CPU_NAME=haswell plus its feature list: Numba applies the CPU name alone
with the host's features) and CPUID is masked (`tools/cpuid_mask.py`: no AVX-512, VNNI or
AMX) before onnxruntime is imported, so its MLAS picks its AVX2 kernels too. Each table says
which int8 kernel each side runs: edgeseq's formulation, and onnxruntime's U8S8 GEMM told
apart by a probe (u8 255 × s8 127: the AVX2 kernel's vpmaddubsw saturates the pair sums,
VNNI is exact). Where CPUID faulting is absent the child runs with Numba for haswell only,
labelled "onnxruntime keeps its host ISA". The error reference is onnxruntime fp32 on the float model (same weights,
same N(0,1) inputs); "× ORT int8" is relative to the per-tensor DynamicQuantizeLSTM;
medians of wall time and of process CPU time (which leaves out time the OS gave others).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HASWELL_FEATURES = ("+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+cx8,+f16c,+fma,+fsgsbase,"
                    "+fxsr,+invpcid,+lzcnt,+mmx,+movbe,+pclmul,+popcnt,+rdrnd,+sahf,+sse,"
                    "+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave,+xsaveopt,-avx512f,-avx512bw,"
                    "-avx512vl,-avx512vnni,-avxvnni")


def as_avx2(mask: bool = True) -> str:
    """Make this process an AVX2-only one before numba or onnxruntime is imported: Numba
    compiles for haswell, and (mask) CPUID hides AVX-512/VNNI/AMX. Returns how onnxruntime
    was capped (for the tables)."""
    late = [m for m in ("numba", "onnxruntime") if m in sys.modules]
    if late:
        raise SystemExit(f"--avx2: {', '.join(late)} already imported; run bench_int8.py "
                         f"--avx2 in a fresh process")
    os.environ.update(NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=HASWELL_FEATURES)
    if not mask:
        return "onnxruntime keeps its host ISA (no CPUID mask)"
    import cpuid_mask
    try:
        cpuid_mask.install()
    except OSError as e:
        raise SystemExit(f"--avx2: cannot mask CPUID here ({e}); onnxruntime would keep its "
                         f"host ISA: use --avx2 --no-cpuid-mask for that (unequal) comparison")
    return "CPUID masked to AVX2 (tools/cpuid_mask.py)"


def ort_u8s8_kernel() -> str:
    """Which U8S8 GEMM onnxruntime's MLAS runs here, from its bits: MatMulInteger of u8 255
    by s8 127 over 64 columns is 2 072 640 exactly; the AVX2 kernel (vpmaddubsw, then
    vpmaddwd) saturates each pair sum to 32767, giving 32 · 32767 = 1 048 544."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    k = 64
    g = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "probe",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [4, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [4, 16])],
        [numpy_helper.from_array(np.full((k, 16), 127, np.int8), "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    y = int(s.run(None, {"a": np.full((4, k), 255, np.uint8)})[0][0, 0])
    if y == 32 * 32767:
        return "MLAS U8S8 AVX2 (vpmaddubsw: pair sums saturate)"
    if y == k * 255 * 127:
        return "MLAS U8S8 exact (its VNNI kernels)"
    return f"MLAS U8S8 unknown (probe {y})"


def _ort_int8(model_bytes: bytes, tmp: Path, per_channel: bool) -> bytes:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    logging.getLogger().setLevel(logging.ERROR)      # its "consider pre-processing" advice
    src, out = tmp / "f.onnx", tmp / f"q{int(per_channel)}.onnx"
    src.write_bytes(model_bytes)
    quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, per_channel=per_channel)
    return out.read_bytes()


def _edgeseq_int8(graph, activations: str, codegen: bool | None = None):
    from edgeseq.quant.pipeline import compress
    from edgeseq.runtime import Model
    return Model(compress(graph, weights="int8", activations=activations)[0], codegen=codegen)


# one row per runtime: (label, builder(graph, fp32 onnx bytes, tmp dir) -> run(x, feed))
def _rows():
    from edgeseq.commands._benchmark import ort_session

    def ort(make_bytes):
        def build(graph, mb, tmp):
            s = ort_session(make_bytes(mb, tmp), 1)
            return lambda x, feed: s.run(["y"], feed)[0][:, 0]
        return build

    def ours(activations, codegen=None):
        def build(graph, mb, tmp):
            m = _edgeseq_int8(graph, activations, codegen)
            if codegen is None and m.source() is None:
                raise SystemExit("the int8 model did not compile to generated code:\n"
                                 + m.describe())
            return lambda x, feed: m.run({"x": x})["y"]
        return build

    return [("ort fp32", ort(lambda mb, tmp: mb)),
            ("ort int8 per-tensor", ort(lambda mb, tmp: _ort_int8(mb, tmp, False))),
            ("ort int8 per-channel", ort(lambda mb, tmp: _ort_int8(mb, tmp, True))),
            ("edgeseq int8, int8 activations", ours("int8")),
            ("edgeseq int8, int7 activations", ours("int7")),
            ("edgeseq int8, int16 activations", ours("int16")),
            ("edgeseq int8, int8 activations, interpreter", ours("int8", codegen=False))]


def silero_stream(budget_s: float) -> dict:
    """silero-vad 16k_sequence compressed by `--weights int8`, one frame per Stream.push
    (state carried): generated code, interpreter, and onnxruntime fp32 on the float file."""
    import silero_vad
    from bench_real import _alternate, _ort
    from edgeseq.converters.onnx import convert
    from edgeseq.quant.pipeline import compress
    from edgeseq.runtime import Model
    path = Path(silero_vad.__file__).parent / "data" / "silero_vad_16k_sequence.onnx"
    q = compress(convert(str(path)), weights="int8")[0]
    cg, it = Model(q), Model(q, codegen=False)
    if cg.source() is None:
        raise SystemExit("the int8 silero did not compile to generated code:\n" + cg.describe())
    sess = _ort(path)
    fr = (np.random.default_rng(1).standard_normal((1, 576)) * 0.1).astype(np.float32)
    zero = {"h": np.zeros((1, 1, 128), np.float32), "c": np.zeros((1, 1, 128), np.float32)}
    s1, s2 = cg.stream(), it.stream()
    st = dict(zero)
    diff = float(np.max(np.abs(s1.push({"input": fr, **zero})["speech_probs"]
                               - sess.run(None, {"input": fr, **st})[0])))
    s2.push({"input": fr, **zero})

    def ort_step():
        out = sess.run(None, {"input": fr, **st})
        st["h"], st["c"] = out[1], out[2]
    med = _alternate({"generated": lambda: s1.push({"input": fr}),
                      "interpreter": lambda: s2.push({"input": fr}), "ort fp32": ort_step},
                     budget_s, 5000)
    return {"diff_vs_ort_fp32": diff, **med}


# --pair: only these alternate (the others are built for the error column, not timed)
PAIR = ("ort int8 per-tensor", "edgeseq int8, int8 activations",
        "edgeseq int8, int7 activations")


def lstm_case(hidden: int, steps: int, repeats: int, pair: bool = False) -> dict:
    from edgeseq.commands._benchmark import _graph, onnx_model
    graph = _graph("lstm", hidden, hidden)
    mb = onnx_model(graph)
    x = np.random.default_rng(1).standard_normal((steps, 1, hidden)).astype(np.float32)
    z = np.zeros((1, 1, hidden), np.float32)
    feed = {"x": x, "h0": z, "c0": z}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {label: build(graph, mb, Path(tmp)) for label, build in _rows()}
    outs = {k: np.asarray(f(x, feed)).reshape(steps, -1) for k, f in runs.items()}
    ref = outs["ort fp32"]
    wall, cpu = _alternate({k: (lambda f=f: f(x, feed)) for k, f in runs.items()
                            if not pair or k in PAIR}, repeats)
    nan = float("nan")
    wall, cpu = ({k: d.get(k, nan) for k in runs} for d in (wall, cpu))
    q = "ort int8 per-tensor"
    return {k: {"median_ms": wall[k] * 1e3, "cpu_ms": cpu[k] * 1e3,
                "x_ort_fp32": wall[k] / wall["ort fp32"], "x_ort_int8": wall[k] / wall[q],
                "cpu_x_ort_int8": cpu[k] / cpu[q],
                "max_err": float(np.abs(outs[k] - ref).max())} for k in runs}


def _alternate(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Median wall and median process-CPU seconds per call, calls interleaved A B C A B C.
    On a shared machine the wall time includes time the OS gave other processes; the
    process CPU time (all threads of this process) does not."""
    for f in fns.values():
        f()
        f()
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            c, t = time.process_time(), time.perf_counter()
            f()
            wall[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
    return ({k: float(np.median(v)) for k, v in wall.items()},
            {k: float(np.median(v)) for k, v in cpu.items()})


def _table(title: str, rows: dict) -> str:
    head = ("runtime", "wall ms", "× ORT fp32", "× ORT int8", "CPU ms", "CPU × ORT int8",
            "max |Δy| vs float")
    lines = [f"{title}", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k, r in rows.items():
        lines.append(f"| {k} | {r['median_ms']:.2f} | {r['x_ort_fp32']:.3f} | "
                     f"{r['x_ort_int8']:.2f} | {r['cpu_ms']:.2f} | {r['cpu_x_ort_int8']:.2f} | "
                     f"{r['max_err']:.2e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="7 repeats instead of 21")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--sizes", default="1024,256", help="LSTM sizes (inputs = units)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--haswell", action="store_true",
                    help="also run in a child as on an AVX2-only CPU (--avx2)")
    ap.add_argument("--avx2", action="store_true",
                    help="run as on an AVX2-only CPU: Numba for haswell, CPUID masked for "
                         "onnxruntime (fails where CPUID faulting is absent)")
    ap.add_argument("--no-cpuid-mask", action="store_true",
                    help="with --avx2: Numba for haswell only, onnxruntime on its host ISA")
    ap.add_argument("--no-silero", action="store_true", help="skip the silero int8 stream")
    ap.add_argument("--pair", action="store_true",
                    help="time only edgeseq int8 (int8 and int7 activations, generated code) "
                         "against onnxruntime int8 per-tensor (no other model between their "
                         "calls)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    capped = as_avx2(mask=not args.no_cpuid_mask) if args.avx2 else "host ISA"
    warnings.filterwarnings("ignore", message=".*initial state.*not given")   # zeros, as ORT's
    repeats = args.repeats or (7 if args.quick else 21)
    from edgeseq.runtime.kernels import s8dot
    from edgeseq.runtime.kernels.cpu import numba_target
    target = numba_target()
    ort_kernel = ort_u8s8_kernel()
    if args.avx2 and not args.no_cpuid_mask:
        import cpuid_mask
        if not cpuid_mask.handler_installed():     # a later CPUID would crash, not mask
            raise SystemExit("--avx2: a library replaced the CPUID-mask SIGSEGV handler")
    print(f"edgeseq: Numba CPU {target.cpu}, int8 kernels {s8dot.CHOSEN.name} (int7: "
          f"{s8dot.CHOSEN7.name}); onnxruntime: "
          f"{ort_kernel}; {capped}", flush=True)
    result = {"cpu": target.cpu, "formulation": s8dot.CHOSEN.name,
              "formulation_int7": s8dot.CHOSEN7.name, "ort_kernel": ort_kernel,
              "isa": capped,
              "load": os.getloadavg(), "repeats": repeats, "cases": {}}
    for h in (int(s) for s in args.sizes.split(",")):
        rows = lstm_case(h, args.steps, repeats, args.pair)
        result["cases"][f"lstm{h}"] = rows
        print(_table(f"\nLSTM {h}x{h}, T={args.steps}, batch 1, 1 thread; Numba CPU "
                     f"{target.cpu}, int8 kernels: {s8dot.CHOSEN.name} (int7: "
                     f"{s8dot.CHOSEN7.name}); onnxruntime "
                     f"{ort_kernel}; load "
                     f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}", rows), flush=True)
    if not args.no_silero:
        r = result["silero_int8_stream"] = silero_stream(2.0 if args.quick else 6.0)
        us = {k: r[k] * 1e6 for k in ("generated", "interpreter", "ort fp32")}
        print(f"\nsilero-vad int8 artifact, one 576-sample frame per Stream.push (median of "
              f"alternating calls; load {', '.join(f'{v:.1f}' for v in os.getloadavg())})\n"
              f"| runtime | us / push | × ORT fp32 |\n|---|---|---|\n" + "\n".join(
                  f"| {k} | {v:.1f} | {v / us['ort fp32']:.2f} |" for k, v in us.items())
              + f"\nmax |Δp| vs ORT fp32 (float model), first frame: "
              f"{r['diff_vs_ort_fp32']:.1e}", flush=True)
    if args.haswell:
        import cpuid_mask
        why = cpuid_mask.available()
        child = [sys.executable, __file__, "--avx2", "--no-silero", "--sizes", args.sizes,
                 "--steps", str(args.steps), "--repeats", str(repeats)] \
            + ["--pair"] * args.pair
        if why:
            print(f"\n*** {why}: onnxruntime cannot be capped to AVX2; the child below "
                  f"compiles edgeseq for haswell while onnxruntime keeps its host ISA "
                  f"(not a like-for-like comparison) ***", flush=True)
            child.append("--no-cpuid-mask")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "h.json"
            subprocess.run(child + ["--json", str(out)], check=True)
            result["haswell"] = json.loads(out.read_text())
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
