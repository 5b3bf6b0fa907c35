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


if __name__ == "__main__":
    raise SystemExit(main())
