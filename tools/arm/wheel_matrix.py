"""Which of edgeseq's dependencies have Linux aarch64 wheels, per CPython version.

    python tools/arm/wheel_matrix.py            # prints a Markdown table

One `pip install --dry-run --only-binary=:all: --no-deps --platform ... --python-version ...`
per package and Python (PyPI serves wheel metadata, so nothing large is downloaded), against
pypi.org directly (--isolated: a host's local x86 wheel caches and constraints are ignored).
The cell shows the newest version found and the lowest glibc its wheel needs.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

PACKAGES = ["numpy", "numba", "llvmlite", "safetensors", "onnx", "onnxruntime",
            "ai-edge-litert", "tflite-runtime", "torch"]
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# glibc: Debian 11 2.31, Ubuntu 22.04 2.35, Debian 12 / Raspberry Pi OS bookworm 2.36
PLATFORMS = ["manylinux2014_aarch64"] + [f"manylinux_2_{m}_aarch64" for m in
                                         (17, 24, 26, 27, 28, 31, 32, 34, 35, 36)]


def lookup(pkg: str, py: str) -> str:
    cmd = [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--quiet",
           "--ignore-installed", "--no-deps", "--only-binary=:all:", "--report", "-",
           "--python-version", py, "--implementation", "cp", "--target", "/tmp/_wheel_matrix",
           "--default-timeout", "60"]
    cert = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    if cert:
        cmd += ["--cert", cert]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    r = subprocess.run(cmd + [pkg], capture_output=True, text=True)
    if r.returncode != 0:
        return "no wheel"
    item = json.loads(r.stdout)["install"][0]
    url = item["download_info"]["url"]
    version = item["metadata"]["version"]
    tags = re.findall(r"manylinux_?(\d+)_(\d+)|manylinux(2014)", url.rsplit("/", 1)[-1])
    glibc = []
    for major, minor, legacy in tags:
        glibc.append((2, 17) if legacy else (int(major), int(minor)))
    g = min(glibc) if glibc else None
    return f"{version} (glibc ≥ {g[0]}.{g[1]})" if g else f"{version} (any)"


def main() -> int:
    jobs = [(p, v) for p in PACKAGES for v in PYTHONS]
    with ThreadPoolExecutor(4) as ex:
        cells = dict(zip(jobs, ex.map(lambda j: lookup(*j), jobs)))
    print("| package | " + " | ".join(f"cp{v.replace('.', '')}" for v in PYTHONS) + " |")
    print("|---|" + "---|" * len(PYTHONS))
    for p in PACKAGES:
        print(f"| {p} | " + " | ".join(cells[(p, v)] for v in PYTHONS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
