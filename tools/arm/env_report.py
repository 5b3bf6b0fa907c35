"""Import check for an (emulated) board: prints what the CPU looks like to NumPy, Numba/LLVM and
onnxruntime, and imports every edgeseq layer a board needs. Exit 1 if an import fails."""
from __future__ import annotations

import importlib
import os
import platform
import sys
import traceback


def main() -> int:
    print(f"machine {platform.machine()}  python {platform.python_version()}  "
          f"cpus {os.cpu_count()}  QEMU_CPU={os.environ.get('QEMU_CPU', '-')}")
    failed = []
    for name in ["numpy", "numba", "llvmlite", "safetensors", "edgeseq", "edgeseq.graph",
                 "edgeseq.artifact", "edgeseq.reference", "edgeseq.runtime",
                 "edgeseq.converters.onnx", "onnx", "onnxruntime"]:
        try:
            mod = importlib.import_module(name)
            print(f"  import {name:26s} ok  {getattr(mod, '__version__', '')}")
        except Exception:
            failed.append(name)
            print(f"  import {name:26s} FAILED")
            traceback.print_exc()
    try:
        import llvmlite.binding as llvm
        feats = llvm.get_host_cpu_features().flatten()
        print(f"  LLVM host cpu {llvm.get_host_cpu_name()}  features {feats[:200]}")
        import numba
        print(f"  numba threads {numba.config.NUMBA_NUM_THREADS}  "
              f"threading layer (configured) {numba.config.THREADING_LAYER}")
    except Exception as e:
        print(f"  LLVM/numba info unavailable: {e}")
    try:
        import numpy as np
        from numpy._core._multiarray_umath import __cpu_features__ as cfg
        print("  numpy SIMD available: " + " ".join(k for k, v in cfg.items() if v))
    except Exception as e:
        print(f"  numpy SIMD info unavailable: {e}")
    print("imports: " + ("PASS" if not failed else f"FAIL ({', '.join(failed)})"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
