"""Fuzz edgeseq's readers with hostile input: artifacts (bytes and structure-aware graph
JSON), .npy inputs and command lines. Property: every case is refused with an EdgeseqError
(or a clean OSError / exit status 2), or loads and runs; never a raw Python exception, a
hang, a crash, or memory beyond the limit.

    python tools/fuzz.py --target artifact --target graph-json --cases 10000   # the long run
    python tools/fuzz.py --slice                # the few-second slice `make test` runs
    python tools/fuzz.py --target graph-json --replay 3:17     # one case (batch 3, case 17)

Cases are drawn by hypothesis (one seeded `@given` run per batch, generation phase only).
A batch runs in its own worker process (crash isolation) under RLIMIT_AS (`--memory-mb`)
with a per-case SIGALRM (`--timeout`); the parent also kills a batch that outlives its
cases' time. When a worker dies, the case it was on counts as a crash (or hang) and a new
worker resumes the batch after it (hypothesis regenerates the same cases from the seed).

Targets register with `@target(name, cases=strategy, setup=fn)`: `run(case, ctx)` returns
an outcome ("refused", "identical", "loaded", ...) or raises; any module named
`fuzz_targets_*.py` next to this file is imported, so other formats add targets there.
"""
from __future__ import annotations

import argparse
import glob
import importlib
import importlib.util
import json
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hypothesis import HealthCheck, Phase, given, settings, seed as hseed, strategies as st

HERE = Path(__file__).resolve().parent
# NOTE: target modules do `from fuzz import target`; when this file runs as __main__ they
# must get this module (one registry), not a second copy
sys.modules.setdefault("fuzz", sys.modules[__name__])

FAILURES = ("raw", "hang", "crash", "memory")   # outcome prefixes that fail the property


# ---- registry ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[Any, Any], str]          # (case, ctx) -> outcome; raising = raw exception
    cases: st.SearchStrategy
    setup: Callable[[Path], Any]            # (work dir) -> ctx, once per worker
    slice: int                              # cases of this target in `--slice`


TARGETS: dict[str, Target] = {}


def target(name: str, *, cases: st.SearchStrategy, setup: Callable[[Path], Any] = lambda d: None,
           slice: int = 30):
    """Register `run(case, ctx) -> outcome` as fuzz target `name` (a duplicate is an error)."""
    def deco(fn):
        if name in TARGETS:
            raise AssertionError(f"fuzz target '{name}' registered twice")
        TARGETS[name] = Target(name, fn, cases, setup, slice)
        return fn
    return deco


def load_targets(plugins: list[str] = ()) -> None:
    """Import every tools/fuzz_targets_*.py (this repo's: fuzz_targets_core.py), then the
    `--plugin` files."""
    for p in sorted(glob.glob(str(HERE / "fuzz_targets_*.py"))):
        importlib.import_module(Path(p).stem)
    for p in plugins:
        spec = importlib.util.spec_from_file_location(Path(p).stem, p)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)


# ---- one case -----------------------------------------------------------------------------
class Hang(BaseException):
    """Raised by SIGALRM inside a case (BaseException: code under test must not swallow it)."""


def classify(run: Callable[[], str]) -> str:
    """The outcome of one case: what `run` returns, "refused" for an EdgeseqError or a clean
    OSError, or a failure: raw:<Type>, memory, hang."""
    from edgeseq.errors import EdgeseqError
    try:
        return run()
    except EdgeseqError:
        return "refused"
    except MemoryError:
        return "memory"
    except Hang:
        return "hang"
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        return "refused"
    except Exception as e:  # noqa: BLE001 - this is what the fuzzer looks for
        return f"raw:{type(e).__name__}: {str(e)[:160]}"


# ---- worker -------------------------------------------------------------------------------------
def worker(name: str, seed: int, count: int, skip: int, stop: int, timeout: float,
           memory_mb: int, out: Path, detail: bool, plugins: list[str] = ()) -> None:
    """Run cases skip..stop-1 of the `count` cases of batch `seed` of target `name`, one JSON
    line each (hypothesis generates all `count`, so case i is the same in every run)."""
    load_targets(plugins)
    t = TARGETS[name]
    work = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    ctx = t.setup(work)
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 2**20, resource.RLIM_INFINITY))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))     # a crash leaves no core file behind

    def alarm(signum, frame):
        raise Hang()
    signal.signal(signal.SIGALRM, alarm)
    index = [0]
    sink = open(out, "a", buffering=1)

    @hseed(seed)
    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=False, print_blob=False)
    @given(case=t.cases)
    def batch(case):
        i = index[0]
        index[0] += 1
        if i < skip or i >= stop:
            return
        sink.write(json.dumps({"i": i, "start": True}) + "\n")
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            outcome = classify(lambda: t.run(case, ctx))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        rec = {"i": i, "outcome": outcome}
        if detail or outcome.startswith(FAILURES):
            rec["case"] = repr(case)[:2000]
        sink.write(json.dumps(rec) + "\n")

    batch()
    sink.close()


