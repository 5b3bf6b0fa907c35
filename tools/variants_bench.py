"""Benchmark of the LSTM-family variants beyond LSTM/GRU/RNN (run through tools/bench.py
--variants, or directly): SRU against an edgeseq LSTM of the same width (the SRU's input
products are one GEMM and its recurrence is elementwise, so it should be several times
faster) and against the `sru` package in PyTorch eager mode (its CPU path: a GEMM plus its
own compiled C++ recurrence), in one process with alternating calls.

    python tools/variants_bench.py [--quick] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import warnings
from pathlib import Path

import numpy as np

from edgeseq.commands._benchmark import _fmt, alternate


def _sru_module(n_in: int, hidden: int, layers: int, bidirectional: bool):
    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # sru warns that its CUDA kernels are unavailable
        import sru
    torch.manual_seed(0)
    return sru.SRU(n_in, hidden, num_layers=layers, bidirectional=bidirectional,
                   rescale=True).eval()


def case_sru(n_in: int, hidden: int, t_len: int, n_batch: int, layers: int, bidi: bool,
             repeats: int) -> dict:
    """edgeseq SRU vs edgeseq LSTM (same input, width, layers 1 only) vs sru in PyTorch."""
    import torch
    from edgeseq import testing
    from edgeseq.converters.torch import from_module
    from edgeseq.runtime import Model
    torch.set_num_threads(1)
    mod = _sru_module(n_in, hidden, layers, bidi)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((t_len, n_batch, n_in)).astype(np.float32)
    sru_model = Model(from_module(mod, (torch.from_numpy(x),)))
    xt = torch.from_numpy(x)
    with torch.no_grad():
        want = mod(xt)[0].numpy()
    err = float(np.abs(sru_model.run({"x": x})["output_0"] - want).max())
    fns = {"sru": lambda: sru_model.run({"x": x})}

    def torch_eager():
        with torch.no_grad():
            mod(xt)
    fns["torch"] = torch_eager
    if layers == 1 and not bidi:
        lstm = Model(testing.lstm_graph(np.random.default_rng(0), n_in, hidden))
        fns["lstm"] = lambda: lstm.run({"x": x})
    t = alternate(fns, repeats, 3)
    return {"t": t, "err": err}


def case_conv_lstm(n_in: int, hidden: int, length: int, k: int, t_len: int, repeats: int) -> dict:
    """edgeseq ConvLSTM (one node over the sequence) vs the common PyTorch ConvLSTMCell
    stepped in a Python loop (eager, no_grad)."""
    import torch
    from edgeseq.graph import Graph, Node, Value
    from edgeseq.ops import Op
    from edgeseq.runtime import Model
    torch.set_num_threads(1)
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(n_in + hidden, 4 * hidden, k, padding=k // 2).eval()

    def torch_loop(x):
        h = torch.zeros(x.shape[1], hidden, length)
        c = torch.zeros_like(h)
        ys = []
        for t in range(x.shape[0]):
            i, f, o, g = torch.split(conv(torch.cat([x[t], h], dim=1)), hidden, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            ys.append(h)
        return torch.stack(ys)
    w, b = conv.weight.detach().numpy(), conv.bias.detach().numpy()
    rows = np.concatenate([np.arange(hidden) + hidden * g for g in (0, 1, 3, 2)])
    consts = {"w_x": w[rows, :n_in][None], "w_h": w[rows, n_in:][None], "b": b[rows][None]}
    node = Node("cl", Op.CONV_LSTM, ["x"], ["y"], {"hidden_size": hidden,
                                                   "pads": (k // 2, k // 2)},
                {n: n for n in consts})
    g = Graph("cl", [Value("x", "float32", ("T", "N", n_in, length))],
              [Value("y", "float32", ())], [node],
              {n: np.ascontiguousarray(a, np.float32) for n, a in consts.items()})
    model = Model(g.validate())
    x = np.random.default_rng(1).standard_normal((t_len, 1, n_in, length)).astype(np.float32)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        want = torch_loop(xt).numpy()
    err = float(np.abs(model.run({"x": x})["y"][:, 0] - want).max())

    def eager():
        with torch.no_grad():
            torch_loop(xt)
    return {"t": alternate({"edgeseq": lambda: model.run({"x": x}), "torch": eager},
                           repeats, 3), "err": err}


def case_conv_lstm2d(n_in: int, hidden: int, size: tuple, k: int, t_len: int, n_batch: int,
                     repeats: int) -> dict:
    """edgeseq ConvLSTM 2-D (one node over the sequence) vs the common PyTorch ConvLSTMCell
    (ndrplz's: one Conv2d over [x, h], gates i, f, o, g) stepped in a Python loop (eager,
    no_grad), and vs onnxruntime on that module's ONNX export (the loop unrolled)."""
    import tempfile

    import onnxruntime as ort
    import torch
    from edgeseq.graph import Graph, Node, Value
    from edgeseq.ops import Op
    from edgeseq.runtime import Model
    torch.set_num_threads(1)
    torch.manual_seed(0)

    class Loop(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(n_in + hidden, 4 * hidden, k, padding=k // 2)

        def forward(self, x):
            h = torch.zeros(x.shape[1], hidden, *x.shape[3:])
            c = torch.zeros_like(h)
            ys = []
            for t in range(x.shape[0]):
                i, f, o, g = torch.split(self.conv(torch.cat([x[t], h], dim=1)), hidden, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                ys.append(h)
            return torch.stack(ys)
    mod = Loop().eval()
    w, b = mod.conv.weight.detach().numpy(), mod.conv.bias.detach().numpy()
    rows = np.concatenate([np.arange(hidden) + hidden * g for g in (0, 1, 3, 2)])
    consts = {"w_x": w[rows, :n_in][None], "w_h": w[rows, n_in:][None], "b": b[rows][None]}
    p = k // 2
    node = Node("cl", Op.CONV_LSTM, ["x"], ["y"], {"hidden_size": hidden, "pads": (p, p, p, p)},
                {n: n for n in consts})
    g = Graph("cl", [Value("x", "float32", ("T", "N", n_in) + size)],
              [Value("y", "float32", ())], [node],
              {n: np.ascontiguousarray(a, np.float32) for n, a in consts.items()})
    model = Model(g.validate())
    x = np.random.default_rng(1).standard_normal((t_len, n_batch, n_in) + size).astype(np.float32)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        want = mod(xt).numpy()
    err = float(np.abs(model.run({"x": x})["y"][:, 0] - want).max())
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/convlstm2d.onnx"
        torch.onnx.export(mod, (xt,), path, dynamo=False, input_names=["x"],
                          output_names=["y"], opset_version=17)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    err_ort = float(np.abs(sess.run(None, {"x": x})[0] - want).max())

    def eager():
        with torch.no_grad():
            mod(xt)
    fns = {"edgeseq": lambda: model.run({"x": x}), "torch": eager,
           "ort": lambda: sess.run(None, {"x": x})}
    return {"t": alternate(fns, repeats, 3), "err": err, "err_ort": err_ort}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    p.add_argument("--json", type=Path, help="write results as JSON here")
    p.add_argument("--only", help="comma-separated subset of: sru,conv_lstm,conv_lstm2d")
    args = p.parse_args(argv)
    reps = 21 if args.quick else 61
    from edgeseq.runtime.threads import ThreadPins  # noqa: F401  (edgeseq pins BLAS itself)
    rows = []
    print("SRU: medians of alternating calls (min in brackets); float32, one thread each")
    only = {"sru", "conv_lstm", "conv_lstm2d"} if not args.only else set(args.only.split(","))
    print(f"{'case':<34} {'edgeseq SRU':>16} {'edgeseq LSTM':>16} {'LSTM/SRU':>9} "
          f"{'sru torch':>16} {'torch/SRU':>9}  max|diff|")
    sru_cases = ((256, 256, 100, 1, 1, False), (64, 128, 100, 1, 1, False),
                 (512, 512, 100, 1, 1, False), (256, 256, 100, 16, 1, False),
                 (256, 256, 100, 1, 2, True))
    for n_in, hidden, t_len, n_batch, layers, bidi in sru_cases if "sru" in only else ():
        r = case_sru(n_in, hidden, t_len, n_batch, layers, bidi, reps)
        t = r["t"]
        name = f"SRU {n_in}x{hidden} T={t_len} N={n_batch}" + \
            (f" {layers}L bidi" if bidi else "")
        lstm = t.get("lstm")
        cell = (lambda k: f"{_fmt(t[k])} ({_fmt(t[k + ':min'])})")
        print(f"{name:<34} {cell('sru'):>16} {cell('lstm') if lstm else '-':>16} "
              f"{(lstm / t['sru']) if lstm else float('nan'):>9.2f} {cell('torch'):>16} "
              f"{t['torch'] / t['sru']:>9.2f}  {r['err']:.1e}", flush=True)
        rows.append({"case": name, **{k: v for k, v in t.items()}, "max_abs_diff": r["err"],
                     "lstm_over_sru": lstm / t["sru"] if lstm else None,
                     "torch_over_sru": t["torch"] / t["sru"]})
    print("\nConvLSTM 1-D: edgeseq (one node over T) vs the PyTorch cell in a Python loop")
    print(f"{'case':<34} {'edgeseq':>16} {'torch loop':>16} {'torch/edgeseq':>13}  max|diff|")
    cl_cases = ((16, 32, 64, 3, 50), (4, 8, 32, 5, 100))
    for n_in, hidden, length, k, t_len in cl_cases if "conv_lstm" in only else ():
        r = case_conv_lstm(n_in, hidden, length, k, t_len, reps)
        t = r["t"]
        name = f"ConvLSTM C={n_in} H={hidden} L={length} K={k} T={t_len}"
        cell = (lambda key: f"{_fmt(t[key])} ({_fmt(t[key + ':min'])})")
        print(f"{name:<34} {cell('edgeseq'):>16} {cell('torch'):>16} "
              f"{t['torch'] / t['edgeseq']:>13.2f}  {r['err']:.1e}", flush=True)
        rows.append({"case": name, **t, "max_abs_diff": r["err"],
                     "torch_over_edgeseq": t["torch"] / t["edgeseq"]})
    print("\nConvLSTM 2-D: edgeseq (one node over T) vs the PyTorch cell in a Python loop and "
          "vs onnxruntime on its ONNX export")
    print(f"{'case':<40} {'edgeseq':>18} {'torch loop':>18} {'onnxruntime':>18} "
          f"{'torch/es':>8} {'ort/es':>7}  max|diff|")
    cl2_cases = ((8, 16, (16, 16), 3, 20, 1), (3, 8, (12, 10), 3, 20, 4),
                 (16, 32, (32, 32), 3, 10, 1))
    for n_in, hidden, size, k, t_len, n_batch in cl2_cases if "conv_lstm2d" in only else ():
        r = case_conv_lstm2d(n_in, hidden, size, k, t_len, n_batch, reps)
        t = r["t"]
        name = f"ConvLSTM2D C={n_in} H={hidden} {size[0]}x{size[1]} K={k} T={t_len} N={n_batch}"
        cell = (lambda key: f"{_fmt(t[key])} ({_fmt(t[key + ':min'])})")
        print(f"{name:<40} {cell('edgeseq'):>18} {cell('torch'):>18} {cell('ort'):>18} "
              f"{t['torch'] / t['edgeseq']:>8.2f} {t['ort'] / t['edgeseq']:>7.2f}  "
              f"{r['err']:.1e} (ort {r['err_ort']:.1e})", flush=True)
        rows.append({"case": name, **t, "max_abs_diff": r["err"],
                     "torch_over_edgeseq": t["torch"] / t["edgeseq"],
                     "ort_over_edgeseq": t["ort"] / t["edgeseq"]})
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.machine(), "rows": rows}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
