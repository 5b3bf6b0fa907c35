"""int8 benchmarks beyond the LSTM rows: GRU int8 vs onnxruntime fp32 (onnxruntime has no
int8 GRU), and TFLite hybrid LSTMs (int8 weights) vs the TFLite interpreter, 1 thread.

    python tools/bench_int8_rnn.py [--quick] [--rounds 3] [--only gru,tflite]

Every row alternates the two sides call by call in one process
(edgeseq.commands._benchmark.alternate) and prints, per round, the median ratio and the
ratio of the fastest calls (the robust number on a loaded machine). Targets: GRU 1024
units, T=100, batch 1: edgeseq int8 ≤ 0.35× onnxruntime fp32 (1 thread); TFLite hybrid
LSTM 256 (64 inputs, T=100, batch 1, plain cell and the full Android-NN cell with
projection): edgeseq ≤ TFLite interpreter (ratio ≤ 1).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from edgeseq.commands._benchmark import _graph, alternate, onnx_model, ort_session  # noqa: E402


def gru_int8_vs_ort(hidden: int = 1024, t_len: int = 100, repeats: int = 7, rounds: int = 3,
                    activations: str | None = None) -> list[dict]:
    """GRU (linear_before_reset=1, as onnxruntime's) hidden x hidden, int8 weights on the
    edgeseq runtime vs the float model on onnxruntime, 1 thread. `activations`: the int8
    pass's activation precision where the pipeline has one (None: its default)."""
    from edgeseq.quant.pipeline import compress
    from edgeseq.runtime import Model
    g = _graph("gru", hidden, hidden)
    opts = {} if activations is None else {"activations": activations}
    q, _ = compress(g, weights="int8", **opts)
    model = Model(q)
    ort = ort_session(onnx_model(g), 1)
    x = np.random.default_rng(1).standard_normal((t_len, 1, hidden)).astype(np.float32)
    h0 = np.zeros((1, 1, hidden), np.float32)
    feed, ours = {"x": x, "h0": h0}, {"x": x, "initial_h": h0}
    err = float(np.max(np.abs(model.run(ours)["y"] - ort.run(["y"], feed)[0])))
    rows = []
    for _ in range(rounds):
        t = alternate({"edgeseq": lambda: model.run(ours), "peer": lambda: ort.run(None, feed)},
                      repeats, 2)
        rows.append(dict(case=f"GRU {hidden}x{hidden} T={t_len} int8"
                         f"{'' if activations is None else ' act ' + activations}"
                         " vs ORT fp32", err=err, target="<=0.35", **t))
    return rows


# hybrid form of the file -> the activation precisions measured: the converter's default
# (TFLite's own semantics: symmetric int8, or int8 with a zero point for files with
# asymmetric_quantize_inputs) first, then int16 (the int8 weights' own error)
TFLITE_FORMS = {"sym": ("int8", "int16"), "asym": ("int8_asymmetric", "int16")}


def tflite_hybrid_lstm(hidden: int = 256, n_in: int = 64, t_len: int = 100,
                       repeats: int = 30, rounds: int = 3) -> list[dict]:
    """Hybrid (int8 weight) TFLite LSTMs, whole sequence, batch 1: the edgeseq runtime on the
    converted file vs the TFLite interpreter on the file itself (1 thread), symmetric and
    asymmetric-input files, each with the converter's default activations (TFLite's own
    hybrid semantics, equal to the interpreter to float32 rounding) and int16."""
    import tflite_bench as tb
    import make_tflite_fixtures as fx
    from edgeseq.converters.tflite import convert
    from edgeseq.converters.tflite.interpreter import TfliteSession
    from edgeseq.quant import activations
    from edgeseq.reference import INT8_ACTIVATIONS
    from edgeseq.runtime import Model
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for (form, acts), cell in ((f, c) for f in TFLITE_FORMS.items() for c in tb.CELLS):
            rng = np.random.default_rng(0)
            s = tb._spec(cell, n_in, hidden, t_len, form)
            w = fx.random_lstm_weights(rng, s, scale=1.0 / np.sqrt(hidden))
            path = Path(d) / f"{cell}_{form}.tflite"
            path.write_bytes(fx.unidirectional_lstm(s, w))
            g = convert(path)
            sess = TfliteSession(path, num_threads=1)
            x = rng.standard_normal(fx._x_shape(s)).astype(np.float32)
            want = sess.run({"x": x})["y"]
            for act in acts:
                model = Model(activations.apply(g, act))
                err = float(np.max(np.abs(model.run({"x": x})["y"] - want)))
                for _ in range(rounds):
                    t = alternate({"edgeseq": lambda: model.run({"x": x}),
                                   "peer": lambda: sess.run({"x": x})}, repeats, 5)
                    default = " (default)" if g.metadata.get(INT8_ACTIVATIONS) == act else ""
                    rows.append(dict(case=f"TFLite {form} hybrid LSTM {cell} {hidden} act "
                                          f"{act}{default}",
                                     err=err, target="<=1.0", **t))
    return rows


def gru_both_activations(**kw) -> list[dict]:
    """The GRU row with int16 and with int8 activations."""
    return [r for act in ("int16", "int8") for r in gru_int8_vs_ort(activations=act, **kw)]


ROWS = {"gru": gru_both_activations, "tflite": tflite_hybrid_lstm}


def print_rows(rows: list[dict]) -> None:
    print(f"{'case':<58} {'edgeseq':>10} {'peer':>10} {'ratio':>6} {'r(min)':>6} "
          f"{'target':>6}  max|diff|")
    for r in rows:
        print(f"{r['case']:<58} {r['edgeseq'] * 1e3:>8.2f}ms {r['peer'] * 1e3:>8.2f}ms "
              f"{r['edgeseq'] / r['peer']:>6.2f} {r['edgeseq:min'] / r['peer:min']:>6.2f} "
              f"{r['target']:>6}  {r['err']:.1e}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default=",".join(ROWS), help=f"subset of {','.join(ROWS)}")
    a = ap.parse_args(argv)
    for name in a.only.split(","):
        if name not in ROWS:
            ap.error(f"unknown row {name!r}; choose from {', '.join(ROWS)}")
        kw = {"rounds": a.rounds} | ({"repeats": 3 if name == "gru" else 10} if a.quick else {})
        print_rows(ROWS[name](**kw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
