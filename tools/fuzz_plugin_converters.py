"""Fuzz targets for the converters (ONNX protobuf fields, TFLite flatbuffer fields, .pt2
archives) for tools/fuzz.py's registry, loaded as a plugin:

    python tools/fuzz.py --plugin tools/fuzz_plugin_converters.py --target onnx --cases 10000

The mutators live in tools/fuzz_converters.py (which also runs them standalone with outcome
counts per format); here a hypothesis-drawn integer seeds one mutation of one seed file.
NOTE: not named fuzz_targets_*.py on purpose: fuzz.py imports those into its `--slice`, which
`make test` runs with >= 20 cases per target; the converters' slice runs in-process instead
(tests/unit/test_hostile_converters.py::test_fuzz_slice), sharing the suite's imports.

Outcomes: "converted", "refused" (an EdgeseqError naming the file); a refusal that does not
name the file or a planted .pt2 payload that ran raises, so it counts as a raw failure.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

import fuzz_converters as fc
from fuzz import target


@dataclass
class Ctx:
    work: Path
    target: fc.Target
    seeds: list
    marker: str


def _setup(name: str):
    def setup(work: Path) -> Ctx:
        import importlib
        t = fc.TARGETS[name]
        for m in t.warm:
            importlib.import_module(m)
        return Ctx(work, t, t.seeds(), str(work / "payload-ran"))
    return setup


def _run(case: int, ctx: Ctx) -> str:
    t = ctx.target
    rng = random.Random(case)
    entry = ctx.seeds[case % len(ctx.seeds)]
    data = t.mutate(rng, entry[1], ctx.marker) if t.name == "pt2" else t.mutate(rng, entry[1])
    path = ctx.work / f"case{t.suffix}"
    path.write_bytes(data)
    outcome = fc.classify(t, path, dict(entry[2]), differential=False)
    if os.path.exists(ctx.marker):
        os.unlink(ctx.marker)
        raise AssertionError(f"a payload planted in the {t.name} file ran")
    if outcome.startswith("unnamed"):
        raise AssertionError(f"{outcome}: the error does not name the file")
    if outcome.startswith("raw:"):
        # re-run unguarded so fuzz.py records the exception type and message
        t.convert(path, dict(entry[2]))
    return outcome.split(":")[0]


SEEDS = st.integers(0, 2**32 - 1)
target("onnx", cases=SEEDS, setup=_setup("onnx"), slice=20)(_run)
target("tflite", cases=SEEDS, setup=_setup("tflite"), slice=20)(_run)
target("pt2", cases=SEEDS, setup=_setup("pt2"), slice=20)(_run)
