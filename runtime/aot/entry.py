"""The ahead-of-time entry of a graph: a generated `@njit` function that reads its arguments
from one int64 table (runtime/native/layout.py), calls the whole-graph function and hands its
results back through the same table, catching any exception as status 1. Its LLVM IR (with
every kernel it calls) is what runtime/aot/emit.py turns into object code.

Run as `python -m edgeseq.runtime.aot.entry MODEL.eseq OUTDIR` in a fresh process (compile.py
does): Numba must compile everything from source there, with NUMBA_OPT=0 and an empty cache,
so that the IR is complete and still free of the host's vector widths and intrinsics.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from edgeseq.runtime.native.layout import Layout, arg_specs

_NB_DTYPE = {"float32": "float32", "int64": "int64", "float64": "float64"}
_CAST = {"float32": "f32_ptr", "int64": "i64_ptr", "float64": "f64_ptr"}
FUNCTION = "aot_entry"


def entry_source(layout: Layout) -> str:
    """Source of aot_entry(table address) for this layout (graph_run comes from the
    namespace it is executed in)."""
    lines = [f"def {FUNCTION}(tab_addr):",
             f"    t = carray(i64_ptr(tab_addr), ({layout.size},))"]
    names = []
    for k, s in enumerate(layout.args):
        dims = ", ".join(f"t[{s.offset + 1 + d}]" for d in range(s.rank)) + ","
        lines.append(f"    a{k} = carray({_CAST[s.dtype]}(t[{s.offset}]), ({dims}))")
        names.append(f"a{k}")
    lines += ["    try:",
              f"        r = graph_run({', '.join(names)})",
              "    except Exception:",
              "        return 1"]
    for k, s in enumerate(layout.results):
        lines += [f"    o = r[{k}]",
                  f"    t[{s.offset}] = keep(o)",
                  f"    t[{s.offset + 1}] = o.ctypes.data"]
        lines += [f"    t[{s.offset + 2 + d}] = o.shape[{d}]" for d in range(s.rank)]
    lines.append("    return 0")
    return "\n".join(lines) + "\n"


def build(artifact_path: str, outdir: Path) -> None:
    """Compile the entry of the artifact's graph and write module.ll, unit.json and the
    packed constants (wf.npy, wi.npy, wd.npy) into outdir."""
    from numba import carray, njit, types

    from edgeseq.artifact import load
    from edgeseq.runtime.aot import intrinsics
    from edgeseq.runtime.kernels.flags import NJIT
    from edgeseq.runtime.session import Model

    graph = load(artifact_path)
    model = Model(graph, warmup=False, codegen=True)
    compiled = model._compiled
    if compiled is None:
        raise SystemExit("no whole-graph function: " + model._codegen_note)
    compiled.compile()
    lowered = compiled.lowered
    (sig,) = compiled.fn.signatures
    ret = compiled.fn.overloads[sig].signature.return_type
    results = [(str(t.dtype), t.ndim) for t in ret]
    got = [(str(t.dtype), t.ndim) for t in sig]
    workspace = len(got) == len(arg_specs(lowered.inputs, len(lowered.states), True))
    args = arg_specs(lowered.inputs, len(lowered.states), workspace)
    if got != args:
        # NOTE: the layout is fixed by runtime/native/layout.py; a generator that changes the
        # function's arguments must change it too, never be called with a shifted table
        raise SystemExit(f"the generated function takes {got}, the native layout expects "
                         f"{args} (runtime/native/layout.py arg_specs)")
    layout = Layout.of(args, results)
    ns = {"carray": carray, "graph_run": compiled.fn, "keep": intrinsics.keep,
          "f32_ptr": intrinsics.f32_ptr, "f64_ptr": intrinsics.f64_ptr,
          "i64_ptr": intrinsics.i64_ptr}
    src = entry_source(layout)
    exec(compile(src, "<edgeseq aot entry>", "exec"), ns)
    flags = {k: v for k, v in NJIT.items() if k != "cache"}
    entry = njit(**flags)(ns[FUNCTION])
    entry.compile((types.int64,))
    cres = entry.overloads[entry.signatures[0]]
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "module.ll").write_text(str(cres.library._final_module))
    unit = {"function": cres.fndesc.llvm_func_name,
            "inputs": [list(i) for i in lowered.inputs],
            "outputs": list(lowered.outputs),
            "results": [list(r) for r in results],
            "workspace": workspace,
            "states": [{"node": s.node, "slot": s.slot, "source": s.source, "name": s.name,
                        "batch_first": s.batch_first} for s in lowered.states]}
    (outdir / "unit.json").write_text(json.dumps(unit))
    for name, arr in zip(("wf", "wi", "wd"), (lowered.wf, lowered.wi, lowered.wd)):
        np.save(outdir / f"{name}.npy", arr)


if __name__ == "__main__":
    build(sys.argv[1], Path(sys.argv[2]))
