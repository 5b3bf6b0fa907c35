"""int8 benchmark: edgeseq's int8 LSTM (int8 and int16 activations) vs onnxruntime's
quantize_dynamic (DynamicQuantizeLSTM, per-tensor and per-channel) and onnxruntime fp32, one
thread each, calls alternating in one process; time ratios and max error vs the float model.

    python tools/bench.py int8 [--quick] [--repeats N] [--sizes 1024,256] [--steps 100]
                               [--haswell] [--json PATH]

--haswell runs the same in a child process whose Numba compiles for an AVX2-only CPU
(NUMBA_CPU_NAME=haswell plus its feature list: Numba applies the CPU name alone with the
host's features). The error reference is onnxruntime fp32 on the float model (same weights,
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


def _ort_int8(model_bytes: bytes, tmp: Path, per_channel: bool) -> bytes:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    logging.getLogger().setLevel(logging.ERROR)      # its "consider pre-processing" advice
    src, out = tmp / "f.onnx", tmp / f"q{int(per_channel)}.onnx"
    src.write_bytes(model_bytes)
    quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, per_channel=per_channel)
    return out.read_bytes()


def _edgeseq_int8(graph, activations: str):
    from edgeseq.quant.pipeline import compress
    from edgeseq.runtime import Model
    return Model(compress(graph, weights="int8", activations=activations)[0])


# one row per runtime: (label, builder(graph, fp32 onnx bytes, tmp dir) -> run(x, feed))
def _rows():
    from edgeseq.commands._benchmark import ort_session

    def ort(make_bytes):
        def build(graph, mb, tmp):
            s = ort_session(make_bytes(mb, tmp), 1)
            return lambda x, feed: s.run(["y"], feed)[0][:, 0]
        return build

    def ours(activations):
        def build(graph, mb, tmp):
            m = _edgeseq_int8(graph, activations)
            return lambda x, feed: m.run({"x": x})["y"]
        return build

    return [("ort fp32", ort(lambda mb, tmp: mb)),
            ("ort int8 per-tensor", ort(lambda mb, tmp: _ort_int8(mb, tmp, False))),
            ("ort int8 per-channel", ort(lambda mb, tmp: _ort_int8(mb, tmp, True))),
            ("edgeseq int8, int8 activations", ours("int8")),
            ("edgeseq int8, int16 activations", ours("int16"))]


def lstm_case(hidden: int, steps: int, repeats: int) -> dict:
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
    wall, cpu = _alternate({k: (lambda f=f: f(x, feed)) for k, f in runs.items()}, repeats)
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
                    help="also run in a child compiling for an AVX2-only CPU")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*initial state.*not given")   # zeros, as ORT's
    repeats = args.repeats or (7 if args.quick else 21)
    from edgeseq.runtime.kernels import s8dot
    from edgeseq.runtime.kernels.cpu import numba_target
    target = numba_target()
    result = {"cpu": target.cpu, "formulation": s8dot.CHOSEN.name,
              "load": os.getloadavg(), "repeats": repeats, "cases": {}}
    for h in (int(s) for s in args.sizes.split(",")):
        rows = lstm_case(h, args.steps, repeats)
        result["cases"][f"lstm{h}"] = rows
        print(_table(f"\nLSTM {h}x{h}, T={args.steps}, batch 1, 1 thread; Numba CPU "
                     f"{target.cpu}, int8 kernels: {s8dot.CHOSEN.name}; load "
                     f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}", rows), flush=True)
    if args.haswell:
        env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=HASWELL_FEATURES)
        child = [sys.executable, __file__, "--sizes", args.sizes, "--steps", str(args.steps),
                 "--repeats", str(repeats)]
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "h.json"
            subprocess.run(child + ["--json", str(out)], env=env, check=True)
            result["haswell"] = json.loads(out.read_text())
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
