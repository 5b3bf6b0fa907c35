"""edgeseq runtime vs the TFLite interpreter (ai-edge-litert), side by side in one process.

    python tools/tflite_bench.py [--quick] [--threads 1]

Models are written by tools/make_tflite_fixtures.py with random weights and converted with
edgeseq's TFLite converter, so both sides run the same model file. Calls alternate A B A B
(edgeseq.commands._benchmark.alternate); medians after warm-up, minimum beside it. Cases:
a plain LSTM and the full Android-NN cell (CIFG + peephole + layer norm + projection + clips),
float and hybrid int8; whole sequence (batch 1) and one step per call (TFLite: invoke() of a
one-step model keeping its state in variable tensors; edgeseq: Stream.push of one step).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import make_tflite_fixtures as fx  # noqa: E402

from edgeseq.commands._benchmark import alternate  # noqa: E402
from edgeseq.converters.tflite import convert  # noqa: E402
from edgeseq.converters.tflite.interpreter import TfliteSession  # noqa: E402
from edgeseq.runtime import Model  # noqa: E402

CELLS = {
    "plain": dict(),
    "full": dict(cifg=True, peephole=True, layer_norm=True, proj_bias=True, cell_clip=10.0,
                 proj_clip=3.0),
}


def _spec(cell: str, n_in: int, hs: int, t_len: int, hybrid: str) -> fx.LstmSpec:
    extra = dict(CELLS[cell])
    if cell == "full":
        extra["n_output"] = hs // 2
    return fx.LstmSpec(n_input=n_in, n_cell=hs, n_batch=1, n_time=t_len, time_major=True,
                       hybrid=hybrid, **extra)


def bench_case(tmp: Path, cell: str, hybrid: str, n_in: int, hs: int, t_len: int,
               repeats: int, warmup: int, threads: int) -> list[dict]:
    rng = np.random.default_rng(0)
    s = _spec(cell, n_in, hs, t_len, hybrid)
    w = fx.random_lstm_weights(rng, s, scale=1.0 / np.sqrt(hs))
    rows = []
    # whole sequence
    path = tmp / f"{cell}_{hybrid or 'float'}_seq.tflite"
    path.write_bytes(fx.unidirectional_lstm(s, w))
    sess, model = TfliteSession(path, num_threads=threads), Model(convert(path))
    x = rng.standard_normal(fx._x_shape(s)).astype(np.float32)
    err = float(np.max(np.abs(model.run({"x": x})["y"] - sess.run({"x": x})["y"])))
    t = alternate({"edgeseq": lambda: model.run({"x": x}), "tflite": lambda: sess.run({"x": x})},
                  repeats, warmup)
    rows.append(dict(case=f"{cell} {hybrid or 'float'} seq T={t_len}", err=err, **t))
    # one step per call, state carried by each side
    s1 = fx.replace(s, n_time=1)
    path1 = tmp / f"{cell}_{hybrid or 'float'}_step.tflite"
    path1.write_bytes(fx.unidirectional_lstm(s1, w))
    sess1, stream = TfliteSession(path1, num_threads=threads), Model(convert(path1)).stream()
    xs = rng.standard_normal((64, 1, 1, n_in)).astype(np.float32)
    k = {"ours": 0, "theirs": 0}

    def ours():
        k["ours"] = (k["ours"] + 1) % len(xs)
        stream.push({"x": xs[k["ours"]]})

    def theirs():
        k["theirs"] = (k["theirs"] + 1) % len(xs)
        sess1.run({"x": xs[k["theirs"]]})

    t = alternate({"edgeseq": ours, "tflite": theirs}, repeats * 4, warmup * 4)
    rows.append(dict(case=f"{cell} {hybrid or 'float'} step", err=float("nan"), **t))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--threads", type=int, default=1, help="TFLite interpreter threads")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--inputs", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100)
    a = ap.parse_args(argv)
    repeats, warmup = (15, 3) if a.quick else (60, 10)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for cell in CELLS:
            for hybrid in ("", "sym"):
                rows += bench_case(Path(d), cell, hybrid, a.inputs, a.hidden, a.steps,
                                   repeats, warmup, a.threads)
    print(f"n_input {a.inputs}, n_cell {a.hidden} (full cell: projection {a.hidden // 2}), "
          f"batch 1; TFLite threads {a.threads}; medians (min) in microseconds")
    print("| case | edgeseq | TFLite | ratio edgeseq/TFLite: median (min) | max abs diff |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['edgeseq'] * 1e6:.0f} ({r['edgeseq:min'] * 1e6:.0f}) | "
              f"{r['tflite'] * 1e6:.0f} ({r['tflite:min'] * 1e6:.0f}) | "
              f"{r['edgeseq'] / r['tflite']:.2f} ({r['edgeseq:min'] / r['tflite:min']:.2f}) | "
              f"{r['err']:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
