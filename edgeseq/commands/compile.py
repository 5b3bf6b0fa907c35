"""`edgeseq compile MODEL.eseq -o OUT.eseq --target T [--target T2 ...]`: compile the
artifact's whole-graph function to machine code for each target, ahead of time, and store it
in the artifact (docs/design.md, "Ahead-of-time compiled artifacts"). `edgeseq run --native`
and `edgeseq.load(path, native_code=True)` then run it without Numba."""
from __future__ import annotations

import argparse
import sys

TARGETS_HELP = ("native (this machine's CPU), x86-64-v2, x86-64-v3, x86-64-v4, aarch64, "
                "cortex-a72, cortex-a76; repeat for several targets in one artifact")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact", metavar="MODEL.eseq", help="an .eseq artifact")
    p.add_argument("-o", "--output", required=True, metavar="OUT.eseq",
                   help="artifact to write (may be MODEL.eseq itself)")
    p.add_argument("--target", action="append", default=None, metavar="T",
                   help=TARGETS_HELP + " (default: native)")


def run(args: argparse.Namespace) -> int:
    from edgeseq.runtime.aot.compile import compile_native
    from edgeseq.runtime.native.targets import NAMES
    targets = args.target or ["native"]
    unknown = [t for t in targets if t not in NAMES]
    if unknown:
        print(f"edgeseq compile: unknown target(s) {unknown}; known: {', '.join(NAMES)}",
              file=sys.stderr)
        return 2
    print(f"compiling {args.artifact} for {', '.join(targets)} (Numba compiles the graph "
          f"from source once: tens of seconds)", file=sys.stderr)
    out = compile_native(args.artifact, args.output, targets)
    from edgeseq import artifact
    from edgeseq.runtime.native import store
    info = artifact.read_info(out)
    for t in store.parse(info.native, str(out)).targets:
        print(f"  {t.name}: {t.triple} cpu {t.cpu}, {t.bytes} bytes of code")
    print(f"wrote {out} ({info.file_bytes} bytes, checksum {info.checksum})")
    return 0
