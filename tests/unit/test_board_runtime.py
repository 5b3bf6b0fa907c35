"""The board runtime: edgeseq installed without Numba and llvmlite (docs/arm.md, "Precompiled
artifacts on the board") loads an artifact compiled ahead of time and runs its machine code.

The install is simulated in a subprocess whose import system refuses numba and llvmlite (and
the converters' frameworks), as a missing package does; tools/arm/run-aarch64.sh (part `aot`)
builds the real install in an emulated aarch64 root."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
JIT = ("numba", "llvmlite")             # what the board runtime leaves out of the core deps

BLOCKER = textwrap.dedent('''\
    import importlib.abc, sys
    ABSENT = {"numba", "llvmlite", "onnx", "onnxruntime", "torch", "tflite", "ai_edge_litert"}

    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ABSENT:
                raise ModuleNotFoundError(f"No module named '{name}'", name=name)

    sys.meta_path.insert(0, NotInstalled())
    ''')


def _board(tmp_path: Path, code: str, *argv: str) -> subprocess.CompletedProcess:
    script = tmp_path / "board.py"
    script.write_text(BLOCKER + textwrap.dedent(code))
    return subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)


# ---- the documented install ------------------------------------------------------------------
def _board_section() -> str:
    text = (ROOT / "docs" / "arm.md").read_text()
    m = re.search(r"^## Precompiled artifacts on the board\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, "docs/arm.md has no '## Precompiled artifacts on the board' section"
    return m.group(1)


def test_documented_board_install_is_the_core_dependencies_minus_the_jit():
    """The pasteable install in docs/arm.md names exactly pyproject's core dependencies except
    numba, with the same version bounds, then edgeseq itself with --no-deps."""
    core = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    want = sorted(r.replace(" ", "") for r in core if not r.lower().startswith(JIT))
    section = _board_section()
    deps = [ln for ln in section.splitlines() if ln.startswith("pip install --only-binary")]
    assert len(deps) == 1, deps
    assert sorted(re.findall(r'"([^"]+)"', deps[0])) == want, (deps[0], want)
    assert re.search(r"^pip install --no-deps edgeseq", section, re.M), section


def test_the_install_check_can_fail(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "_board_section",
                        lambda: 'pip install --only-binary=:all: "numpy>=1.24"\n'
                                'pip install --no-deps edgeseq\n')
    with pytest.raises(AssertionError):
        test_documented_board_install_is_the_core_dependencies_minus_the_jit()


# ---- a precompiled artifact without the JIT ---------------------------------------------------
@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """A small LSTM compiled for this machine (one Numba build, ~20 s), its inputs as .npy
    files and its float64 reference outputs (edgeseq.reference: written from the spec)."""
    import edgeseq
    from edgeseq import reference, testing
    tmp = tmp_path_factory.mktemp("board")
    rng = np.random.default_rng(20261204)
    graph = testing.lstm_graph(rng, 6, 16, initial_state=True)
    art = edgeseq.compile_native(graph, tmp / "lstm.eseq", ["native"])
    inputs = testing.random_inputs(graph, rng, T=9, N=2)
    for name, a in inputs.items():
        np.save(tmp / f"{name}.npy", a)
    want = {k: np.asarray(v) for k, v in reference.run(graph, dict(inputs)).items()}
    return tmp, Path(art), inputs, want


CHILD = '''
import json, sys
import numpy as np
import edgeseq
inputs = {n: np.load(f"{n}.npy") for n in sys.argv[2].split(",")}
model = edgeseq.load(sys.argv[1], native_code=True)
np.savez("api.npz", **model.run(inputs))
from edgeseq.cli import main
status = main(["run", "--native", sys.argv[1], "--output-dir", "cli"]
              + [f"--input={n}={n}.npy" for n in inputs])
print(json.dumps({"status": status, "model": type(model).__name__,
                  "describe": model.describe(),
                  "jit": sorted(m for m in sys.modules if m.split(".")[0] in ABSENT)}))
'''


def test_precompiled_artifact_runs_without_numba_or_llvmlite(compiled, tol):
    """`edgeseq.load(path, native_code=True)` and `edgeseq run --native` in a process where
    numba and llvmlite cannot be imported: both run the stored code and match the float64
    reference; neither JIT module is imported."""
    tmp, art, inputs, want = compiled
    r = _board(tmp, CHILD, str(art), ",".join(inputs))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["status"] == 0 and report["jit"] == [], report
    assert report["model"] != "Model", report     # not the JIT runtime's Model
    with np.load(tmp / "api.npz") as z:
        got_api = {k: z[k] for k in z.files}
    got_cli = {p.stem: np.load(p) for p in (tmp / "cli").glob("*.npy")}
    for got in (got_api, got_cli):
        assert set(got) == set(want), (sorted(got), sorted(want))
        for k in want:
            assert got[k].shape == want[k].shape, k
            err = float(np.max(np.abs(got[k].astype(np.float64) - want[k])))
            assert err <= tol["float32"], f"{k}: {err}"
