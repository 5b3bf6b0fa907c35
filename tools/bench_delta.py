"""Delta on the demo classifier, whole model: generated delta code vs generated dense code.

    python tools/bench.py delta [--quick] [--budget 5] [--aeon-cache DIR] [--repeats 21]

Thresholds are calibrated per layer (runtime/delta_calibrate.py) for `--budget` x fewer MACs
in the recurrent layers on the TRAINING split of Japanese Vowels (read from the aeon wheel,
fetched once with pip into --aeon-cache, as tools/train_classifier.py does), then scored on
the 370 shipped test utterances (accuracy vs dense). Timing: batch 1 over the first 40 test
utterances per call, dense and delta calls alternating in one process (the order flips every
repeat), BLAS pinned to one thread; printed: median of the per-pair wall-clock ratios,
min/min wall clock and min/min thread CPU time (CPU time does not count waiting for a core
on a loaded machine). Rows: generated dense vs generated delta (the target: >= 1.5x) and, for
reference, the interpreter's delta path (Model(codegen=False)); and the recurrent kernels
alone (the delta kernels vs the dense ones on captured inputs), which bound the whole model.
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

    def runs(m, delta=None):
        if delta is None:
            return lambda: [m.run(f) for f in feeds]
        return lambda: [m.run(f, delta=delta) for f in feeds]
    timer = Timer(interp, feeds)
    rows = [("whole model: generated dense / generated delta", runs(model), runs(model, th)),
            ("whole model: generated dense / interpreter delta", runs(model), runs(interp, th)),
            ("LSTM kernels only: dense / delta", timer.layers(None), timer.layers(th))]
    print(f"\nbatch 1, 40 utterances per call, {repeats} alternating repeats, "
          f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"{'':<50} {'A ms':>7} {'B ms':>7} {'A/B med':>8} {'min/min':>8} {'CPU':>6}")
    for label, a, b in rows:
        ta, tb, pair, best, cpu = speedup(a, b, repeats)
        print(f"{label:<50} {ta * 1e3:>7.2f} {tb * 1e3:>7.2f} {pair:>8.2f} {best:>8.2f} "
              f"{cpu:>6.2f}", flush=True)
    print(f"(load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
