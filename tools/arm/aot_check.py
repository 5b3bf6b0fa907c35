"""Precompiled (ahead-of-time) artifacts across machines: the x86 host compiles for an ARM core,
the board runs the machine code without Numba, and code for features a CPU lacks is refused.

    python tools/arm/aot_check.py emit DIR [--targets cortex-a72,cortex-a76]   # x86, full install
    python tools/arm/aot_check.py check DIR --target cortex-a72                 # the board install
    python tools/arm/aot_check.py refuse DIR --target cortex-a76 [--allow-jit]  # a CPU lacking them
    python tools/arm/aot_check.py qemu-x86 DIR [--cpuinfo emulated]             # x86 host + qemu
    python tools/arm/aot_check.py once ART INPUTS OUT                            # one fresh process

`emit` converts the silero VAD and the demo classifier (ONNX), saves them as .eseq, records the
x86 runtime's outputs (the Numba JIT path, as today) and runs `edgeseq compile ... --target T`
once per target, exactly as a user would. `check` runs each compiled artifact in a fresh
process (`once`: `edgeseq.load(path, native_code=True)` + one run, with Numba and llvmlite
refused by the import system even where they are installed, and asserted absent from
sys.modules) and compares with x86: max abs diff <= 1e-6 * max(1, max|x86 output|) per output.
`refuse` loads an artifact carrying code only for a CPU with more features than this one: the
loader must refuse it (an EdgeseqError naming what is missing) or fall back to the JIT, never
run it (SIGILL). `qemu-x86` does the x86 half of that on this host: code for x86-64-v4
(AVX-512) under `qemu-x86_64 -cpu Haswell` (AVX2, no AVX-512) must be refused; code for
x86-64-v3 must run there and match.

Wall times of `once` are whole fresh processes (interpreter start, imports, load, first
result); under qemu they are emulation, not board speed. No pytest: this runs in a minimal root.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TOL_CROSS_MACHINE = 1e-6     # per output, scaled by max(1, max|x|) (docs/arm.md: float32 ulps)
JIT_MODULES = ("numba", "llvmlite")
REFUSED = 3                  # exit status of `once` for a clean refusal (an EdgeseqError)
PRETEND = "EDGESEQ_AOT_CHECK_PRETEND_FEATURES"   # control run only: the CPU features claimed

# Runs first in `once`: the import system refuses the JIT as a missing package does, so a
# loader that would reach for Numba fails here exactly as on a board without it.
JIT_BLOCKER = '''
import importlib.abc, sys
class _NoJit(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {jit!r}:
            raise ModuleNotFoundError(f"No module named '{{name}}' (blocked: board runtime)", name=name)
sys.meta_path.insert(0, _NoJit())
'''.format(jit=set(JIT_MODULES))


def _e2e():
    """tools/arm/e2e_check.py: the cases' ONNX files and inputs (one definition of both)."""
    sys.path.insert(0, str(HERE))
    import e2e_check
    return e2e_check


