"""End-to-end check of edgeseq across machines: x86 writes artifacts and outputs, aarch64 compares.

    python tools/arm/e2e_check.py emit DIR    # on the x86 host: artifacts, inputs, x86 outputs
    python tools/arm/e2e_check.py check DIR   # on aarch64: run the same, compare, exit 0/1

Cases: the silero VAD sequence model (ONNX, from the `silero-vad` package), the demo classifier
(edgeseq/data/demo_classifier.onnx) and a few random float32 recurrent test models built with
edgeseq.testing. `emit` converts each model, saves it as .eseq, and records the edgeseq runtime
output, the NumPy float64 reference output and (for ONNX models) the onnxruntime output.
`check` loads the x86-made .eseq (what a board does), runs it with the runtime there, converts
the ONNX models again there, runs onnxruntime there, and compares:

    runtime here vs runtime x86         <= 1e-6 * max(1, max|x86 output|), per output (issue
                                        9's 1e-6 is for unit-scale values; an LSTM cell state
                                        of 12.7 has a float32 spacing of 9.5e-7)
    runtime here vs onnxruntime here    <= tests/conftest.py TOL for the model
    runtime here vs float64 reference   <= TOL["float32"] (silero: TOL["silero_prob"])
    converted here vs x86 artifact      <= 1e-6 (both run here)

Timings are wall clock on this machine; under qemu they are emulation, not board speed.
No pytest: this runs inside a minimal emulated root.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

# Mirrors tests/conftest.py TOL (tests cannot import conftest; this script is not a test).
TOL_FLOAT32 = 1e-5
TOL_SILERO_PROB = 1e-4
TOL_CROSS_MACHINE = 1e-6     # float32 results on aarch64 match x86 within 1e-6
SEED = 20261125


# ---- cases ------------------------------------------------------------------------------------
def _silero_path() -> Path:
    # NOTE: find_spec, not import: silero_vad/__init__ imports torch, which a board lacks
    import importlib.util
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the silero-vad package is not installed "
                                "(pip install --no-deps silero-vad)")
    return Path(spec.submodule_search_locations[0]) / "data" / "silero_vad_16k_sequence.onnx"


def _demo_path() -> Path:
    import edgeseq
    return Path(edgeseq.__file__).parent / "data" / "demo_classifier.onnx"


def _silero_inputs(n_frames: int = 62) -> dict[str, np.ndarray]:
    """~2 s of 16 kHz synthetic audio (noise, then a voiced-like harmonic burst, then noise),
    framed the way silero-vad's wrapper frames it: 512 new samples + 64 context samples."""
    rng = np.random.default_rng(SEED)
    sr, hop, ctx = 16000, 512, 64
    n = n_frames * hop
    t = np.arange(n) / sr
    audio = 0.01 * rng.standard_normal(n)
    burst = (t > 0.6) & (t < 1.4)
    f0 = 140 + 20 * np.sin(2 * np.pi * 3 * t)
    voiced = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / sr) / k for k in range(1, 8))
    audio[burst] += 0.3 * voiced[burst] * np.hanning(burst.sum())
    padded = np.concatenate([np.zeros(ctx), audio])
    frames = np.stack([padded[i * hop: i * hop + hop + ctx] for i in range(n_frames)])
    return {"input": frames.astype(np.float32),
            "h": np.zeros((1, 1, 128), np.float32), "c": np.zeros((1, 1, 128), np.float32)}


def _demo_inputs() -> dict[str, np.ndarray]:
    import edgeseq
    d = np.load(Path(edgeseq.__file__).parent / "data" / "demo_test.npz")
    return {"x": np.ascontiguousarray(d["x"][:16], dtype=np.float32)}


def _test_model_graphs():
    """Random float32 models covering the kernel families: (name, graph, inputs)."""
    from edgeseq import testing
    rng = np.random.default_rng(SEED)
    specs = [
        ("lstm_fwd", testing.lstm_graph, dict(n_input=12, hidden=32, initial_state=True)),
        ("lstm_bidir_proj_peep_lens", testing.lstm_graph,
         dict(n_input=8, hidden=24, direction="bidirectional", proj_size=12, peephole=True,
              seq_lens=True)),
        ("lstm_cifg_ln_clip_bf", testing.lstm_graph,
         dict(n_input=8, hidden=16, coupled_gate="input", layer_norm=True, cell_clip=3.0,
              batch_first=True)),
        ("gru_lbr0", testing.gru_graph, dict(n_input=10, hidden=32, linear_before_reset=False)),
        ("gru_lbr1_reverse_lens", testing.gru_graph,
         dict(n_input=10, hidden=20, linear_before_reset=True, direction="reverse",
              seq_lens=True)),
        ("rnn_tanh", testing.rnn_graph, dict(n_input=6, hidden=16, initial_state=True)),
    ]
    for name, build, kw in specs:
        n_input, hidden = kw.pop("n_input"), kw.pop("hidden")
        g = build(rng, n_input, hidden, **kw)
        yield name, g, testing.random_inputs(g, rng, T=40, N=2)