# ---- parent ---------------------------------------------------------------------------------------
def run_batch(name: str, seed: int, count: int, args) -> list[dict]:
    """All `count` cases of one batch, restarting the worker after a crash or a hang."""
    out = Path(tempfile.mkstemp(prefix="fuzz-", suffix=".jsonl")[1])
    results: dict[int, dict] = {}
    skip = 0
    while skip < count:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--seed",
               str(seed), "--count", str(count), "--skip", str(skip), "--stop", str(count),
               "--timeout",
               str(args.timeout), "--memory-mb", str(args.memory_mb), "--out", str(out)]
        for plugin in args.plugin:
            cmd += ["--plugin", plugin]
        if args.nice:
            cmd = ["nice", "-n", str(args.nice), *cmd]
        budget = 60 + (count - skip) * args.timeout * 1.5
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=budget)
            died = p.returncode != 0
            why = f"exit {p.returncode}: {p.stderr.strip()[-300:]}"
        except subprocess.TimeoutExpired:
            died, why = True, "batch timeout"
        started = None
        for line in out.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("start"):
                started = rec["i"]
            else:
                results[rec["i"]] = rec
                started = None
        if not died:
            break
        if started is None:       # died outside a case (setup, import): report and stop
            results[skip] = {"i": skip, "outcome": f"crash: worker {why}"}
            break
        kind = "hang" if why == "batch timeout" else "crash"
        results[started] = {"i": started, "outcome": f"{kind}: {why}"}
        skip = started + 1
    out.unlink()
    return [results[k] for k in sorted(results)]


def run_target(name: str, cases: int, args) -> tuple[Counter, list[tuple]]:
    counts: Counter = Counter()
    failures: list[tuple] = []
    n_batches = (cases + args.batch - 1) // args.batch
    for b in range(n_batches):
        count = min(args.batch, cases - b * args.batch)
        for rec in run_batch(name, args.seed * 100_003 + b, count, args):
            label = rec["outcome"].split(":")[0]
            counts[label] += 1
            if label in FAILURES:
                failures.append((b, rec["i"], rec["outcome"], rec.get("case", "")))
        if args.verbose:
            print(f"  {name} batch {b + 1}/{n_batches}: {dict(counts)}", file=sys.stderr)
    return counts, failures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", action="append", default=[], help="target name (repeat); default all")
    p.add_argument("--cases", type=int, default=1000, help="cases per target")
    p.add_argument("--batch", type=int, default=500, help="cases per worker process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per case")
    p.add_argument("--memory-mb", type=int, default=2048, help="RLIMIT_AS of a worker (MiB)")
    p.add_argument("--nice", type=int, default=10, help="niceness of workers (0: none)")
    p.add_argument("--slice", action="store_true", help="each target's short slice, one batch")
    p.add_argument("--replay", default=None, metavar="BATCH:CASE",
                   help="run one case and print it (give the same --seed and --batch)")
    p.add_argument("--json", default=None, metavar="FILE", help="write counts and failures")
    p.add_argument("--verbose", "-v", action="store_true")
    p.add_argument("--list", action="store_true", help="list targets")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                   help="another module of @target functions (repeat)")
    # worker mode (internal)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--skip", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--stop", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sys.path.insert(0, str(HERE))
    if args.worker:
        worker(args.worker, args.seed, args.count, args.skip, args.stop, args.timeout,
               args.memory_mb, Path(args.out), detail=False, plugins=args.plugin)
        return 0
    load_targets(args.plugin)
    if args.list:
        for t in TARGETS.values():
            print(f"{t.name:12s} slice {t.slice}")
        return 0
    names = args.target or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        p.error(f"unknown target(s) {unknown}; known: {sorted(TARGETS)}")
    if args.replay:
        b, i = (int(x) for x in args.replay.split(":"))
        out = Path(tempfile.mkstemp(suffix=".jsonl")[1])
        worker(names[0], args.seed * 100_003 + b, args.batch, i, i + 1, args.timeout,
               args.memory_mb, out, detail=True, plugins=args.plugin)
        print(out.read_text())
        return 0
    rows, all_failures = {}, {}
    t0 = time.perf_counter()
    for name in names:
        cases = TARGETS[name].slice if args.slice else args.cases
        if args.slice:
            args.batch = max(args.batch, cases)
        t1 = time.perf_counter()
        counts, failures = run_target(name, cases, args)
        rows[name] = (counts, time.perf_counter() - t1)
        all_failures[name] = failures
    print(f"{'target':12s} {'cases':>6s}  {'seconds':>7s}  outcomes")
    for name, (counts, secs) in rows.items():
        print(f"{name:12s} {sum(counts.values()):6d}  {secs:7.1f}  "
              + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    n_fail = sum(len(f) for f in all_failures.values())
    for name, failures in all_failures.items():
        for b, i, outcome, case in failures[:20]:
            print(f"FAIL {name} {b}:{i} {outcome}\n     {case[:300]}")
    print(f"{n_fail} failure(s) in {time.perf_counter() - t0:.0f} s "
          f"(seed {args.seed}, timeout {args.timeout} s, RLIMIT_AS {args.memory_mb} MiB)")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {n: {"counts": dict(c), "seconds": s, "failures": all_failures[n]}
             for n, (c, s) in rows.items()}, indent=1))
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