def _load(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _scaled_diff(got: dict, want: dict) -> tuple[float, dict]:
    """max over outputs of max|got - want| / max(1, max|want|), and the per-output rows."""
    if set(got) != set(want):
        raise ValueError(f"outputs differ: {sorted(got)} vs {sorted(want)}")
    rows, worst = {}, 0.0
    for k in sorted(want):
        a, b = np.asarray(got[k], np.float64), np.asarray(want[k], np.float64)
        if a.shape != b.shape:
            raise ValueError(f"output {k!r}: shape {a.shape} vs {b.shape}")
        d = float(np.max(np.abs(a - b))) if a.size else 0.0
        m = float(np.max(np.abs(b))) if b.size else 0.0
        rows[k] = (d, m)
        worst = max(worst, d / max(1.0, m))
    return worst, rows


def _artifact(dir_: Path, name: str, target: str) -> Path:
    return dir_ / f"{name}.{target}.eseq"


# ---- one fresh process ------------------------------------------------------------------------
def once(art: Path, inputs: Path, out: Path, block_jit: bool) -> int:
    """Load a compiled artifact with its machine code and run it once; print a JSON line."""
    t0 = time.perf_counter()
    import edgeseq
    from edgeseq.errors import EdgeseqError
    t_import = time.perf_counter()
    pretend = os.environ.get(PRETEND)
    if pretend:     # the control experiment of `refuse --control`: skip the feature check
        from edgeseq.runtime.native import cpu
        cpu.features = lambda: frozenset(pretend.split(","))
    try:
        model = edgeseq.load(str(art), native_code=True)
        t_load = time.perf_counter()
        result = model.run(_load(inputs))
        t_first = time.perf_counter()
    except EdgeseqError as e:
        print(json.dumps({"refused": f"{type(e).__name__}: {e}",
                          "jit_loaded": sorted(m for m in JIT_MODULES if m in sys.modules)}))
        return REFUSED
    jit = sorted(m for m in sys.modules if m.split(".")[0] in JIT_MODULES)
    np.savez(out, **{k: np.asarray(v) for k, v in result.items()})
    describe = model.describe() if hasattr(model, "describe") else ""
    print(json.dumps({"import_s": t_import - t0, "load_s": t_load - t_import,
                      "first_s": t_first - t_load, "jit_loaded": jit[:5],
                      "target": getattr(getattr(model, "target", None), "name", None),
                      "describe": describe[-1500:]}))
    if jit and block_jit:
        print(f"FAIL: {art.name}: JIT modules imported: {jit[:5]}", file=sys.stderr)
        return 1
    return 0


def run_once(art: Path, inputs: Path, out: Path, *, prefix: tuple = (), env: dict | None = None,
             block_jit: bool = True, python: str | None = None) -> dict:
    """`once` in a child process (optionally under a command prefix such as qemu): its JSON
    report plus wall seconds, exit status and stderr."""
    if block_jit:
        cmd = [*prefix, python or sys.executable, "-c",
               JIT_BLOCKER + f"import runpy, sys; sys.argv = {[str(HERE / 'aot_check.py'), 'once', str(art), str(inputs), str(out)]!r}\n"
               "runpy.run_path(sys.argv[0], run_name='__main__')"]
    else:
        cmd = [*prefix, python or sys.executable, str(HERE / "aot_check.py"), "once", str(art),
               str(inputs), str(out), "--allow-jit"]
    t0 = time.perf_counter()
    # NOTE: cwd is the artifact's folder: `-c` puts the cwd first on sys.path, and a checkout's
    # edgeseq/ folder there would shadow the installed package
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})},
                       timeout=3600, cwd=art.parent)
    wall = time.perf_counter() - t0
    report = {}
    for line in r.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            report = json.loads(line)
            break
    report.update(wall_s=wall, returncode=r.returncode,
                  stderr="\n".join(ln for ln in r.stderr.splitlines()
                                   if "TCG doesn't support" not in ln)[-2000:])
    return report


def _status(r: dict) -> str:
    rc = r["returncode"]
    if rc < 0:
        return f"killed by {signal.Signals(-rc).name}"
    return {0: "ran", REFUSED: "refused"}.get(rc, f"failed (exit {rc})")


# ---- x86 side ---------------------------------------------------------------------------------
def _compile(src: Path, out: Path, targets: list[str]) -> float:
    """`edgeseq compile SRC -o OUT --target T` through the CLI, as a user runs it; seconds."""
    cmd = [sys.executable, "-m", "edgeseq", "compile", str(src), "-o", str(out)]
    for t in targets:
        cmd += ["--target", t]
    t0 = time.perf_counter()
    # NOTE: not from a checkout's root: `-m` puts the cwd first on sys.path, and the source
    # folder edgeseq/ there lacks edgeseq.runtime (installed from the sibling runtime/)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, cwd=out.parent)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return time.perf_counter() - t0


