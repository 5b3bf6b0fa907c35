"""The `edgeseq` command line. Each command lives in its own module under edgeseq/commands/
and is imported only when used, so `edgeseq --version` stays fast."""
from __future__ import annotations

import argparse
import importlib
import re
import sys

from edgeseq import __version__
from edgeseq.errors import EdgeseqError

# command -> (module under edgeseq.commands, one-line help). Modules define
# `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "inspect": ("inspect", "show an artifact's layers, features, parameters and I/O"),
    "convert": ("convert", "convert a model file (.onnx, ...) into an .eseq artifact"),
    "run": ("run", "run an artifact on .npy inputs and write its outputs"),
    "compile": ("compile", "compile an artifact to machine code for a CPU, ahead of time"),
    "compare": ("compare", "compare an artifact with the original model in its own runtime"),
    "demo": ("demo", "convert, run and time a model against onnxruntime (default: the packaged one)"),
    "bench": ("bench", "benchmark the runtime against onnxruntime (table + JSON)"),
}


DESCRIPTION = """\
Convert recurrent sequence models (LSTM, GRU, RNN) from ONNX, TFLite and PyTorch into one
.eseq artifact and run it with fast kernels, checked against the original model's runtime.
Start with `edgeseq demo`; `edgeseq COMMAND --help` describes each command."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgeseq", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"edgeseq {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
        sp.set_defaults(_module=module)
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks on errors")
        importlib.import_module(f"edgeseq.commands.{module}").add_arguments(sp)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(importlib.import_module(f"edgeseq.commands.{args._module}").run(args) or 0)
    except EdgeseqError as e:
        if args.debug:
            raise
        print(f"edgeseq {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        extra = extra_for(e.name or "")
        if args.debug or extra is None:
            raise
        print(f"edgeseq {args.command}: this needs the '{e.name}' package, which is not "
              f"installed: pip install 'edgeseq[{extra}]'", file=sys.stderr)
        return 2
    except OSError as e:   # missing file, a directory, no permission, --output-dir a file...
        if args.debug:
            raise
        print(f"edgeseq {args.command}: {e}", file=sys.stderr)
        return 2


def extra_for(module: str) -> str | None:
    """The optional extra of edgeseq (pyproject's optional-dependencies) that installs
    `module`, read from the installed package's metadata; None if no extra does."""
    from importlib import metadata
    top = module.split(".")[0]
    try:
        requires = metadata.requires("edgeseq") or []
    except metadata.PackageNotFoundError:
        return None
    for req in requires:   # e.g. 'ai-edge-litert>=1.0; extra == "tflite"'
        m = re.match(r'\s*([A-Za-z0-9_.-]+).*extra\s*==\s*"(\w+)"', req)
        if m and re.sub(r"[-.]", "_", m[1]).lower() == top and m[2] not in ("test", "bench"):
            return m[2]
    return None
