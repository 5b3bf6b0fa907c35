"""Load time and peak memory of an artifact against its size: chains of n Identity nodes,
each loaded in a fresh process. Shows that loading is linear in the header and that the
1e6-node file (94 MB header) is refused by the stated limits in well under a second.

    python tools/artifact_scale.py                 # n = 1e3, 1e4, 1e5, 1e6
    python tools/artifact_scale.py --sizes 1000 30000
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import sys, time
t0 = time.perf_counter()
from edgeseq import artifact
from edgeseq.errors import EdgeseqError
t1 = time.perf_counter()
try:
    g = artifact.load(sys.argv[1])
    what = f"loaded {len(g.nodes)} nodes"
except EdgeseqError as e:
    what = "refused: " + str(e).split(": ", 1)[1][:90]
t2 = time.perf_counter()
# NOTE: VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec (the parent's peak)
hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(f"{t2 - t1:.3f}|{hwm // 1024}|{what}")
"""


def write_chain(path: Path, n: int) -> int:
    from edgeseq import artifact
    nodes = [{"name": f"n{i}", "op": "Identity", "inputs": [f"v{i}" if i else "x"],
              "outputs": [f"v{i + 1}"], "attrs": {}, "weights": {}} for i in range(n)]
    g = {"name": "chain", "inputs": [{"name": "x", "dtype": "float32", "shape": ["T", 4]}],
         "outputs": [{"name": f"v{n}", "dtype": "float32", "shape": []}], "nodes": nodes,
         "constants": {}, "metadata": {}}
    text = json.dumps(g, separators=(",", ":"))
    try:
        artifact.write_raw(path, text, {})
    except Exception:   # noqa: BLE001 - the safetensors writer refuses headers over 100 MB
        # written by hand: what a hostile author would do
        meta = {"edgeseq.format": "edgeseq", "edgeseq.version": "1.0", "edgeseq.graph": text,
                "edgeseq.checksum": artifact._checksum(text, [])}
        head = json.dumps({"__metadata__": meta}).encode()
        path.write_bytes(len(head).to_bytes(8, "little") + head)
    return path.stat().st_size


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    args = p.parse_args()
    print(f"{'nodes':>9s} {'file MB':>8s} {'load s':>7s} {'us/node':>8s} {'peak RSS MB':>11s}  result")
    with tempfile.TemporaryDirectory() as d:
        for n in args.sizes:
            path = Path(d) / f"chain{n}.eseq"
            size = write_chain(path, n)
            out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                                 text=True, check=True).stdout.strip().splitlines()[-1]
            secs, rss, what = out.split("|", 2)
            print(f"{n:9d} {size / 1e6:8.1f} {float(secs):7.3f} {float(secs) / n * 1e6:8.1f} "
                  f"{int(rss):11d}  {what}")
            path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