def emit(out_dir: Path, targets: list[str], cases: list[str]) -> int:
    from edgeseq import artifact
    from edgeseq.converters import onnx as onnx_conv
    from edgeseq.runtime import Model
    e2e = _e2e()
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = {"silero_vad_16k_sequence": (e2e._silero_path, e2e._silero_inputs),
               "demo_classifier": (e2e._demo_path, e2e._demo_inputs)}
    manifest = {"machine": os.uname().machine, "targets": targets, "cases": []}
    for name in cases:
        path, inputs = sources[name][0](), sources[name][1]()
        graph = onnx_conv.convert(path)
        plain = out_dir / f"{name}.eseq"
        artifact.save(graph, plain, producer="tools/arm/aot_check.py", source=path)
        np.savez(out_dir / f"{name}.inputs.npz", **inputs)
        x86 = Model(graph).run(dict(inputs))          # the JIT path, as today
        np.savez(out_dir / f"{name}.x86.npz", **{k: np.asarray(v) for k, v in x86.items()})
        entry = {"name": name, "compile_s": {}}
        for t in targets:
            entry["compile_s"][t] = _compile(plain, _artifact(out_dir, name, t), [t])
            print(f"emit {name}: compiled for {t} in {entry['compile_s'][t]:.1f}s "
                  f"({_artifact(out_dir, name, t).stat().st_size} bytes)", flush=True)
        manifest["cases"].append(entry)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return 0


# ---- board side -------------------------------------------------------------------------------
def check(ref_dir: Path, target: str, env: dict | None = None, label: str = "") -> int:
    """Each case's artifact for `target` in a fresh process here, compared with x86."""
    manifest = json.loads((ref_dir / "manifest.json").read_text())
    failures = []
    print(f"machine {os.uname().machine}, artifacts for {target}{label}")
    for entry in manifest["cases"]:
        name = entry["name"]
        out = ref_dir / f"{name}.{target}.here.npz"
        r = run_once(_artifact(ref_dir, name, target), ref_dir / f"{name}.inputs.npz", out,
                     env=env)
        if r["returncode"] != 0:
            failures.append(f"{name}: {_status(r)}")
            print(f"FAIL {name}: {_status(r)}: {r.get('refused', '')}\n{r['stderr']}")
            continue
        worst, rows = _scaled_diff(_load(out), _load(ref_dir / f"{name}.x86.npz"))
        for k, (d, m) in rows.items():
            print(f"     {name}: output {k!r}: max|x86| {m:.3g}, max abs diff vs x86 {d:.3e}")
        ok = worst <= TOL_CROSS_MACHINE and r["target"] == target
        if not ok:
            failures.append(f"{name}: vs x86 {worst:.3e}, code run: {r['target']}")
        print(f"{'ok  ' if ok else 'FAIL'} {name} ({target}{label}): code run: {r['target']}; vs "
              f"x86 JIT scaled max abs diff {worst:.3e} (<= {TOL_CROSS_MACHINE:.0e}); numba/llvmlite "
              f"imported: {r['jit_loaded'] or 'no'}")
        print(f"     {name}: fresh process wall {r['wall_s']:.2f}s = import edgeseq "
              f"{r['import_s']:.2f}s + load {r['load_s']:.2f}s + first result "
              f"{r['first_s']:.3f}s + interpreter start/exit")
    print(f"{'PASS' if not failures else 'FAIL'}: {len(manifest['cases'])} models ({target}"
          f"{label}), {len(failures)} failed")
    return 0 if not failures else 1


