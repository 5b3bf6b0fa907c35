"""`edgeseq compile`: an artifact plus machine code for one or more targets.

The graph's whole-graph function and its ahead-of-time entry are compiled by Numba in a
child process (runtime/aot/entry.py: a fresh Numba cache, NUMBA_OPT=0, so the LLVM IR is
complete and target-neutral), then each target's object code is emitted with llvmlite
(runtime/aot/emit.py) and stored with the artifact (runtime/native/store.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgeseq.errors import UnsupportedModelError
from edgeseq.runtime.native import store
from edgeseq.runtime.native.targets import resolve


def compile_native(model, out, targets=("native",)) -> Path:
    """Write `out`: the artifact `model` (a path, or a Graph) with compiled code for each
    target name (runtime/native/targets.py: native, x86-64-v2/v3/v4, aarch64, cortex-a72,
    cortex-a76). Returns the path written."""
    from edgeseq import __version__, artifact
    from edgeseq.graph import Graph
    resolved = [resolve(t) for t in dict.fromkeys(targets)]
    if not resolved:
        raise ValueError("compile_native: no target given")
    with tempfile.TemporaryDirectory(prefix="edgeseq-aot-") as tmp:
        tmp = Path(tmp)
        if isinstance(model, Graph):
            graph, source, src = model, "", tmp / "in.eseq"
            artifact.save(graph, src)
        else:
            src = Path(model)
            art = artifact.read(src)
            graph, source = art.graph, art.info.source
        _build_entry(src, tmp / "unit")
        unit = json.loads((tmp / "unit" / "unit.json").read_text())
        ir = (tmp / "unit" / "module.ll").read_text()
        consts = {k: np.load(tmp / "unit" / f"{k}.npy") for k in store.CONSTS}
    from edgeseq.runtime.aot.emit import emit_object
    function = unit.pop("function")
    objects = {}
    for t in resolved:
        obj = emit_object(ir, function, t)
        objects[store.code_target(t, obj)] = obj
    text = store.dumps(__version__, unit, list(objects))
    return artifact.save(graph, out, source=source or None,
                         producer=f"edgeseq {__version__} compile",
                         native=(text, store.tensors(consts, objects)))


def _build_entry(src: Path, outdir: Path) -> None:
    # NOTE: a generic CPU, so that kernels choosing instructions by CPU feature
    # (kernels/cpu.py, s8dot) take their portable form; each target's machine then vectorises.
    # EDGESEQ_CODEGEN_LINKED: the kernels linked into the object (the JIT calls them through
    # pointers into its own process, runtime/codegen/kernel_calls.py)
    env = dict(os.environ, NUMBA_OPT="0", NUMBA_CPU_NAME="generic", NUMBA_CPU_FEATURES="",
               EDGESEQ_CODEGEN_LINKED="1",
               NUMBA_CACHE_DIR=str(outdir.parent / "numba"),
               EDGESEQ_CACHE_DIR=str(outdir.parent / "codegen"), PYTHONWARNINGS="ignore")
    r = subprocess.run([sys.executable, "-m", "edgeseq.runtime.aot.entry", str(src),
                        str(outdir)], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        tail = "\n".join(r.stderr.strip().splitlines()[-8:]) or "(no output)"
        raise UnsupportedModelError(f"{src}: the whole-graph function cannot be compiled "
                                    f"ahead of time: {tail}")
