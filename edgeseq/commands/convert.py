"""`edgeseq convert MODEL -o OUT.eseq [--fix NAME=VALUE] [--shape NAME=DIMS] [compression]`."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="model file (.onnx, .tflite, .pt2, .pt, ...)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.eseq", help="artifact to write")
    p.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                   help="bake a graph input in as a constant (number, comma list, or .npy file)")
    p.add_argument("--shape", action="append", default=[], metavar="NAME=DIMS",
                   help="fix a dynamic input's dims, e.g. x=1,100,40 (lets shape arithmetic fold)")
    p.add_argument("--arch", default=None, metavar="SPEC",
                   help="layer stack of a bare PyTorch state_dict (.pt/.pth/.safetensors), "
                        "e.g. 'lstm(batch_first)+linear' (see docs/torch.md)")
    add_trust_code(p)
    g = p.add_argument_group("compression (edgeseq.quant)")
    g.add_argument("--weights", choices=("fp32", "fp16", "int8"), default=None,
                   help="storage of the recurrent and dense weights: int8 (per-row scales, "
                        "~0.27x bytes), fp16 (0.5x), fp32 (as converted)")
    g.add_argument("--activations", choices=("int16", "int8", "int8_asymmetric", "int7"),
                   default=None,
                   help="with --weights int8: precision of the activations in the integer "
                        "products: int16 (default; the int8 weights' own error) or int8 "
                        "(u8/s8 dot-product instructions, onnxruntime's int8 speed and error); "
                        "int8_asymmetric: int8 with a zero point per vector (TFLite's hybrid "
                        "kernels with asymmetric_quantize_inputs); int7: |q| <= 63, ~2x "
                        "int8's error, onnxruntime's AVX2 speed without its saturation")
    g.add_argument("--svd-rank", type=int, default=None, metavar="R",
                   help="factor each recurrent weight W_h into two rank-R matrices")
    g.add_argument("--svd-energy", type=float, default=None, metavar="E",
                   help="like --svd-rank, with the smallest rank that keeps fraction E "
                        "(e.g. 0.95) of W_h's squared singular values")
    g.add_argument("--lstmp", type=int, default=None, metavar="R",
                   help="turn each LSTM into an LSTM with an R-dim projection (one joint SVD "
                        "of W_h and the next layer's weights; see docs/quant.md)")
    g.add_argument("--calibrate", default=None, metavar="FILE.npz",
                   help="calibration inputs (graph input name -> array) for error reporting")


def add_trust_code(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-code", action="store_true",
                   help="let a .pt2 file run the Python code its pickles and program strings "
                        "may hold (torch.export.load); only for files from a trusted author")


def trust_code_option(args: argparse.Namespace) -> dict:
    """{"trust_code": True} when --trust-code was given (other formats never take it)."""
    return {"trust_code": True} if getattr(args, "trust_code", False) else {}


def parse_fix_shape(args: argparse.Namespace) -> dict:
    """Converter options from --fix / --shape (ONNX syntax; other converters get the same)."""
    from edgeseq.converters.options import parse_fix, parse_shape
    opts = {}
    if args.fix:
        opts["fix"] = dict(parse_fix(s) for s in args.fix)
    if args.shape:
        opts["shapes"] = dict(parse_shape(s) for s in args.shape)
    return opts


def format_table(rows: list[dict]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[("" if r.get(c) is None else f"{r[c]:.3g}" if isinstance(r.get(c), float)
               else str(r[c])) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[k]) for row in cells)) for k, c in enumerate(cols)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*cols)] + [fmt.format(*row) for row in cells])


def run(args: argparse.Namespace) -> int:
    from edgeseq import __version__, artifact
    from edgeseq.converters.registry import convert

    graph = convert(args.model, **parse_fix_shape(args), **trust_code_option(args),
                    **({"arch": args.arch} if args.arch else {}))
    compress = {k: v for k, v in (("weights", args.weights), ("activations", args.activations),
                                  ("svd_rank", args.svd_rank),
                                  ("svd_energy", args.svd_energy), ("lstmp", args.lstmp),
                                  ("calibration", args.calibrate)) if v is not None}
    report = None
    if compress:
        from edgeseq.quant.pipeline import compress as run_passes
        graph, report = run_passes(graph, **compress)
    out = artifact.save(graph, args.output, producer=f"edgeseq {__version__} convert",
                        source=args.model)
    ops: dict[str, int] = {}
    for n in graph.nodes:
        ops[n.op.value] = ops.get(n.op.value, 0) + 1
    n_params = sum(int(c.size) for c in graph.constants.values())
    print(f"converted {args.model} -> {out} ({out.stat().st_size} bytes, {n_params} parameters)")
    print("  ops: " + ", ".join(f"{k} x{v}" for k, v in ops.items()))
    for label, vals in (("inputs", graph.inputs), ("outputs", graph.outputs)):
        print(f"  {label}: " + ", ".join(f"{v.name} {v.describe()}" for v in vals))
    if graph.metadata.get("static_time"):
        # NOTE: said here, not only in the artifact's metadata: the artifact runs one length
        print(f"  note: fixed-length conversion, the artifact takes only the inputs' shapes "
              f"above ({graph.metadata['static_time']})")
    if report:
        if isinstance(report, list) and all(isinstance(r, dict) for r in report):
            try:
                from edgeseq.quant.pipeline import format_report
                print(format_report(report))
            except (ImportError, KeyError):
                print(format_table(report))
        else:
            print(report)
    return 0