def refuse(ref_dir: Path, target: str, allow_jit: bool = False, cases: list | None = None,
           control: bool = False) -> int:
    """Artifacts carrying code only for `target`, which this CPU lacks features of: refused
    with an EdgeseqError, or with `allow_jit` (an install with Numba) run by the JIT after the
    loader declined the code (its note in describe()) and compared with x86; never executed
    into a SIGILL."""
    manifest = json.loads((ref_dir / "manifest.json").read_text())
    failures = []
    entries = [e for e in manifest["cases"] if cases is None or e["name"] in cases]
    for entry in entries:
        name = entry["name"]
        out = ref_dir / f"{name}.{target}.declined.npz"
        r = run_once(_artifact(ref_dir, name, target), ref_dir / f"{name}.inputs.npz", out,
                     block_jit=not allow_jit)
        st = _status(r)
        if allow_jit and st == "ran":
            worst, _ = _scaled_diff(_load(out), _load(ref_dir / f"{name}.x86.npz"))
            note = [ln for ln in r["describe"].splitlines() if ln.startswith("native code")]
            ok = bool(note) and worst <= TOL_CROSS_MACHINE and r["jit_loaded"] != []
            print(f"{'ok  ' if ok else 'FAIL'} {name}: code for {target} on this CPU: declined, "
                  f"JIT fallback ran in {r['wall_s']:.1f}s (vs x86 {worst:.3e}); note: "
                  f"{note[0] if note else 'MISSING'}")
        else:
            ok = st == "refused" and not allow_jit
            print(f"{'ok  ' if ok else 'FAIL'} {name}: code for {target} on this CPU: {st} "
                  f"after {r['wall_s']:.2f}s: {r.get('refused') or r['stderr'][-700:]}")
        if not ok:
            failures.append(name)
    if control:
        # the same code with the loader told this CPU has the target's features: what the
        # feature check prevents (a fault here shows the code does use them)
        from edgeseq.runtime.native.targets import TARGETS
        for entry in entries:
            name = entry["name"]
            r = run_once(_artifact(ref_dir, name, target), ref_dir / f"{name}.inputs.npz",
                         ref_dir / f"{name}.{target}.forced.npz",
                         env={PRETEND: ",".join(TARGETS[target].requires)})
            print(f"     control {name}: the same code with the feature check bypassed: "
                  f"{_status(r)} after {r['wall_s']:.2f}s")
    how = "declined, JIT fallback" if allow_jit else "refused cleanly without the JIT"
    print(f"{'PASS' if not failures else 'FAIL'}: {len(entries)} artifacts for {target}: {how}")
    return 0 if not failures else 1


# ---- x86 feature check under qemu-x86_64 -------------------------------------------------------
def _cpuinfo_without(flags_prefix: str, path: Path) -> Path:
    """The host's /proc/cpuinfo with every flag starting with `flags_prefix` removed: what a
    real CPU without those features shows (qemu-user passes the host's file through)."""
    lines = []
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            key, _, flags = line.partition(":")
            line = key + ": " + " ".join(f for f in flags.split() if not f.startswith(flags_prefix))
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")
    return path


