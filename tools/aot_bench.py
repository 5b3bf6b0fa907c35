#!/usr/bin/env python3
"""Ahead-of-time compiled artifacts vs the JIT runtime vs onnxruntime, on silero-vad.

    python tools/aot_bench.py [--runs 7] [--calls 400] [--workdir DIR]

(a) fresh process: load + first result (one 576-sample frame, zero state), whole-process wall
    time, CPU time (user + system: less sensitive to a loaded machine) and peak RSS measured
    from outside (/usr/bin/time), median of --runs runs taken in turn
    (native, JIT with a warm Numba cache, onnxruntime 1 thread); the native child asserts that
    numba and llvmlite were never imported.
(b) per call, one process: the native code and the JIT runtime's generated function
    (codegen on) on the same frames, one frame a call with h/c carried (silero streaming),
    calls alternating between the two; median per-call time and the ratio native / JIT.
The silero artifact is converted and compiled for `native` into --workdir on first use."""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

CHILD = {
    "native": """
import sys, numpy as np, edgeseq
m = edgeseq.load(sys.argv[1], native_code=True)
x = np.load(sys.argv[2])
z = np.zeros((1, 1, 128), np.float32)
p = m.run({"input": x, "h": z, "c": z})["speech_probs"]
assert type(m).__name__ == "NativeModel" and "numba" not in sys.modules \\
    and "llvmlite" not in sys.modules, sorted(k for k in sys.modules if "numba" in k)
print(float(p[0]))
""",
    "jit": """
import sys, numpy as np, edgeseq
m = edgeseq.load(sys.argv[3])
x = np.load(sys.argv[2])
z = np.zeros((1, 1, 128), np.float32)
print(float(m.run({"input": x, "h": z, "c": z})["speech_probs"][0]))
""",
    "onnxruntime": """
import sys, numpy as np, onnxruntime as ort
o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
s = ort.InferenceSession(sys.argv[4], o, providers=["CPUExecutionProvider"])
x = np.load(sys.argv[2])
z = np.zeros((1, 1, 128), np.float32)
print(float(s.run(["speech_probs"], {"input": x, "h": z, "c": z})[0][0]))
""",
}


def prepare(workdir: Path) -> tuple[Path, Path, Path, Path]:
    """(plain artifact, compiled artifact, one frame .npy, silero ONNX path)."""
    from edgeseq import artifact, compile_native
    from edgeseq.commands._silero import silero_onnx
    from edgeseq.converters.onnx import convert
    workdir.mkdir(parents=True, exist_ok=True)
    onnx_path = silero_onnx()
    plain, native = workdir / "silero.eseq", workdir / "silero_native.eseq"
    if not plain.exists():
        artifact.save(convert(onnx_path), plain, source=onnx_path)
    if not native.exists():
        t = time.perf_counter()
        compile_native(plain, native, ["native"])
        print(f"compiled {native} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    frame = workdir / "frame.npy"
    sys.path.insert(0, str(ROOT / "tools"))
    from silero_frames import speech_like_frames
    np.save(frame, speech_like_frames()[:1])
    return plain, native, frame, onnx_path


# NOTE: children use byte-code caches (__pycache__, ignored by git) as an installed package
# does; with PYTHONDONTWRITEBYTECODE every import would compile its source first
_CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def fresh(kind: str, argv: list) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds user+system, peak RSS MB) of one child process, as
    /usr/bin/time reports them
    (NOTE: not os.wait4 of a child forked from this process: Linux counts the parent's
    resident set at fork into the child's peak)."""
    import tempfile
    with tempfile.NamedTemporaryFile("r", suffix=".time") as out:
        r = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", out.name, sys.executable,
                            "-c", CHILD[kind], *argv], capture_output=True, text=True,
                           env=_CHILD_ENV)
        if r.returncode != 0:
            raise SystemExit(f"{kind} child failed:\n{r.stderr}")
        wall, user, system, rss_kb = out.read().split()[-4:]
    return float(wall), float(user) + float(system), float(rss_kb) / 1024


def per_call(plain: Path, native: Path, calls: int, frames_per_call: int = 1) -> tuple:
    """Median seconds per call (native, JIT), calls alternating, `frames_per_call` frames
    each, h/c carried from call to call."""
    import edgeseq
    sys.path.insert(0, str(ROOT / "tools"))
    from silero_frames import speech_like_frames
    frames = speech_like_frames()
    nm = edgeseq.load(native, native_code=True)
    jm = edgeseq.load(plain, codegen=True)
    z = np.zeros((1, 1, 128), np.float32)
    st = {"n": (z, z), "j": (z, z)}
    tn, tj = [], []
    for k in range(calls + 20):
        start = (k * frames_per_call) % (len(frames) - frames_per_call)
        x = frames[start:start + frames_per_call]
        for key, m, acc in (("n", nm, tn), ("j", jm, tj)) if k % 2 else \
                (("j", jm, tj), ("n", nm, tn)):
            h, c = st[key]
            t = time.perf_counter()
            out = m.run({"input": x, "h": h, "c": c})
            dt = time.perf_counter() - t
            st[key] = (out["hn"], out["cn"])
            if k >= 20:
                acc.append(dt)
    diff = np.abs(st["n"][0] - st["j"][0]).max()
    print(f"final h after {calls + 20} calls: native vs JIT max |diff| {diff:.2e}")
    return statistics.median(tn), statistics.median(tj)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--workdir", default="/tmp/edgeseq-aot-bench")
    args = ap.parse_args()
    plain, native, frame, onnx_path = prepare(Path(args.workdir))
    argv = [str(native), str(frame), str(plain), str(onnx_path)]
    for kind in CHILD:                       # warms Numba's cache and the byte-code caches
        fresh(kind, argv)
    rows: dict = {k: [] for k in CHILD}
    for _ in range(args.runs):
        for kind in CHILD:
            rows[kind].append(fresh(kind, argv))
    print(f"(a) fresh process, load + first result of silero-vad (median of {args.runs}; "
          f"load average {os.getloadavg()[0]:.1f})")
    print(f"  {'':12} {'wall s':>8} {'cpu s':>8} {'peak RSS MB':>12}")
    for kind, rs in rows.items():
        print(f"  {kind:12} " + " ".join(f"{statistics.median(r[k] for r in rs):{w}}"
                                         for k, w in ((0, "8.3f"), (1, "8.3f"), (2, "12.1f"))))
    for frames_per_call in (1, 16):
        n, j = per_call(plain, native, args.calls, frames_per_call)
        print(f"(b) per call, {frames_per_call} frame(s), alternating ({args.calls} calls "
              f"each): native {n * 1e6:.1f} us, JIT {j * 1e6:.1f} us, ratio native/JIT "
              f"{n / j:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
