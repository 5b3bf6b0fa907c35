"""Benchmark of greedy attention decoders (tools/seq2seq_models.py) run as a general Loop
node: edgeseq's runtime (the body's per-node plan, once per step) against PyTorch eager (the
module's Python loop, no_grad) and onnxruntime on the TorchScript ONNX export, one thread
each, alternating calls in one process. Every row decodes until max_len (no end token), so
all three run the same number of steps; the token ids must agree.

    python tools/decoder_bench.py [--quick] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgeseq.commands._benchmark import _fmt, alternate

sys.path.insert(0, str(Path(__file__).resolve().parent))


def case_decoder(bed: str, attention: str, src_len: int, n_batch: int, repeats: int) -> dict:
    import onnxruntime as ort
    import seq2seq_models as s2s
    import torch
    from edgeseq.converters.onnx import convert
    from edgeseq.runtime import Model
    torch.set_num_threads(1)
    spec = replace(s2s.TEST_BEDS[bed], attention=attention, eos=-1)
    module = s2s.build(spec)
    src = torch.randint(3, spec.src_vocab, (src_len, n_batch),
                        generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{bed}.onnx"
        s2s.export_onnx(module, src, path)
        graph = convert(path, shapes={"src": [src_len, n_batch]})
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    model = Model(graph)
    x = src.numpy()
    with torch.no_grad():
        want = module(src)[0].numpy()
    same = bool(np.array_equal(model.run({"src": x})["tokens"], want)
                and np.array_equal(sess.run(None, {"src": x})[0], want))

    def eager():
        with torch.no_grad():
            module(src)
    fns = {"edgeseq": lambda: model.run({"src": x}), "torch": eager,
           "ort": lambda: sess.run(None, {"src": x})}
    return {"t": alternate(fns, repeats, 3), "same_ids": same, "steps": spec.max_len,
            "body_nodes": len(next(n for n in graph.nodes if n.op.value == "Loop")
                              .attrs["body"].nodes)}


CASES = (("g2p", "bahdanau", 9, 1), ("g2p", "bahdanau", 9, 8),
         ("dates", "general", 12, 1), ("dates", "general", 12, 8))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    p.add_argument("--json", type=Path, help="write results as JSON here")
    args = p.parse_args(argv)
    reps = 15 if args.quick else 41
    print("Greedy attention decoders (general Loop): medians of alternating calls (min in "
          "brackets); float32, one thread each")
    print(f"{'case':<34} {'edgeseq':>18} {'torch eager':>18} {'onnxruntime':>18} "
          f"{'torch/es':>8} {'ort/es':>7}  ids")
    rows = []
    for bed, att, s_len, n in CASES:
        r = case_decoder(bed, att, s_len, n, reps)
        t = r["t"]
        name = f"{bed} {att} S={s_len} N={n} steps={r['steps']}"
        cell = (lambda k: f"{_fmt(t[k])} ({_fmt(t[k + ':min'])})")
        print(f"{name:<34} {cell('edgeseq'):>18} {cell('torch'):>18} {cell('ort'):>18} "
              f"{t['torch'] / t['edgeseq']:>8.2f} {t['ort'] / t['edgeseq']:>7.2f}  "
              f"{'same' if r['same_ids'] else 'DIFFER'}", flush=True)
        rows.append({"case": name, **t, "same_ids": r["same_ids"],
                     "body_nodes": r["body_nodes"]})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