def qemu_x86(work: Path, cpu: str, python: str, cpuinfo: str) -> int:
    """Code for x86-64-v4 (AVX-512) under a qemu CPU without AVX-512 is refused; code for
    x86-64-v3 (AVX2) runs there and matches the host's JIT.

    cpuinfo "host": the process sees the host's /proc/cpuinfo (qemu-user passes it through:
    AVX-512 listed although the emulated CPU lacks it); "emulated": a copy without the avx512
    flags is bound over /proc/cpuinfo in a private mount namespace (root only), which is what
    /proc/cpuinfo says on a real CPU of that kind."""
    qemu = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")
    if qemu is None:
        raise SystemExit("qemu-x86_64 not found (apt-get install qemu-user-static)")
    if not (work / "manifest.json").exists():
        emit(work, ["x86-64-v4", "x86-64-v3"], ["demo_classifier"])
    prefix: tuple = (qemu, "-cpu", cpu)
    if cpuinfo == "emulated":
        fake = _cpuinfo_without("avx512", work / f"cpuinfo-{cpu}-no-avx512")
        prefix = ("unshare", "--mount", "--propagation", "private", "sh", "-c",
                  'mount --bind "$0" /proc/cpuinfo && exec "$@"', str(fake), *prefix)
    label = f"qemu -cpu {cpu}, {cpuinfo} /proc/cpuinfo"
    name = "demo_classifier"
    failures = []
    refused = run_once(_artifact(work, name, "x86-64-v4"), work / f"{name}.inputs.npz",
                       work / "v4.npz", prefix=prefix, python=python)
    ok = _status(refused) == "refused"
    print(f"{'ok  ' if ok else 'FAIL'} x86-64-v4 code under {label}: {_status(refused)} "
          f"after {refused['wall_s']:.1f}s: {refused.get('refused') or refused['stderr'][-600:]}")
    failures += [] if ok else ["v4 not refused"]
    from edgeseq.runtime.native.targets import TARGETS
    forced = run_once(_artifact(work, name, "x86-64-v4"), work / f"{name}.inputs.npz",
                      work / "v4-forced.npz", prefix=prefix, python=python,
                      env={PRETEND: ",".join(TARGETS["x86-64-v4"].requires)})
    print(f"     control: the same code with the feature check bypassed: {_status(forced)}")
    ran = run_once(_artifact(work, name, "x86-64-v3"), work / f"{name}.inputs.npz",
                   work / "v3.npz", prefix=prefix, python=python)
    if _status(ran) == "ran":
        worst, _ = _scaled_diff(_load(work / "v3.npz"), _load(work / f"{name}.x86.npz"))
        ok = worst <= TOL_CROSS_MACHINE
        print(f"{'ok  ' if ok else 'FAIL'} x86-64-v3 code under {label}: ran in "
              f"{ran['wall_s']:.1f}s (emulated), scaled max abs diff vs host JIT {worst:.3e}")
    else:
        ok = False
        print(f"FAIL x86-64-v3 code under {label}: {_status(ran)}: "
              f"{ran.get('refused') or ran['stderr'][-600:]}")
    failures += [] if ok else ["v3 did not run"]
    print(f"{'PASS' if not failures else 'FAIL'}: x86 feature check under {label}")
    return 0 if not failures else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("emit")
    p.add_argument("dir", type=Path)
    p.add_argument("--targets", default="cortex-a72,cortex-a76")
    p.add_argument("--cases", default="silero_vad_16k_sequence,demo_classifier")
    for mode in ("check", "refuse"):
        p = sub.add_parser(mode)
        p.add_argument("dir", type=Path)
        p.add_argument("--target", required=True)
    p.add_argument("--allow-jit", action="store_true",
                   help="an install with Numba: expect the JIT fallback instead of a refusal")
    p.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    p.add_argument("--control", action="store_true",
                   help="also run the code with the feature check bypassed (expect SIGILL)")
    p = sub.add_parser("qemu-x86")
    p.add_argument("dir", type=Path)
    p.add_argument("--cpu", default="Haswell")
    p.add_argument("--cpuinfo", choices=("host", "emulated"), default="host",
                   help="what /proc/cpuinfo shows the emulated process (see qemu_x86)")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter run under qemu (a real binary path, not a venv symlink chain "
                        "qemu cannot follow; default: this one)")
    p = sub.add_parser("once")
    p.add_argument("art", type=Path)
    p.add_argument("inputs", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--allow-jit", action="store_true")
    a = ap.parse_args(argv)
    if a.mode == "emit":
        return emit(a.dir, a.targets.split(","), a.cases.split(","))
    if a.mode == "check":
        return check(a.dir, a.target)
    if a.mode == "refuse":
        return refuse(a.dir, a.target, a.allow_jit, a.cases.split(",") if a.cases else None,
                      a.control)
    if a.mode == "qemu-x86":
        return qemu_x86(a.dir, a.cpu, a.python, a.cpuinfo)
    return once(a.art, a.inputs, a.out, block_jit=not a.allow_jit)


if __name__ == "__main__":
    sys.exit(main())
