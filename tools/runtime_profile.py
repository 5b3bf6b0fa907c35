"""Where a full-sequence LSTM run spends its time, next to onnxruntime (1 thread).

    python tools/runtime_profile.py [--input 256] [--hidden 256] [--steps 100] [--batch 1]

Prints the minimum over repeated calls (robust on a shared machine) of: Model.run, the
onnxruntime session, the input-projection GEMM (BLAS pinned to 1 thread as in Model.run),
the Numba sequence kernel alone (per step), one recurrent panel GEMV, and one Stream.push
step. Same random weights on both sides (edgeseq.commands._benchmark.onnx_model)."""
from __future__ import annotations

import argparse
import time

import numpy as np


def _min_time(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input", type=int, default=256)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=30)
    a = p.parse_args()
    from edgeseq import testing
    from edgeseq.commands._benchmark import onnx_model, ort_session
    from edgeseq.runtime import Model
    from edgeseq.runtime.kernels import lstm as lstm_kernels
    from edgeseq.runtime.kernels.panels import panel_gemv_acc

    graph = testing.lstm_graph(np.random.default_rng(0), a.input, a.hidden, initial_state=True)
    model = Model(graph)
    kernel = model.plan.steps[0].kernel
    sess = ort_session(onnx_model(graph), 1)
    rng = np.random.default_rng(1)
    t, n, h = a.steps, a.batch, a.hidden
    x = rng.standard_normal((t, n, a.input)).astype(np.float32)
    z = np.zeros((1, n, h), np.float32)
    r = a.repeats
    res = {"Model.run": _min_time(lambda: model.run({"x": x}), r),
           "onnxruntime run": _min_time(lambda: sess.run(None, {"x": x, "h0": z, "c0": z}), r)}
    buf = np.empty((t * n, 4 * h), np.float32)

    def gemm():
        saved = model._pins.pin()
        try:
            np.dot(x.reshape(t * n, -1), kernel.w_x[0].T, out=buf)
        finally:
            model._pins.restore(saved)
    res["input GEMM (BLAS, 1 thread)"] = _min_time(gemm, r)
    xw = buf.reshape(t, n, -1).copy()
    lens = np.full(n, t, np.int64)
    hs, cs, y = np.zeros((n, h), np.float32), np.zeros((n, h), np.float32), \
        np.empty((t, n, h), np.float32)
    res["sequence kernel"] = _min_time(lambda: lstm_kernels._lstm_sequence(
        xw, kernel.w_x[0], 1, kernel.w_h[0], kernel.w_proj[0], kernel.aux[0], kernel.ip[0],
        kernel.fp[0], lens, hs, cs, y), r)
    hv, out = rng.standard_normal(h).astype(np.float32), np.zeros(kernel.w_h[0].shape[0] * 16,
                                                                  np.float32)
    res["recurrent panel GEMV (1 row)"] = _min_time(lambda: panel_gemv_acc(kernel.w_h[0], hv, out),
                                                    r * 10)
    stream = model.stream()
    x1 = np.ascontiguousarray(x[:1, :1])
    res["Stream.push, 1 step, batch 1"] = _min_time(lambda: stream.push({"x": x1}), r * 10)
    print(f"LSTM {a.input}x{a.hidden}, T={t}, batch {n} (min of {r} calls)")
    for k, v in res.items():
        print(f"  {k:<32} {v * 1e6:10.1f} us")
    print(f"  {'sequence kernel per step':<32} {res['sequence kernel'] / t * 1e6:10.1f} us")
    print(f"  ratio Model.run / onnxruntime    {res['Model.run'] / res['onnxruntime run']:10.2f}")


if __name__ == "__main__":
    main()
