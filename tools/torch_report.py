"""PyTorch converter: max abs error of converted graphs vs PyTorch, and conversion time.

Usage: .venv/bin/python tools/torch_report.py      (prints a markdown table; ~1 minute)

Each row converts a module with `edgeseq.converters.torch.from_module` (two torch.export
traces), then runs the graph on the float64 reference and on the Numba runtime at another
sequence length than the example's, and compares with PyTorch float32. BeatNet rows use the
package's shipped weights on features of its bundled audio (see tests/models/test_beatnet.py).
"""
from __future__ import annotations

import importlib.util
import os
import sys
import time

import numpy as np
import torch
from torch import nn

from edgeseq import reference
from edgeseq.converters.torch import from_module
from edgeseq.quant import int8
from edgeseq.runtime import Model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_test(rel: str):
    spec = importlib.util.spec_from_file_location(rel.replace("/", "_"), os.path.join(ROOT, rel))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Rec(nn.Module):
    def __init__(self, cls, *a, **kw):
        super().__init__()
        self.rnn = cls(*a, **kw)

    def forward(self, x):
        return self.rnn(x)


def _flat(out):
    out = out if isinstance(out, (tuple, list)) else (out,)
    res = []
    for o in out:
        res.extend(o if isinstance(o, (tuple, list)) else (o,))
    return [o.detach().numpy() for o in res]


def _row(label, module, example, run_args, *, graph_fn=None, oracle=None):
    t0 = time.perf_counter()
    g = from_module(module, example)
    took = time.perf_counter() - t0
    if graph_fn is not None:
        g = graph_fn(g)
    with torch.no_grad():
        want = _flat((oracle or module)(*run_args))
    feed = {v.name: a.numpy() for v, a in zip(g.inputs, run_args)}
    ref = list(reference.run(g, feed).values())
    rt = list(Model(g).run(feed).values())
    e_ref = max(float(np.max(np.abs(a - w))) for a, w in zip(ref, want))
    e_rt = max(float(np.max(np.abs(a - w))) for a, w in zip(rt, want))
    scale = max(float(np.max(np.abs(w))) for w in want)
    print(f"| {label} | {e_ref:.1e} | {e_rt:.1e} | {scale:.2g} | {took:.2f} |", flush=True)


def main() -> int:
    torch.manual_seed(0)
    print("| model | max abs err, reference | max abs err, runtime | max abs output | convert s |")
    print("|---|---|---|---|---|")
    x = lambda *s: torch.randn(*s)
    _row("LSTM 1 layer (T,N,I)", Rec(nn.LSTM, 8, 16).eval(), (x(12, 2, 8),), (x(40, 2, 8),))
    _row("LSTM 3 layers, bidirectional, batch_first", Rec(nn.LSTM, 8, 16, num_layers=3,
         bidirectional=True, batch_first=True).eval(), (x(2, 12, 8),), (x(2, 40, 8),))
    _row("LSTMP proj 6, 2 layers, bidirectional", Rec(nn.LSTM, 8, 16, num_layers=2, proj_size=6,
         bidirectional=True).eval(), (x(12, 2, 8),), (x(40, 2, 8),))
    _row("GRU 2 layers, bidirectional", Rec(nn.GRU, 8, 16, num_layers=2,
         bidirectional=True).eval(), (x(12, 2, 8),), (x(40, 2, 8),))
    _row("RNN relu 2 layers", Rec(nn.RNN, 8, 16, num_layers=2, nonlinearity="relu").eval(),
         (x(12, 2, 8),), (x(40, 2, 8),))
    packed = _load_test("tests/conformance/test_torch_packed.py")
    _row("LSTMP packed, lengths [40, 13, 27]", packed.Packed(nn.LSTM, True, num_layers=2,
         bidirectional=True, proj_size=3).eval(), (x(3, 12, 4), torch.tensor([12, 5, 9])),
         (x(3, 40, 4), torch.tensor([40, 13, 27])))
    lstmp = _load_test("tests/conformance/test_torch_lstmp.py")
    kws = lstmp.KeywordSpotter().eval()
    _row("LSTMP keyword spotter, float", kws, (x(1, 16, 20),), (x(1, 200, 20),))
    _row("LSTMP keyword spotter, int8 weights", kws, (x(1, 16, 20),), (x(1, 200, 20),),
         graph_fn=lambda g: int8.apply(g)[0])
    bn = _load_test("tests/models/test_beatnet.py")
    feats = torch.from_numpy(bn._features(os.path.join(bn.PKG, "test_data", "808kick120bpm.mp3")))
    for k in (1, 2, 3):
        # a fresh module for PyTorch's side: BDA keeps its LSTM state between calls
        _row(f"BeatNet model_{k} (500 frames, logits + softmax)", bn.Activations(bn._bda(k)),
             (feats[:, :12],), (feats,), oracle=bn.Activations(bn._bda(k)))
    print(f"\ntorch {torch.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
