"""`edgeseq compare MODEL [ART] --input NAME=FILE.npy ... [--random] [--json]`: run the original
model in its own runtime (onnxruntime for .onnx; see edgeseq.peers) and the artifact in
edgeseq on the same inputs; print per output the max abs and max relative error, and a verdict against a tolerance
(--tol; by default one that fits the artifact's weights: float32, fp16 or int8). Exit status 1
when an output is over it."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="original model file (.onnx, ...)")
    p.add_argument("artifact", metavar="ART", nargs="?", default=None,
                   help="an .eseq artifact; converted from MODEL on the fly when omitted")
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                   help="one graph input from a .npy file (repeat for each); fed to both engines")
    p.add_argument("--random", action="store_true",
                   help="random inputs for every input not given (symbolic dims -> --dim)")
    p.add_argument("--dim", type=int, default=4, metavar="K",
                   help="size used for symbolic dims with --random (default 4)")
    p.add_argument("--seed", type=int, default=0, help="random seed for --random (default 0)")
    p.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                   help="as for convert; the value is also fed to the original model")
    p.add_argument("--shape", action="append", default=[], metavar="NAME=DIMS",
                   help="as for convert: fix a dynamic input's dims, e.g. x=1,100,40")
    p.add_argument("--engine", choices=("auto", "runtime", "reference"), default="auto",
                   help="edgeseq engine: the Numba runtime, the float64 reference interpreter, "
                        "or auto (the runtime when installed)")
    p.add_argument("--tol", type=float, default=None, metavar="REL",
                   help="largest accepted max rel err per output (default: "
                        + ", ".join(f"{v:g} for {k} weights" for k, v in TOLERANCE.items())
                        + "); exit status 1 above it")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--float-original", default=None, metavar="FILE",
                   help="the float model a quantized MODEL was made from: shows how far MODEL "
                        "itself and edgeseq are from it (a quantized peer differs from float by "
                        "its own rounding)")
    from edgeseq.commands.convert import add_trust_code
    add_trust_code(p)


# Default --tol by the narrowest weight type in the artifact: float32 kernels agree with
# float32 peers to ~1e-6 of the output scale; fp16/int8 weights add their rounding error
# (docs/quant.md measures it), and a hybrid int8 peer rounds its activations differently.
TOLERANCE = {"float32": 1e-4, "float16": 1e-3, "int8": 3e-2}


def default_tolerance(graph) -> tuple[float, str]:
    """The --tol for `graph` and the weight type it was chosen for."""
    kinds = {str(c.dtype) for c in graph.constants.values()}
    for kind in ("int8", "float16"):
        if kind in kinds:
            return TOLERANCE[kind], kind
    return TOLERANCE["float32"], "float32"


def random_inputs(graph, given: dict, k: int, seed: int) -> dict:
    """Standard-normal floats (ints in [1, k]: lengths) for inputs not in `given`."""
    rng = np.random.default_rng(seed)
    out = dict(given)
    for v in graph.inputs:
        if v.name in out:
            continue
        shape = tuple(d if isinstance(d, int) else k for d in v.shape)
        if v.dtype.startswith("float"):
            out[v.name] = rng.standard_normal(shape).astype(v.dtype)
        elif v.dtype == "bool":
            out[v.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            out[v.name] = rng.integers(1, k + 1, shape).astype(v.dtype)
    return out


def errors(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """max |got - want|, and that relative to max |want| (the output's scale)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        from edgeseq.errors import ShapeError
        raise ShapeError(f"output shapes differ: edgeseq {got.shape} vs peer {want.shape}")
    if not want.size:
        return 0.0, 0.0
    diff = float(np.max(np.abs(got - want)))
    scale = float(np.max(np.abs(want)))
    return diff, diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


def run(args: argparse.Namespace) -> int:
    from edgeseq.commands.convert import parse_fix_shape, trust_code_option
    from edgeseq.commands.run import execute, load_graph, parse_inputs
    from edgeseq.errors import InputError
    from edgeseq.peers import peer_for

    opts = parse_fix_shape(args)
    trust = trust_code_option(args)
    graph = load_graph(args.artifact or args.model, **opts,
                       **({} if args.artifact else trust))
    inputs = parse_inputs(args.input)
    if args.random:
        inputs = random_inputs(graph, inputs, args.dim, args.seed)
    missing = [v.name for v in graph.inputs if v.name not in inputs]
    if missing:
        raise InputError(f"no value for input(s) {missing}; give --input NAME=FILE.npy or --random")
    from edgeseq.commands._progress import COMPILING, SlowStepNotice
    with SlowStepNotice(COMPILING):
        ours, engine = execute(graph, {v.name: inputs[v.name] for v in graph.inputs}, args.engine)
    peer_in = dict(inputs)
    for name, val in opts.get("fix", {}).items():
        peer_in[name] = np.asarray(val)
    theirs = peer_for(args.model)(Path(args.model), peer_in, **trust)
    rows = []
    for name, want in theirs.items():
        if name not in ours:
            rows.append({"output": name, "shape": list(np.shape(want)), "max_abs": None,
                         "max_rel": None, "note": "not produced by the artifact"})
            continue
        a, r = errors(ours[name], want)
        rows.append({"output": name, "shape": list(np.shape(want)), "max_abs": a, "max_rel": r})
    vs_float = _peer_vs_float(args, graph, inputs, peer_in, theirs, ours, opts, trust)
    tol, weights = (args.tol, "--tol") if args.tol is not None else default_tolerance(graph)
    over = [r["output"] for r in rows if r["max_rel"] is None or r["max_rel"] > tol]
    status = 1 if over else 0
    if args.json:
        print(json.dumps({"model": args.model, "artifact": args.artifact, "engine": engine,
                          "outputs": rows, "tolerance": tol, "ok": not over,
                          **({"against_float": vs_float} if vs_float else {})}, indent=2))
        return status
    print(f"{Path(args.model).name} (peer) vs {Path(args.artifact).name if args.artifact else 'converted on the fly'} (edgeseq {engine})")
    w = max(len("output"), *(len(r["output"]) for r in rows))
    print(f"{'output':<{w}}  {'shape':<16}  {'max abs err':>11}  {'max rel err':>11}")
    for r in rows:
        if r["max_abs"] is None:
            print(f"{r['output']:<{w}}  {str(tuple(r['shape'])):<16}  {r['note']}")
        else:
            print(f"{r['output']:<{w}}  {str(tuple(r['shape'])):<16}  {r['max_abs']:>11.3e}  "
                  f"{r['max_rel']:>11.3e}")
    print("(max rel err = max abs err / max |peer output|)")
    if vs_float:
        _print_vs_float(vs_float)
    basis = "given by --tol" if weights == "--tol" else f"default for {weights} weights"
    if over:
        print(f"MISMATCH: {', '.join(over)} over the tolerance max rel err <= {tol:g} ({basis})")
    else:
        print(f"OK: every output within max rel err <= {tol:g} ({basis})")
    return status


def _quantized(graph) -> bool:
    return any(c.dtype == np.int8 for c in graph.constants.values())


def _peer_vs_float(args, graph, inputs, peer_in, theirs, ours, opts, trust) -> dict | None:
    """How far a quantized peer (and edgeseq) are from float: from the float original given
    with --float-original (run in its own runtime), else, for a peer with int8 weights, from
    edgeseq's float64 reference on the peer's dequantized weights. None for a float peer."""
    from edgeseq.peers import peer_for
    if args.float_original:
        what = f"{Path(args.float_original).name} (float original, its own runtime)"
        ref = peer_for(args.float_original)(Path(args.float_original), peer_in, **trust)
    else:
        from edgeseq.commands.run import load_graph
        peer_graph = graph if not args.artifact else load_graph(args.model, **opts, **trust)
        if not _quantized(peer_graph):
            return None
        from edgeseq import reference
        what = "the peer's dequantized weights in float64 (edgeseq reference)"
        ref = reference.run(peer_graph, {v.name: inputs[v.name] for v in peer_graph.inputs})
    rows = []
    for name, want in ref.items():
        if name in theirs and name in ours:
            rows.append({"output": name, "peer_rel": errors(theirs[name], want)[1],
                         "edgeseq_rel": errors(ours[name], want)[1]})
    # without --float-original we got here only for a peer with int8 weights
    return {"float": what, "outputs": rows,
            "peer_quantized": not args.float_original or _quantized(graph)}


def _print_vs_float(vs: dict) -> None:
    print(f"against float ({vs['float']}), max rel err:")
    w = max(len("output"), *(len(r["output"]) for r in vs["outputs"]))
    print(f"  {'output':<{w}}  {'peer':>11}  {'edgeseq':>11}")
    for r in vs["outputs"]:
        print(f"  {r['output']:<{w}}  {r['peer_rel']:>11.3e}  {r['edgeseq_rel']:>11.3e}")
    if vs["peer_quantized"]:
        print("  (the peer is quantized: its distance from float is its own rounding, which "
              "edgeseq does not copy)")
