"""Benchmark edgeseq's runtime against onnxruntime (same as `edgeseq bench`); see
edgeseq/commands/_benchmark.py. Usage: python tools/bench.py [--quick] [--json PATH]"""
import sys

from edgeseq.commands.bench import main

if __name__ == "__main__":
    sys.exit(main())
