"""Delta on the demo classifier, whole model: generated delta code vs generated dense code.

    python tools/bench.py delta [--quick] [--budget 5] [--aeon-cache DIR] [--repeats 21]

Thresholds are calibrated per layer (runtime/delta_calibrate.py) for `--budget` x fewer MACs
in the recurrent layers on the TRAINING split of Japanese Vowels (read from the aeon wheel,
fetched once with pip into --aeon-cache, as tools/train_classifier.py does), then scored on
the 370 shipped test utterances (accuracy vs dense). Timing: batch 1 on the first 40 test
utterances, each utterance's dense and delta calls back to back (the order flips every
repeat), BLAS pinned to one thread. Printed per side: Σmin, the sum over the utterances of
each one's fastest call in wall clock and in thread CPU time (on a loaded machine most
calls are preempted; the fastest of many is the unloaded time), their ratios, and the
median of the per-pair wall-clock ratios. Rows: generated dense vs generated delta (the
target: >= 1.5x) and, for reference, the interpreter's delta path (Model(codegen=False));
and the recurrent kernels alone (delta vs dense kernels on captured inputs, through the
interpreter's calls, 40 utterances per call), which bound the whole model.

    python tools/bench.py delta --int8 [--sizes 128,1024] [--repeats 21]

int8 weights with int8 activations (docs/quant.md, "Delta kernels with int8 activations"):
on the demo classifier (thresholds calibrated on the float model as above) and on random
LSTMs of --sizes units (input = units, T = 100, a random-walk input, thresholds calibrated on
the float model for --budget), generated code, alternating calls: int8-activation delta
against the int8-activation dense model, the same int8 weights' delta with float column
updates (int16 activations), and the float delta; accuracy / error and MACs per row.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))


def _per_utterance(a, b, feeds: list, repeats: int) -> tuple:
    """(Σ min wall µs of a, of b, Σ min CPU µs of a, of b, median of the per-call wall
    ratios a/b) over the feeds, a(feed) and b(feed) alternating call by call."""
    for f in feeds:
        a(f), b(f)
    n = len(feeds)
    wall = np.full((2, n), np.inf)
    cpu = np.full((2, n), np.inf)
    ratios = []
    for r in range(repeats):
        for k, f in enumerate(feeds):
            got = []
            for side in ((0, 1) if (r + k) % 2 == 0 else (1, 0)):
                fn = a if side == 0 else b
                c = time.thread_time()
                t = time.perf_counter()
                fn(f)
                dt = time.perf_counter() - t
                wall[side, k] = min(wall[side, k], dt)
                cpu[side, k] = min(cpu[side, k], time.thread_time() - c)
                got.append((side, dt))
            d = dict(got)
            ratios.append(d[0] / d[1])
    w, c = wall.sum(axis=1) * 1e6 / n, cpu.sum(axis=1) * 1e6 / n
    return w[0], w[1], c[0], c[1], float(np.median(ratios))


def main(argv: list[str] | None = None) -> int:
    from delta_report import Timer, _blas_one_thread, speedup, train_split
    from edgeseq.converters.onnx import convert
    from edgeseq.runtime import Model
    from edgeseq.runtime.delta_calibrate import calibrate
    from edgeseq.runtime.delta_runner import DeltaRunner
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--budget", type=float, default=5.0, help="MAC reduction to calibrate for")
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--int8", action="store_true",
                    help="int8 activations: the delta kernels' integer column updates")
    ap.add_argument("--sizes", default="1024", help="--int8: random LSTM sizes (units)")
    ap.add_argument("--aeon-cache", type=Path, default=None,
                    help="folder holding (or receiving) the aeon wheel (training split)")
    args = ap.parse_args(argv)
    repeats = 7 if args.quick else args.repeats
    limits = _blas_one_thread()     # noqa: F841  (held for the whole run)
    data = ROOT / "edgeseq" / "data"
    graph = convert(data / "demo_classifier.onnx")
    model = Model(graph)
    interp = Model(graph, codegen=False)
    if model.source() is None:
        print(model.describe())
        return 1
    d = np.load(data / "demo_test.npz")
    x, y = d["x"], d["y"]
    xtr = train_split(data / "demo_test.npz", args.aeon_cache)
    t0 = time.perf_counter()
    cal = calibrate(model, {"x": xtr}, budget=args.budget)
    print(f"calibrated on {len(xtr)} training utterances in {time.perf_counter() - t0:.1f} s "
          f"({len(cal.history)} moves, met={cal.met}): " + ", ".join(
              f"{k} ({a:.4f}, {b:.4f})" for k, (a, b) in cal.thresholds.items()))
    th = cal.thresholds
    if args.int8:
        return int8_main(args, graph, th, x, y, repeats)
    if DeltaRunner.of(model).codegen_note:
        print(DeltaRunner.of(model).codegen_note)
        return 1
    dense = model.run({"x": x})
    out = model.run({"x": x}, delta=th)
    st = model.last_stats
    acc_dense = float(np.mean(dense["logits"].argmax(1) == y))
    acc_delta = float(np.mean(out["logits"].argmax(1) == y))
    ref = interp.run({"x": x}, delta=th)
    same = bool(np.array_equal(ref["logits"], out["logits"]))
    print(f"test set ({len(y)} utterances): accuracy dense {acc_dense:.4f}, delta {acc_delta:.4f};"
          f" {st.mac_reduction:.2f}x fewer MACs in the LSTMs; generated delta logits "
          f"{'==' if same else '!='} interpreter delta logits (max |diff| "
          f"{float(np.max(np.abs(ref['logits'] - out['logits']))):.2g})")
    print(st)
    feeds = [{"x": x[k:k + 1]} for k in range(40)]

    timer = Timer(interp, feeds)
    per_utt = [("whole model: generated dense / generated delta", lambda f: model.run(f),
                lambda f: model.run(f, delta=th)),
               ("whole model: generated dense / interpreter delta", lambda f: model.run(f),
                lambda f: interp.run(f, delta=th))]
    print(f"\nbatch 1, 40 utterances, {repeats} alternating repeats, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("per utterance, dense and delta back to back (order flips each repeat); Σmin: the sum "
          "over utterances of each one's fastest call (the calls no other process preempted)")
    print(f"{'':<50} {'A us':>8} {'B us':>8} {'Σmin wall':>10} {'Σmin CPU':>9} {'med pair':>9}")
    for label, a, b in per_utt:
        ta, tb, ca, cb, pairs = _per_utterance(a, b, feeds, repeats)
        print(f"{label:<50} {ta:>8.1f} {tb:>8.1f} {ta / tb:>10.2f} {ca / cb:>9.2f} "
              f"{pairs:>9.2f}", flush=True)
    ta, tb, pair, best, cpu = speedup(timer.layers(None), timer.layers(th), repeats)
    print(f"{'LSTM kernels only (interpreter calls): dense / delta':<50} {ta * 1e6 / 40:>8.1f} "
          f"{tb * 1e6 / 40:>8.1f} {best:>10.2f} {cpu:>9.2f} {pair:>9.2f}  (40 per call)")
    print(f"(load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())})")
    return 0


def _int8_models(graph) -> dict:
    """{label: Model} of the float graph, its int8 weights with float column updates
    (int16 activations) and with int8 activations: generated code each."""
    from edgeseq.quant import activations, int8
    from edgeseq.runtime import Model
    q = int8.apply(graph)[0]
    return {"float": Model(graph), "int8/16": Model(activations.apply(q, "int16")),
            "int8/8": Model(activations.apply(q, "int8"))}


def _int8_rows(models: dict, th, feeds: list, repeats: int) -> None:
    a8 = models["int8/8"]
    pairs = [("int8/8 dense / int8/8 delta", lambda f: a8.run(f), lambda f: a8.run(f, delta=th)),
             ("int8/16 delta / int8/8 delta", lambda f: models["int8/16"].run(f, delta=th),
              lambda f: a8.run(f, delta=th)),
             ("float delta / int8/8 delta", lambda f: models["float"].run(f, delta=th),
              lambda f: a8.run(f, delta=th))]
    print(f"{'A / B':<32} {'A us':>9} {'B us':>9} {'Σmin wall':>10} {'Σmin CPU':>9} "
          f"{'med pair':>9}   (load {' '.join(f'{v:.1f}' for v in os.getloadavg())})")
    for label, a, b in pairs:
        ta, tb, ca, cb, pair = _per_utterance(a, b, feeds, repeats)
        print(f"{label:<32} {ta:>9.1f} {tb:>9.1f} {ta / tb:>10.2f} {ca / cb:>9.2f} "
              f"{pair:>9.2f}", flush=True)


def _kernel_rows(k_cols: int, rows: int, repeats: int) -> None:
    """The column updates alone (`kernels.delta.absorb` on the int8 W^T, float products, vs
    `absorb8`) on the same kept columns: v̂ reset to 0 before each call, θ = 0, a share of v
    non-zero (|v_k| ≥ 0.5, so the int8 path keeps the same columns); min of repeats."""
    from edgeseq.runtime.kernels import delta as dk
    rng = np.random.default_rng(k_cols)
    wT = rng.integers(-127, 128, (k_cols, rows)).astype(np.int8)
    idx, dv = np.empty(k_cols, np.int64), np.empty(k_cols, np.float32)
    qv, acc32 = np.empty(k_cols, np.int16), np.empty(rows, np.int32)
    print(f"column updates alone, W^T {k_cols}x{rows} int8, 100 vectors per timing, min of "
          f"{repeats}:")
    for share in (0.05, 0.2, 0.5, 1.0):
        vs = []
        for _ in range(100):
            v = np.zeros(k_cols, np.float32)
            sel = rng.random(k_cols) < share
            v[sel] = np.sign(rng.standard_normal(sel.sum())) * (0.5 + rng.random(sel.sum()))
            vs.append(v)
        best = [np.inf, np.inf]
        kept = [0, 0]
        vh, acc = np.zeros(k_cols, np.float32), np.zeros(rows, np.float32)
        for r in range(repeats + 1):
            for side in ((0, 1) if r % 2 else (1, 0)):
                n = 0
                t = time.perf_counter()
                for v in vs:
                    vh[:] = 0
                    n += dk.absorb_any(side == 1, v, vh, np.float32(0), wT, acc, idx, dv, qv,
                                       acc32)
                best[side] = min(best[side], time.perf_counter() - t)
                kept[side] = n
        print(f"  {share:>4.0%} of columns (kept {kept[0] / 100:.0f} / {kept[1] / 100:.0f}): "
              f"float {best[0] * 1e4:.2f} us, int8 {best[1] * 1e4:.2f} us per vector, "
              f"int8/float {best[1] / best[0]:.2f}", flush=True)


def int8_main(args, graph, th, x, y, repeats: int) -> int:
    """The --int8 section (module docstring)."""
    from edgeseq import testing
    from edgeseq.runtime.delta_calibrate import calibrate
    from edgeseq.runtime.delta_runner import DeltaRunner
    models = _int8_models(graph)
    print("demo classifier, 370 test utterances, thresholds calibrated on the float model")
    dense = models["float"].run({"x": x})["logits"]
    for k, m in models.items():
        out = m.run({"x": x}, delta=th)["logits"]
        note = DeltaRunner.of(m).codegen_note
        print(f"  {k:<8} delta: accuracy {np.mean(out.argmax(1) == y):.4f} (dense float "
              f"{np.mean(dense.argmax(1) == y):.4f}), {m.last_stats.mac_reduction:.2f}x fewer "
              f"MACs, max |logit - float dense| {np.abs(out - dense).max():.3f}"
              + (f" [{note}]" if note else ""))
    _int8_rows(models, th, [{"x": x[k:k + 1]} for k in range(40)], repeats)
    for units in (int(s) for s in args.sizes.split(",") if s):
        rng = np.random.default_rng(units)
        g = testing.lstm_graph(rng, units, units)
        models = _int8_models(g)
        walk = np.cumsum(0.1 * rng.standard_normal((100, 4, units)), axis=0)
        xs = walk.astype(np.float32)
        cal = calibrate(models["float"], {"x": xs[:, :2]}, budget=args.budget)
        th_u = cal.thresholds
        feed = {"x": xs[:, 2:3]}
        ref = models["float"].run(feed)["y"]
        print(f"\nLSTM {units}x{units}, T=100, batch 1, thresholds {th_u} (calibrated on two "
              f"other walks, met={cal.met})")
        for k, m in models.items():
            out = m.run(feed, delta=th_u)["y"]
            print(f"  {k:<8} delta: {m.last_stats.mac_reduction:.2f}x fewer MACs, max |y - "
                  f"float dense| {np.abs(out - ref).max():.2e}")
        _int8_rows(models, th_u, [feed], max(repeats, 21))
        _kernel_rows(units, 4 * units, max(repeats, 21))
    _kernel_rows(128, 512, max(repeats, 21))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
