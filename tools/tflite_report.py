"""Measure edgeseq against the TFLite interpreter on every TFLite fixture.

    python tools/tflite_report.py [--seed 0]

Per fixture: max |edgeseq reference - TFLite| and max |edgeseq runtime - TFLite|; for hybrid
int8 fixtures also the error of each against the float model with the unquantised weights.
Full-integer (`*_int8`) models get int8-representable inputs; their outputs are dequantised.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
import tempfile

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import make_tflite_fixtures as fx  # noqa: E402

from edgeseq import reference  # noqa: E402
from edgeseq.converters.tflite import convert  # noqa: E402
from edgeseq.converters.tflite.interpreter import TfliteSession, run_tflite  # noqa: E402
from edgeseq.errors import UnsupportedModelError  # noqa: E402


def _err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        from edgeseq.runtime import Model
    except ImportError:
        Model = None
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in fx.names():
            rng = np.random.default_rng(a.seed)
            f = fx.build(name, rng)
            path = Path(d) / f"{name}.tflite"
            path.write_bytes(f.data)
            try:
                g = convert(path)
            except UnsupportedModelError as e:
                rows.append((name, "refused: " + str(e).splitlines()[1].strip()[:60], "", "", ""))
                continue
            feeds = {}
            for k in TfliteSession(path).it.get_input_details():
                x = rng.standard_normal(k["shape"])
                sc = k["quantization"][0]
                if sc:   # a full-integer model: feed values its int8 input represents exactly
                    x = np.clip(np.round(x / sc), -127, 127) * sc
                feeds[k["name"]] = x.astype(np.float32)
            want = run_tflite(path, feeds)
            ref = reference.run(g, feeds)
            e_ref = max(_err(ref[k], want[k]) for k in want)
            e_rt = max(_err(Model(g).run(feeds)[k], want[k]) for k in want) if Model else float("nan")
            hy = ""
            if f.spec is not None and f.spec.hybrid in ("sym", "asym") and f.kind == "uni":
                fp = Path(d) / "float.tflite"
                fp.write_bytes(fx.unidirectional_lstm(fx.replace(f.spec, hybrid=""), f.weights))
                yf = run_tflite(fp, feeds)["y"]
                hy = f"{_err(want['y'], yf):.2e} / {_err(ref['y'], yf):.2e}"
            rows.append((name, f"{e_ref:.2e}", f"{e_rt:.2e}", hy, ""))
    print("| fixture | ref vs TFLite | runtime vs TFLite | vs float model: TFLite hybrid / edgeseq int8 |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |")
    keras_table(Model)
    return 0


def keras_table(Model) -> None:
    """The checked-in models made by TensorFlow's converter, against TFLite and Keras."""
    d = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tflite"
    print("\n| TF-converted model | edgeseq ref vs TFLite | runtime vs TFLite | "
          "edgeseq vs Keras | TFLite vs Keras |")
    print("|---|---|---|---|---|")
    for path in sorted(d.glob("keras_*.tflite")):
        ref = np.load(d / f"{path.stem.rsplit('_', 1)[0]}.npz")
        g = convert(path)
        feeds = {g.inputs[0].name: ref["x"]}
        ours = reference.run(g, feeds)[g.outputs[0].name]
        rt = Model(g).run(feeds)[g.outputs[0].name] if Model else ours * np.nan
        theirs = next(iter(run_tflite(path, feeds).values()))
        print(f"| {path.name} | {_err(ours, theirs):.2e} | {_err(rt, theirs):.2e} | "
              f"{_err(ours, ref['y']):.2e} | {_err(theirs, ref['y']):.2e} |")


if __name__ == "__main__":
    sys.exit(main())
