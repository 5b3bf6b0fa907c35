"""`edgeseq run ART --input NAME=FILE.npy ... [--output-dir DIR]`: run an artifact (or any
convertible model) on the runtime, falling back to the reference interpreter."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


INPUT_POLICY = """\
inputs: every graph input by name, except recurrent initial states (e.g. silero's h and c),
which start from zeros when left out, and sequence lengths (full length). float64 arrays are
converted to float32, the precision the runtime computes in. A left-out state and a float64
input each print a warning (once); NaN or inf in an input is an error."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "Run an artifact on .npy inputs and print (or write) its outputs."
    p.epilog = INPUT_POLICY
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("artifact", metavar="ART", help="an .eseq artifact (or a model file to convert)")
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                   help="one graph input (repeat for each; see 'inputs' below)")
    p.add_argument("--output-dir", default=None, metavar="DIR",
                   help="write one NAME.npy per output here")
    p.add_argument("--engine", choices=("auto", "runtime", "reference"), default="auto",
                   help="auto: the Numba runtime when available, else the reference interpreter")
    p.add_argument("--native", action="store_true",
                   help="run the machine code `edgeseq compile` stored in the artifact (no "
                        "Numba); trust it like a shared library. Without code for this CPU "
                        "the runtime compiles the model as usual and says so")
    p.add_argument("--delta", default=None, metavar="θ[,θh]",
                   help="delta execution of the recurrent layers (runtime only): skip input/"
                        "state components that changed by at most θ (θx,θh: separate "
                        "thresholds); prints per-layer skip statistics to stderr")


def parse_inputs(specs: list[str]) -> dict[str, np.ndarray]:
    from edgeseq.errors import InputError
    from edgeseq.files import load_npy
    out = {}
    for s in specs:
        name, sep, path = s.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--input expects NAME=FILE.npy, got '{s}'")
        out[name] = load_npy(path, f"--input {name}")
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
    from edgeseq.limits import LIMITS
    from edgeseq.memory import MemoryEstimate
    # the same working-memory budget the runtime's Model applies
    estimate = MemoryEstimate(graph)
    estimate.check(LIMITS.memory_bytes, f"model '{graph.name}'")
    estimate.check_call(LIMITS.memory_bytes, f"model '{graph.name}'", inputs)
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
    if getattr(args, "native", False):
        return run_native(args)
    from edgeseq.commands._progress import COMPILING, SlowStepNotice
    graph = load_graph(args.artifact)
    inputs = parse_inputs(args.input)
    from edgeseq.errors import MemoryLimitError
    try:
        with SlowStepNotice(COMPILING):
            if getattr(args, "delta", None) is not None:
                outs, engine = execute_delta(graph, inputs, args.delta, args.engine)
            else:
                outs, engine = execute(graph, inputs, args.engine)
    except MemoryLimitError as e:     # the budget is passed by this file's content: name it
        raise MemoryLimitError(f"{args.artifact}: {e}") from None
    print(f"ran {args.artifact} on the {engine}", file=sys.stderr)
    write_outputs(outs, args.output_dir)
    return 0


def run_native(args: argparse.Namespace) -> int:
    """--native: the artifact's compiled code (edgeseq.load(..., native_code=True))."""
    import edgeseq
    model = edgeseq.load(args.artifact, native_code=True)
    outs = model.run(parse_inputs(args.input))
    engine = "native code" if hasattr(model, "target") else "runtime (no native code for this CPU)"
    print(f"ran {args.artifact} on the {engine}", file=sys.stderr)
    write_outputs(outs, args.output_dir)
    return 0


def write_outputs(outs: dict, out_dir: str | None) -> None:
    """Print one line per output; with `out_dir`, save each as a .npy file there and say which
    (names are made distinct and safe; see edgeseq.files.output_filenames)."""
    import os

    from edgeseq.files import open_dir, output_filenames, save_npy_nofollow
    files = output_filenames(list(outs)) if out_dir else {}
    dir_fd = open_dir(out_dir) if out_dir else None
    try:
        for name, arr in outs.items():
            arr = np.asarray(arr)
            line = f"{name}: shape {tuple(arr.shape)} {arr.dtype}"
            if dir_fd is not None:
                save_npy_nofollow(dir_fd, files[name], arr)
                line += f" -> {Path(out_dir) / files[name]}"
            print(line)
    finally:
        if dir_fd is not None:
            os.close(dir_fd)
