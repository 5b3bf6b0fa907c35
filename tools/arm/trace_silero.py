"""Where do two machines' silero VAD results start to differ? Runs the converted model with every
intermediate value as an output and saves them (emit) or compares them with saved ones (check).

    python tools/arm/trace_silero.py emit  INPUTS.npz OUT.npz     # on x86
    python tools/arm/trace_silero.py check INPUTS.npz OUT.npz     # on aarch64, same snapshot

INPUTS.npz: e.g. the silero inputs that e2e_check.py emit writes. Prints, per node output in
graph order, max |x| and the max abs / relative difference against the saved run.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np


def main(mode: str, inputs_path: str, out_path: str) -> int:
    from edgeseq.converters import onnx as conv
    from edgeseq.graph import Value
    from edgeseq.runtime import Model

    spec = importlib.util.find_spec("silero_vad")    # not imported: it needs torch
    g = conv.convert(Path(spec.submodule_search_locations[0]) / "data" / "silero_vad_16k_sequence.onnx")
    names = [o for n in g.nodes for o in n.outputs if o]
    g.outputs = [Value(n, "float32", ()) for n in names]
    out = Model(g.validate()).run(dict(np.load(inputs_path)))
    if mode == "emit":
        np.savez(out_path, **out)
        return 0
    ref = np.load(out_path)
    for n in names:
        a, b = out[n].astype(np.float64), ref[n].astype(np.float64)
        d, m = float(np.max(np.abs(a - b))), float(np.max(np.abs(b)))
        print(f"{n:36s} max|x| {m:9.3e}  max abs diff {d:9.3e}  relative {d / max(m, 1e-30):8.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
