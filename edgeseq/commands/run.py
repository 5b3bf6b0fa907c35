"""`edgeseq run ART --input NAME=FILE.npy ... [--output-dir DIR]`: run an artifact (or any
convertible model) on the runtime, falling back to the reference interpreter."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact", metavar="ART", help="an .eseq artifact (or a model file to convert)")
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                   help="one graph input (repeat for each)")
    p.add_argument("--output-dir", default=None, metavar="DIR",
                   help="write one NAME.npy per output here")
    p.add_argument("--engine", choices=("auto", "runtime", "reference"), default="auto",
                   help="auto: the Numba runtime when available, else the reference interpreter")
    p.add_argument("--delta", default=None, metavar="θ[,θh]",
                   help="delta execution of the recurrent layers (runtime only): skip input/"
                        "state components that changed by at most θ (θx,θh: separate "
                        "thresholds); prints per-layer skip statistics to stderr")


def parse_inputs(specs: list[str]) -> dict[str, np.ndarray]:
    from edgeseq.errors import InputError
    out = {}
    for s in specs:
        name, sep, path = s.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--input expects NAME=FILE.npy, got '{s}'")
        try:
            out[name] = np.load(path, allow_pickle=False)
        except (ValueError, EOFError, OSError) as e:
            if isinstance(e, (FileNotFoundError, IsADirectoryError, PermissionError)):
                raise
            # NOTE: a corrupt, pickled or .npz file must not surface as a traceback
            raise InputError(f"--input {name}: {path} is not a readable .npy array "
                             f"({type(e).__name__}: {e})") from None
        if not isinstance(out[name], np.ndarray):
            raise InputError(f"--input {name}: {path} holds an .npz archive, expected one .npy "
                             f"array")
    return out


def load_graph(path: str, **convert_options):
    """A validated Graph from an .eseq artifact, or converted from a model file."""
    from edgeseq.converters.registry import CONVERTERS, convert
    # NOTE: `convert -o` accepts any output name; anything that is not a known model suffix
    # is read as an artifact (a foreign file gets ArtifactError "convert it first")
    if Path(path).suffix.lower() not in CONVERTERS:
        from edgeseq import artifact
        return artifact.load(path)
    return convert(path, **convert_options)


def execute(graph, inputs: dict, engine: str = "auto") -> tuple[dict, str]:
    """Outputs of `graph` and the name of the engine that produced them."""
    if engine in ("auto", "runtime"):
        try:
            from edgeseq.runtime import Model
        except ImportError:
            if engine == "runtime":
                raise
        else:
            return Model(graph).run(inputs), "runtime"
    from edgeseq import reference
    from edgeseq.errors import InputError
    for name, a in inputs.items():
        # NOTE: the runtime refuses NaN/inf by default; the reference engine must not differ
        a = np.asarray(a)
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise InputError(f"input '{name}': {int(a.size - np.isfinite(a).sum())} non-finite "
                             f"value(s) (NaN or inf)")
    return reference.run(graph, inputs), "reference"


def execute_delta(graph, inputs: dict, delta: str, engine: str) -> tuple[dict, str]:
    """Outputs of a delta run on the runtime; the per-layer statistics go to stderr."""
    from edgeseq.errors import InputError
    if engine == "reference":
        raise InputError("--delta needs the runtime engine (the reference interpreter is exact)")
    try:
        th = tuple(float(v) for v in delta.split(","))
    except ValueError:
        raise InputError(f"--delta expects θ or θx,θh (numbers), got '{delta}'") from None
    if len(th) not in (1, 2):
        raise InputError(f"--delta expects θ or θx,θh, got '{delta}'")
    from edgeseq.runtime import Model
    model = Model(graph)
    outs = model.run(inputs, delta=th[0] if len(th) == 1 else th)
    print(model.last_stats, file=sys.stderr)
    return outs, "runtime (delta)"


def run(args: argparse.Namespace) -> int:
    graph = load_graph(args.artifact)
    if getattr(args, "delta", None) is not None:
        outs, engine = execute_delta(graph, parse_inputs(args.input), args.delta, args.engine)
    else:
        outs, engine = execute(graph, parse_inputs(args.input), args.engine)
    print(f"ran {args.artifact} on the {engine}", file=sys.stderr)
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    for name, arr in outs.items():
        arr = np.asarray(arr)
        line = f"{name}: shape {tuple(arr.shape)} {arr.dtype}"
        if out_dir:
            f = out_dir / f"{name.replace('/', '_')}.npy"
            np.save(f, arr)
            line += f" -> {f}"
        print(line)
    return 0
