"""`edgeseq demo [--model PATH.onnx]`: convert a model, run it on the Numba runtime and on
onnxruntime side by side, print accuracy/agreement and latency (what `make demo` runs).

Without --model: the packaged classifier (edgeseq/data/demo_classifier.onnx, a small LSTM
trained on JapaneseVowels; test split in demo_test.npz), then silero-vad's sequence model
streamed frame by frame (if the silero-vad package is installed)."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="an .onnx model to demo instead of the packaged one")
    p.add_argument("--data", type=Path,
                   help="with --model: .npz whose arrays are named after the model's inputs "
                        "(optional 'y' labels); default random inputs")
    p.add_argument("--repeats", type=int, default=50, help="timed calls per engine")


def run(args: argparse.Namespace) -> int:
    from edgeseq.commands._demo import run as run_demo  # numpy, onnx: only when used
    return run_demo(args)
