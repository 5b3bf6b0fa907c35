"""edgeseq vs onnxruntime, side by side in one process (`edgeseq bench`, `tools/bench.py`).

Both sides run the same random weights: the edgeseq Graph comes from edgeseq.testing and the
ONNX model is built here with onnx.helper from those arrays (gate blocks reordered to ONNX's
i,o,f,c / z,r,h), independent of the ONNX converter. Calls alternate A B C A B C ... and the
table shows medians after warm-up; ratio = edgeseq / onnxruntime with one thread.
Cold start (load + first result, with empty and then warm caches) runs in subprocesses.

    python tools/bench.py [--quick] [--json PATH] [--cases lstm,stream,...,silero,cold]

edgeseq pins NumPy's BLAS to one thread per call (runtime/threads.py), so "ORT 1 thread" is
the like-for-like column; onnxruntime with all threads is shown beside it.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LSTM_ORDER = [0, 3, 1, 2]      # edgeseq i,f,c,o -> ONNX i,o,f,c


def _blocks(w: np.ndarray, n: int, order: list[int]) -> np.ndarray:
    """Reorder gate blocks along axis 1 of a [D, n*H, ...] array."""
    parts = np.split(w, n, axis=1)
    return np.concatenate([parts[k] for k in order], axis=1)


def onnx_model(graph, opset: int = 14):
    """A one-node ONNX LSTM/GRU with the graph's weights (time-major, x [T, N, I]), plus
    initial_h/initial_c inputs so a step-by-step driver can feed the state back."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    node = graph.nodes[0]
    a = node.attrs
    op = node.op.value
    hs = a["hidden_size"]
    w = {k: graph.constants[v] for k, v in node.weights.items()}
    if op == "LSTM":
        W, R = _blocks(w["w_x"], 4, LSTM_ORDER), _blocks(w["w_h"], 4, LSTM_ORDER)
        b = _blocks(w["b"], 4, LSTM_ORDER)
        B = np.concatenate([b, np.zeros_like(b)], axis=1)
    else:
        W, R = w["w_x"], w["w_h"]
        B = np.concatenate([w["b_x"], w["b_h"]], axis=1)
    n_in = W.shape[2]
    inits = [numpy_helper.from_array(np.ascontiguousarray(t, np.float32), n)
             for t, n in ((W, "W"), (R, "R"), (B, "B"))]
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "N", n_in]),
           helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, "N", hs])]
    node_in = ["x", "W", "R", "B", "", "h0"]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", 1, "N", hs]),
            helper.make_tensor_value_info("y_h", TensorProto.FLOAT, [1, "N", hs])]
    node_out = ["y", "y_h"]
    kw = {"hidden_size": hs}
    if op == "LSTM":
        ins.append(helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, "N", hs]))
        node_in.append("c0")
        outs.append(helper.make_tensor_value_info("y_c", TensorProto.FLOAT, [1, "N", hs]))
        node_out.append("y_c")
    else:
        kw["linear_before_reset"] = int(a["linear_before_reset"])
    n = helper.make_node(op, node_in, node_out, **kw)
    g = helper.make_graph([n], "bench", ins, outs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m.SerializeToString()


def ort_session(model_bytes: bytes, threads: int | None):
    import onnxruntime as ort
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def alternate(fns: dict, repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each fn (calls interleaved A B C A B C), plus the minimum
    under "<name>:min": on a shared, loaded machine the minimum is the robust statistic."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    out = {k: statistics.median(v) for k, v in times.items()}
    out.update({f"{k}:min": min(v) for k, v in times.items()})
    return out


def _graph(kind: str, n_in: int, hs: int, seed: int = 0):
    from edgeseq import testing
    rng = np.random.default_rng(seed)
    if kind == "lstm":
        return testing.lstm_graph(rng, n_in, hs, initial_state=True)
    return testing.gru_graph(rng, n_in, hs, linear_before_reset=True, initial_state=True)


def _sides(graph):
    from edgeseq.runtime import Model
    mb = onnx_model(graph)
    return Model(graph), ort_session(mb, 1), ort_session(mb, None)


def case_full(kind, n_in, hs, t_len, n_batch, repeats, warmup):
    """Whole sequence per call."""
    graph = _graph(kind, n_in, hs)
    model, s1, sall = _sides(graph)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((t_len, n_batch, n_in)).astype(np.float32)
    z = np.zeros((1, n_batch, hs), np.float32)
    feed = {"x": x, "h0": z} | ({"c0": z} if kind == "lstm" else {})
    ours = model.run({"x": x})["y"]
    theirs = s1.run(["y"], feed)[0]
    err = float(np.max(np.abs(ours - theirs)))
    t = alternate({"edgeseq": lambda: model.run({"x": x}),
                   "ort1": lambda: s1.run(None, feed),
                   "ort_all": lambda: sall.run(None, feed)}, repeats, warmup)
    return t, err


def case_stream(kind, n_in, hs, n_steps, repeats, warmup):
    """One step per call: edgeseq Stream.push vs onnxruntime run with h/c fed back."""
    graph = _graph(kind, n_in, hs)
    model, s1, sall = _sides(graph)
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((n_steps, 1, 1, n_in)).astype(np.float32)
    stream = model.stream()
    st = {"k": 0}
    z = np.zeros((1, 1, hs), np.float32)
    lstm = kind == "lstm"
    ort_state = {1: [z, z], 0: [z, z]}

    def ours():
        k = st["k"] = (st["k"] + 1) % n_steps
        stream.push({"x": xs[k]})

    def theirs(sess, key):
        def f():
            k = st["k"]
            h, c = ort_state[key]
            feed = {"x": xs[k], "h0": h}
            if lstm:
                feed["c0"] = c
                _, h, c = sess.run(None, feed)
            else:
                _, h = sess.run(None, feed)
            ort_state[key] = [h, c]
        return f
    # correctness of the step drivers: same sequence, same final state
    stream.reset()
    for k in range(n_steps):
        stream.push({"x": xs[k]})
        theirs(s1, 1)() if not st.update(k=k) else None
    err = float(np.max(np.abs(stream.state[graph.nodes[0].name]["h"] - ort_state[1][0])))
    stream.reset()
    t = alternate({"edgeseq": ours, "ort1": theirs(s1, 1), "ort_all": theirs(sall, 0)},
                  repeats, warmup)
    return t, err


def case_silero(repeats: int, warmup: int) -> tuple:
    """silero-vad's sequence model (Conv front end + LSTM 128), one 32 ms frame per call:
    Stream.push vs onnxruntime with h/c fed back. Returns None if silero-vad is missing."""
    from edgeseq.commands._silero import silero_onnx
    try:
        path = silero_onnx()
    except FileNotFoundError:
        return None
    from edgeseq.converters.onnx import convert
    from edgeseq.runtime import Model
    model = Model(convert(path))
    mb = path.read_bytes()
    s1, sall = ort_session(mb, 1), ort_session(mb, None)
    frames = np.random.default_rng(3).uniform(-0.3, 0.3, (64, 1, 576)).astype(np.float32)
    stream = model.stream()
    z = np.zeros((1, 1, 128), np.float32)
    state = {1: (z, z), 0: (z, z)}
    k = {"i": 0}

    def ours():
        k["i"] = (k["i"] + 1) % len(frames)
        stream.push({"input": frames[k["i"]]})

    def theirs(sess, key):
        def f():
            h, c = state[key]
            _, h, c = sess.run(None, {"input": frames[k["i"]], "h": h, "c": c})
            state[key] = (h, c)
        return f
    want = s1.run(None, {"input": frames[:, 0], "h": z, "c": z})[0]
    got = model.run({"input": frames[:, 0]})["speech_probs"]
    err = float(np.max(np.abs(got - want)))
    return alternate({"edgeseq": ours, "ort1": theirs(s1, 1), "ort_all": theirs(sall, 0)},
                     repeats, warmup), err


COLD_SNIPPET = """
import sys, time
t0 = time.perf_counter()
import numpy as np
import edgeseq
m = edgeseq.load(sys.argv[1])
feed = {}
for spec in m.inputs:
    if spec.optional:
        continue
    shape = tuple(d if isinstance(d, int) else (1 if d == "N" else 100) for d in spec.shape)
    feed[spec.name] = np.zeros(shape, np.float32)
m.run(feed)
print(time.perf_counter() - t0)
"""


WARM_RUNS = 5       # fresh processes timed with warm caches (their median is reported)


def case_cold(graph) -> dict:
    """Import + load + first result in a fresh process, with empty and then warm caches
    (private Numba and generated-code cache directories, so other runs do not count);
    warm: the median of WARM_RUNS processes."""
    from edgeseq import artifact
    with tempfile.TemporaryDirectory() as d:
        path = artifact.save(graph, Path(d) / "m.eseq")
        env = dict(os.environ, NUMBA_CACHE_DIR=str(Path(d) / "numba_cache"),
                   EDGESEQ_CACHE_DIR=str(Path(d) / "edgeseq_cache"))

        def once() -> float:
            r = subprocess.run([sys.executable, "-c", COLD_SNIPPET, str(path)], env=env,
                               capture_output=True, text=True, check=True)
            return float(r.stdout.strip().splitlines()[-1])
        empty = once()
        return {"empty_cache": empty,
                "warm_cache": statistics.median([once() for _ in range(WARM_RUNS)])}


def _silero_graph():
    from edgeseq.commands._silero import silero_onnx
    try:
        path = silero_onnx()
    except FileNotFoundError:
        return None
    from edgeseq.converters.onnx import convert
    return convert(path)


def run(args, cases: set[str]) -> int:
    """Run the chosen cases (checked by `edgeseq.commands.bench`, which owns the options)."""
    q = args.quick
    rep_full, rep_step = (21, 300) if q else (61, 2000)
    sizes = [(64, 128), (256, 256), (1024, 1024)] if q else \
        [(64, 128), (256, 256), (512, 512), (1024, 1024)]
    rows = []

    def add(name, t, err, target):
        row = {"case": name, "edgeseq_s": t["edgeseq"], "ort1_s": t["ort1"],
               "ort_all_s": t["ort_all"], "ratio_vs_ort1": t["edgeseq"] / t["ort1"],
               "edgeseq_min_s": t["edgeseq:min"], "ort1_min_s": t["ort1:min"],
               "ort_all_min_s": t["ort_all:min"],
               "ratio_of_mins_vs_ort1": t["edgeseq:min"] / t["ort1:min"],
               "max_abs_diff_vs_ort": err, "target_ratio": target}
        rows.append(row)
        print(f"{name:<28} {_fmt(t['edgeseq']):>10} {_fmt(t['ort1']):>10} "
              f"{_fmt(t['ort_all']):>10} {row['ratio_vs_ort1']:>6.2f} "
              f"{row['ratio_of_mins_vs_ort1']:>6.2f}  {target:>6}  {err:.1e}", flush=True)

    print("medians of alternating calls; 'ratio' = edgeseq / ORT 1 thread (medians), "
          "'r(min)' = the same for the fastest call of each")
    print(f"{'case':<28} {'edgeseq':>10} {'ORT 1thr':>10} {'ORT all':>10} {'ratio':>6} "
          f"{'r(min)':>6}  {'target':>6}  max|diff|")
    if "lstm" in cases:
        for n_in, hs in sizes:
            reps = max(5, rep_full // (4 if hs >= 1024 else 1))
            t, e = case_full("lstm", n_in, hs, 100, 1, reps, 3)
            add(f"LSTM {n_in}x{hs} T=100 N=1", t, e, "<=0.8")
    if "stream" in cases:
        for n_in, hs in sizes:
            reps = max(50, rep_step // (8 if hs >= 1024 else 1))
            t, e = case_stream("lstm", n_in, hs, 100, reps, 20)
            add(f"LSTM {n_in}x{hs} 1 step/call", t, e, "<=0.5" if hs <= 256 else "<=0.85")
    if "gru" in cases:
        t, e = case_full("gru", 256, 256, 100, 1, rep_full, 3)
        add("GRU 256x256 T=100 N=1", t, e, "<=1.0")
    if "batch" in cases:
        t, e = case_full("lstm", 256, 256, 100, 16, max(5, rep_full // 2), 2)
        add("LSTM 256x256 T=100 N=16", t, e, "<=1.0")
    if "overhead" in cases:
        t, e = case_stream("lstm", 8, 8, 100, rep_step * 5, 200)
        add("LSTM 8x8 1 step/call", t, e, "<=5us")
    if "silero" in cases:
        res = case_silero(rep_step, 20)
        if res is None:
            print("silero-vad per frame: skipped (pip install --no-deps silero-vad==6.2.3)")
        else:
            add("silero-vad 1 frame/call", *res, "-")
    cold = None
    if "cold" in cases:
        cold = {}
        for label, graph in (("lstm_256", _graph("lstm", 256, 256)), ("silero", _silero_graph())):
            if graph is None:
                continue
            cold[label] = c = case_cold(graph)
            print(f"cold start {label} (import + load + first result, fresh process): empty "
                  f"caches {c['empty_cache']:.2f} s, warm caches {c['warm_cache']:.2f} s "
                  f"(median of {WARM_RUNS})", flush=True)
    if args.json:
        import numba
        import onnxruntime

        from edgeseq.runtime.threads import blas_pinning
        meta = {"python": platform.python_version(), "machine": platform.machine(),
                "cpus": os.cpu_count(), "numba": numba.__version__,
                "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
                "blas_threads": blas_pinning(), "quick": q}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows, "cold_start_s": cold},
                                        indent=2))
        print(f"wrote {args.json}")
    return 0


def _fmt(s: float) -> str:
    return f"{s * 1e6:.1f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms"