# ---- running ----------------------------------------------------------------------------------
def _timed(fn, repeat: int = 1):
    """(result, seconds of the first call, median seconds of `repeat` further calls or None)."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    if repeat <= 0:
        return out, first, None
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return out, first, statistics.median(times)


def _run_runtime(graph, inputs, repeat):
    from edgeseq.runtime import Model
    model, compile_s, _ = _timed(lambda: Model(graph), 0)
    out, first_s, steady_s = _timed(lambda: model.run(dict(inputs)), repeat)
    return {k: np.asarray(v) for k, v in out.items()}, {
        "compile_s": compile_s, "first_run_s": first_s, "run_s": steady_s}


def _run_ort(onnx_path, inputs, repeat):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    out, first_s, steady_s = _timed(lambda: sess.run(names, dict(inputs)), repeat)
    return dict(zip(names, out)), {"first_run_s": first_s, "run_s": steady_s}


def _run_reference(graph, inputs):
    from edgeseq import reference
    return {k: np.asarray(v) for k, v in reference.run(graph, dict(inputs)).items()}


def _max_abs(a: dict, b: dict) -> float:
    keys = sorted(set(a) & set(b))
    if not keys:
        raise ValueError(f"no common outputs: {sorted(a)} vs {sorted(b)}")
    worst = 0.0
    for k in keys:
        x, y = np.asarray(a[k], np.float64), np.asarray(b[k], np.float64)
        if x.shape != y.shape:
            raise ValueError(f"output {k!r}: shape {x.shape} vs {y.shape}")
        if x.size:
            worst = max(worst, float(np.max(np.abs(x - y))))
    return worst


def _per_output(a: dict, ref: dict) -> dict:
    """output -> (max abs diff, max abs of the reference output)."""
    out = {}
    for k in sorted(set(a) & set(ref)):
        x, y = np.asarray(a[k], np.float64), np.asarray(ref[k], np.float64)
        out[k] = (float(np.max(np.abs(x - y))) if x.size else 0.0,
                  float(np.max(np.abs(y))) if y.size else 0.0)
    return out


def _save(path: Path, arrays: dict) -> None:
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})


def _load(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _cases():
    """(name, graph-producing callable, inputs, onnx path or None, ort-vs-runtime tolerance)."""
    from edgeseq.converters import onnx as onnx_conv
    sil, demo = _silero_path(), _demo_path()
    yield "silero_vad_16k_sequence", lambda: onnx_conv.convert(sil), _silero_inputs(), sil, TOL_SILERO_PROB
    if demo.exists():
        yield "demo_classifier", lambda: onnx_conv.convert(demo), _demo_inputs(), demo, TOL_FLOAT32
    for name, g, inputs in _test_model_graphs():
        yield name, (lambda g=g: g), inputs, None, None


def _machine() -> dict:
    import numba
    import llvmlite.binding as llvm
    info = {"machine": platform.machine(), "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__}
    try:
        info["llvm_cpu"] = llvm.get_host_cpu_name()
    except Exception as e:     # informational only
        info["llvm_cpu"] = f"? ({e})"
    return info


# ---- commands ---------------------------------------------------------------------------------
def emit(out_dir: Path, repeat: int) -> int:
    from edgeseq import artifact
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"machine": _machine(), "cases": []}
    for name, make, inputs, onnx_path, tol in _cases():
        graph, convert_s, _ = _timed(make, 0)
        artifact.save(graph, out_dir / f"{name}.eseq", producer="tools/arm/e2e_check.py",
                      source=onnx_path)
        _save(out_dir / f"{name}.inputs.npz", inputs)
        rt, rt_t = _run_runtime(graph, inputs, repeat)
        _save(out_dir / f"{name}.runtime.npz", rt)
        _save(out_dir / f"{name}.reference.npz", _run_reference(graph, inputs))
        entry = {"name": name, "onnx": onnx_path.name if onnx_path else None, "tol_ort": tol,
                 "convert_s": convert_s, "runtime": rt_t}
        if onnx_path is not None:
            ort_out, ort_t = _run_ort(onnx_path, inputs, repeat)
            _save(out_dir / f"{name}.ort.npz", ort_out)
            entry["ort"] = ort_t
            entry["runtime_vs_ort"] = _max_abs(rt, ort_out)
        manifest["cases"].append(entry)
        print(f"emit {name}: runtime {rt_t['run_s']:.4f}s", flush=True)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return 0


def check(ref_dir: Path, repeat: int, artifacts_only: bool = False) -> int:
    """Compare this machine's runs with the x86 ones; artifacts_only: what a board with the bare
    `pip install edgeseq` (numpy, numba, safetensors) can do: load the x86-made .eseq files and
    run them, no converter, no onnxruntime."""
    from edgeseq import artifact
    manifest = json.loads((ref_dir / "manifest.json").read_text())
    here = _machine()
    print(f"x86 reference from: {manifest['machine']}")
    print(f"this machine:       {here}")
    if here["machine"] == manifest["machine"]["machine"]:
        print("NOTE: same architecture as the reference; this is not a cross-machine check")
    made_here = {} if artifacts_only else {name: make for name, make, _, _, _ in _cases()}
    failures, rows = [], []
    for entry in manifest["cases"]:
        name = entry["name"]
        inputs = _load(ref_dir / f"{name}.inputs.npz")
        x86_rt = _load(ref_dir / f"{name}.runtime.npz")
        graph = artifact.load(ref_dir / f"{name}.eseq")        # the x86-made artifact
        rt, rt_t = _run_runtime(graph, inputs, repeat)
        row = {"name": name, "runtime": rt_t,
               "vs_x86": _max_abs(rt, x86_rt),
               "vs_reference": _max_abs(rt, _load(ref_dir / f"{name}.reference.npz")),
               "x86_runtime_s": entry["runtime"]["run_s"]}
        row["vs_x86_per_output"] = _per_output(rt, x86_rt)
        row["vs_x86_scaled"] = max(d / max(1.0, m) for d, m in row["vs_x86_per_output"].values())
        for k, (d, m) in sorted(row["vs_x86_per_output"].items()):
            print(f"     {name}: output {k!r}: max|x86| {m:.3g}, max abs diff vs x86 {d:.3e}")
        checks = [("runtime here vs runtime x86, scaled by max(1, max|x|)", row["vs_x86_scaled"],
                   TOL_CROSS_MACHINE),
                  ("runtime here vs float64 reference", row["vs_reference"],
                   TOL_SILERO_PROB if name.startswith("silero") else TOL_FLOAT32)]
        if entry["onnx"] and not artifacts_only:
            graph_here, row["convert_s"], _ = _timed(made_here[name], 0)
            rt_here, _ = _run_runtime(graph_here, inputs, 0)
            row["converted_here_vs_x86_artifact"] = _max_abs(rt_here, rt)
            onnx_path = _silero_path() if name.startswith("silero") else _demo_path()
            ort_out, row["ort"] = _run_ort(onnx_path, inputs, repeat)
            row["vs_ort"] = _max_abs(rt, ort_out)
            row["ort_vs_ort_x86"] = _max_abs(ort_out, _load(ref_dir / f"{name}.ort.npz"))
            row["x86_ort_s"] = entry["ort"]["run_s"]
            checks += [("runtime here vs onnxruntime here", row["vs_ort"], entry["tol_ort"]),
                       ("converted here vs x86 artifact (both run here)", row["converted_here_vs_x86_artifact"],
                        TOL_CROSS_MACHINE)]
        for what, got, tol in checks:
            ok = got <= tol
            print(f"{'ok  ' if ok else 'FAIL'} {name}: {what}: max abs diff {got:.3e} (<= {tol:.0e})")
            if not ok:
                failures.append(f"{name}: {what}")
        rows.append(row)

    print("\nTimings (seconds; this machine is EMULATED when run under qemu: not board speed)")
    print(f"{'case':32s} {'compile':>8s} {'1st run':>8s} {'run':>8s} {'x86 run':>8s}"
          f" {'ort':>8s} {'x86 ort':>8s}")
    for r in rows:
        ort_s = r.get("ort", {}).get("run_s")
        print(f"{r['name']:32s} {r['runtime']['compile_s']:8.3f} {r['runtime']['first_run_s']:8.3f}"
              f" {r['runtime']['run_s']:8.4f} {r['x86_runtime_s']:8.4f}"
              f" {ort_s if ort_s is None else format(ort_s, '8.4f')!s:>8s}"
              f" {r.get('x86_ort_s') if r.get('x86_ort_s') is None else format(r['x86_ort_s'], '8.4f')!s:>8s}")
    tag = "-artifacts-only" if artifacts_only else ""
    (ref_dir.parent / f"check-{here['machine']}{tag}.json").write_text(
        json.dumps({"machine": here, "rows": rows, "failures": failures}, indent=1))
    print(f"\n{'PASS' if not failures else 'FAIL'}: {len(rows)} models, {len(failures)} failed checks")
    return 0 if not failures else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["emit", "check"])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--repeat", type=int, default=int(os.environ.get("EDGESEQ_E2E_REPEAT", "3")),
                    help="timed repetitions after the first run (median reported)")
    ap.add_argument("--artifacts-only", action="store_true",
                    help="check: only load and run the x86-made artifacts (bare `pip install "
                         "edgeseq`: no converter, no onnxruntime)")
    a = ap.parse_args(argv)
    return emit(a.dir, a.repeat) if a.mode == "emit" else check(a.dir, a.repeat, a.artifacts_only)


if __name__ == "__main__":
    sys.exit(main())
