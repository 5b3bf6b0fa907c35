"""`edgeseq bench`: the runtime benchmark against onnxruntime (edgeseq.commands._benchmark)."""
from __future__ import annotations

import argparse
from pathlib import Path

CASES = "lstm,stream,gru,batch,overhead,silero,cold"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="fewer repeats and sizes")
    p.add_argument("--json", type=Path, help="write results as JSON here")
    p.add_argument("--cases", default=CASES, help=f"comma-separated subset of: {CASES}")


def run(args: argparse.Namespace) -> int:
    from edgeseq.commands._benchmark import run as run_bench
    from edgeseq.errors import InputError
    cases = {c.strip() for c in args.cases.split(",") if c.strip()}
    unknown = sorted(cases - set(CASES.split(",")))
    if unknown or not cases:
        raise InputError(f"--cases: unknown case(s) {unknown or [args.cases]}; choose from {CASES}")
    return run_bench(args, cases)


def main(argv: list[str] | None = None) -> int:
    """`python tools/bench.py`: the same options as `edgeseq bench`."""
    p = argparse.ArgumentParser(description="Benchmark edgeseq's runtime against onnxruntime.")
    add_arguments(p)
    return run(p.parse_args(argv))
