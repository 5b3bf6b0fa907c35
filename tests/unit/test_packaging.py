"""Packaging and layering: the wheel installs the sibling folders as edgeseq.* sub-packages
(never as top-level packages), and the import layers (docs/design.md, data flow) hold."""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SIBLINGS = ("converters", "quant", "runtime")
# the façade may reach up into the sibling packages (lazily); everything else in edgeseq/ is core
FACADE = {"__init__.py", "__main__.py", "cli.py", "api.py"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """Build the wheel from a clean copy of the sources (no stale build/ dir can leak in)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for pkg in ("edgeseq",) + SIBLINGS:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=ignore)
    r = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                        "--outdir", str(tmp / "dist"), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (whl,) = (tmp / "dist").glob("edgeseq-*.whl")
    return zipfile.ZipFile(whl)


def test_wheel_maps_siblings_under_edgeseq(wheel):
    names = set(wheel.namelist())
    for want in ("edgeseq/__init__.py", "edgeseq/artifact.py", "edgeseq/commands/inspect.py",
                 "edgeseq/runtime/__init__.py", "edgeseq/converters/registry.py",
                 "edgeseq/quant/__init__.py"):
        assert want in names, f"{want} missing from the wheel"
    tops = {n.split("/")[0] for n in names}
    assert not tops & {"runtime", "quant", "converters", "tests", "tools"}, sorted(tops)


def test_wheel_holds_every_module_of_every_package(wheel):
    """A sub-package folder without __init__.py would silently drop out of the wheel."""
    names = set(wheel.namelist())
    missing = []
    for pkg in ("edgeseq",) + SIBLINGS:
        for f in (ROOT / pkg).rglob("*.py"):
            if "__pycache__" in f.parts:
                continue
            rel = f.relative_to(ROOT / pkg).as_posix()
            inside = f"edgeseq/{rel}" if pkg == "edgeseq" else f"edgeseq/{pkg}/{rel}"
            if inside not in names:
                missing.append(inside)
    assert not missing, f"not in the wheel (folder without __init__.py?): {missing}"


def test_wheel_ships_license_and_type_marker(wheel):
    """PEP 561: `py.typed` tells type checkers the package's hints are meant to be used; the
    Apache-2.0 text that pyproject's `license` names goes with every wheel."""
    names = set(wheel.namelist())
    assert "edgeseq/py.typed" in names
    lic = [n for n in names if n.split("/")[-1] == "LICENSE" and ".dist-info/" in n]
    assert lic and b"Apache License" in wheel.read(lic[0]), sorted(names)[:5]


def test_wheel_declares_console_script_and_core_dependencies(wheel):
    (ep,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "edgeseq = edgeseq.cli:main" in wheel.read(ep).decode()
    (meta,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    requires = [ln for ln in wheel.read(meta).decode().splitlines()
                if ln.startswith("Requires-Dist:") and "extra ==" not in ln]
    core = {re.split(r"[<>=!~; \[]", ln.split(":", 1)[1].strip())[0].lower() for ln in requires}
    # a device runs an artifact with numpy + numba (+ small helpers); no framework is core
    assert {"numpy", "numba", "safetensors"} <= core, requires
    heavy = {"torch", "onnx", "onnxruntime", "ai-edge-litert", "tflite", "tensorflow",
             "matplotlib", "onnxscript", "scipy"}
    assert not core & heavy, f"heavy core dependencies: {sorted(core & heavy)}"


def test_import_edgeseq_is_light():
    """`import edgeseq` (and building the CLI parser) loads no converter, quant or runtime
    module, and none of the heavy frameworks."""
    code = (
        "import sys, edgeseq, edgeseq.artifact, edgeseq.summary, edgeseq.cli\n"
        "edgeseq.cli.build_parser()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('runtime', 'quant', 'converters', 'torch', 'onnx', 'onnxruntime', 'numba', 'tflite')"
        " or m.startswith(('edgeseq.runtime', 'edgeseq.quant', 'edgeseq.converters')))\n"
        "print(bad)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", f"imported eagerly: {r.stdout.strip()}"


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module name a file imports, anywhere in it (top level or inside functions)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [(node.lineno, node.module)]
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def _package_files(pkg: str) -> list[Path]:
    return sorted(f for f in (ROOT / pkg).rglob("*.py") if "__pycache__" not in f.parts)


def _violations(files, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for f in files:
        for line, mod in _imports(f):
            if mod in forbidden or mod.startswith(tuple(p + "." for p in forbidden)):
                where = f.relative_to(ROOT) if f.is_relative_to(ROOT) else f.name
                bad.append(f"{where}:{line} imports {mod}")
    return bad


def test_core_modules_never_import_the_upper_layers():
    core = [f for f in (ROOT / "edgeseq").glob("*.py") if f.name not in FACADE]
    names = {f.stem for f in core}
    assert {"ops", "graph", "shapes", "errors", "artifact", "summary", "reference"} <= names
    assert not _violations(core, ("edgeseq.converters", "edgeseq.quant", "edgeseq.runtime"))


def test_layers_between_siblings():
    """converters and quant never import runtime; runtime never imports converters or quant;
    nothing imports a sibling by its short folder name."""
    bad = _violations(_package_files("converters") + _package_files("quant"), ("edgeseq.runtime",))
    bad += _violations(_package_files("runtime"), ("edgeseq.converters", "edgeseq.quant"))
    every = sum((_package_files(p) for p in ("edgeseq",) + SIBLINGS), [])
    bad += _violations(every, SIBLINGS)
    assert not bad, "\n".join(bad)


def test_the_ast_check_can_fail(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from edgeseq.runtime import session\n    import runtime.plan\n")
    assert _violations([f], ("edgeseq.runtime",)) == ["m.py:2 imports edgeseq.runtime",
                                                      "m.py:2 imports edgeseq.runtime.session"]
    assert _violations([f], SIBLINGS) == ["m.py:3 imports runtime.plan"]


def _module_name(f: Path) -> str:
    """The installed name of a source file: runtime/plan.py -> edgeseq.runtime.plan."""
    top, *rest = f.relative_to(ROOT).with_suffix("").parts
    if rest and rest[-1] == "__init__":
        rest = rest[:-1]
    return ".".join((["edgeseq"] if top == "edgeseq" else ["edgeseq", top]) + rest)


def _import_graph(files) -> dict[str, dict[str, int]]:
    """{module: {imported edgeseq module: line}} over every import of every file, lazy ones
    included (an import moved into a function to dodge a cycle is still a cycle)."""
    names = {_module_name(f): f for f in files}

    def resolve(name: str) -> str | None:
        while name and name not in names:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for mod, f in names.items():
        edges = graph.setdefault(mod, {})
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import sub` names the submodule when there is one
                targets = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for t in map(resolve, targets):
                if t and t != mod:
                    edges.setdefault(t, node.lineno)
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), leaving out a package
    that only imports its own submodules (an __init__ handing names on is no cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            nested = all(c == v or c.startswith(v + ".") or v.startswith(c + ".") for c in comp)
            if len(comp) > 1 and not nested:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _every_source_file() -> list[Path]:
    return sum((_package_files(p) for p in ("edgeseq",) + SIBLINGS), [])


def test_no_import_cycle():
    cycles = _cycles(_import_graph(_every_source_file()))
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_kernels_import_nothing_above_them():
    """runtime/kernels/ is compiled code: among edgeseq modules it imports only kernels/."""
    graph = _import_graph(_every_source_file())
    files = {_module_name(f): f for f in _every_source_file()}
    kernels = "edgeseq.runtime.kernels"
    assert f"{kernels}.lstm" in graph
    bad = [f"{files[m].relative_to(ROOT)}:{line} imports {t}"
           for m, edges in graph.items() if m.startswith(kernels + ".")
           for t, line in edges.items() if not t.startswith(kernels)]
    assert not bad, "\n".join(bad)


def test_the_cycle_check_can_fail():
    graph = {"edgeseq.a": {"edgeseq.b": 1}, "edgeseq.b": {"edgeseq.c": 1},
             "edgeseq.c": {"edgeseq.a": 1}, "edgeseq.p": {"edgeseq.p.sub": 1},
             "edgeseq.p.sub": {"edgeseq.p": 1}}
    assert _cycles(graph) == [["edgeseq.a", "edgeseq.b", "edgeseq.c"]]


def test_the_import_graph_sees_lazy_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "runtime"
    (pkg / "kernels").mkdir(parents=True)
    (pkg / "kernels" / "k.py").write_text("def f():\n    from edgeseq.runtime import s\n")
    (pkg / "s.py").write_text("from edgeseq.runtime.kernels import k\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    graph = _import_graph([pkg / "kernels" / "k.py", pkg / "s.py"])
    assert graph == {"edgeseq.runtime.kernels.k": {"edgeseq.runtime.s": 2},
                     "edgeseq.runtime.s": {"edgeseq.runtime.kernels.k": 1}}
    assert _cycles(graph) == [["edgeseq.runtime.kernels.k", "edgeseq.runtime.s"]]
