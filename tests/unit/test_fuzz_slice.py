"""The fuzzer (tools/fuzz.py): its short deterministic slice finds no failure, and its harness
does report a raw exception, a hang and a crash when a target has them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "fuzz.py"


def fuzz(*args: str, tmp_path: Path, env: dict | None = None) -> tuple[int, dict, str]:
    out = tmp_path / "fuzz.json"
    p = subprocess.run([sys.executable, str(TOOL), *args, "--nice", "0", "--json", str(out)],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, **(env or {})})
    return p.returncode, json.loads(out.read_text()) if out.exists() else {}, p.stdout + p.stderr


def test_the_slice_finds_no_raw_exception_hang_or_crash(tmp_path):
    # NOTE: a generous per-case limit: on a loaded machine a case that converts an ONNX file
    # can take seconds; a real hang still shows as one
    rc, res, log = fuzz("--slice", "--timeout", "60", tmp_path=tmp_path,
                        env={"EDGESEQ_FUZZ_RUN": "0"})
    assert rc == 0, log
    assert {"artifact", "graph-json", "npy", "cli"} <= set(res), log
    for name, r in res.items():
        assert r["failures"] == [], (name, r)
        assert sum(r["counts"].values()) >= 20, (name, r)
    # the structure-aware mutations reach past the checksum into validation and the runtime
    assert res["graph-json"]["counts"].get("identical", 0) \
        + sum(v for k, v in res["graph-json"]["counts"].items() if k.startswith("loaded")) > 0


def test_the_harness_reports_raw_exceptions_hangs_and_crashes(tmp_path):
    plugin = tmp_path / "selftest_targets.py"
    plugin.write_text(textwrap.dedent("""
        import os, time
        from hypothesis import strategies as st
        from fuzz import target

        @target("selftest", cases=st.tuples(st.integers(0, 3), st.integers()), slice=12)
        def selftest(case, ctx):
            case = case[0]
            if case == 1:
                raise ValueError("raw")
            if case == 2:
                time.sleep(60)
            if case == 3:
                os.abort()
            return "fine"
        """))
    rc, res, log = fuzz("--target", "selftest", "--cases", "12", "--batch", "12", "--timeout",
                        "1", "--plugin", str(plugin), tmp_path=tmp_path)
    counts = res["selftest"]["counts"]
    assert rc == 1, log
    assert sum(counts.values()) == 12, counts
    assert {"fine", "raw", "hang", "crash"} <= set(counts), counts
