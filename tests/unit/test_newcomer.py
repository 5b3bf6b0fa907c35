"""What a new user meets first: the runtime-only install (`pip install .`, what a board gets),
attribute access after a bare `import edgeseq`, help text, compare's verdict, and the input
warnings of `Model.run`.

The runtime-only install is simulated in a subprocess whose import system refuses the
optional frameworks (a sys.meta_path finder raising ModuleNotFoundError, as a missing
package does)."""
from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
CLASSIFIER = ROOT / "edgeseq" / "data" / "demo_classifier.onnx"

BLOCKER = textwrap.dedent('''\
    import importlib.abc, sys
    OPTIONAL = {"onnx", "onnxruntime", "onnxscript", "torch", "tflite", "ai_edge_litert"}

    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in OPTIONAL:
                raise ModuleNotFoundError(f"No module named '{name}'", name=name)

    sys.meta_path.insert(0, NotInstalled())
    from edgeseq.cli import main
    status = main(sys.argv[1:])
    assert not OPTIONAL & set(sys.modules), sorted(OPTIONAL & set(sys.modules))
    sys.exit(status)
    ''')


def runtime_only(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    script = tmp_path / "runtime_only.py"
    script.write_text(BLOCKER)
    return subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)


@pytest.mark.parametrize("argv, extra", [
    (["convert", str(CLASSIFIER), "-o", "c.eseq"], "onnx"),
    (["compare", str(CLASSIFIER), "--random"], "onnx"),
    (["demo"], "onnx"),
    (["convert", str(ROOT / "tests/fixtures/tflite/keras_bidi_float.tflite"), "-o", "t.eseq"],
     "tflite"),
    (["convert", "m.pt", "--arch", "lstm", "-o", "p.eseq"], "torch"),
])
def test_missing_extra_is_one_line_naming_the_install(tmp_path, argv, extra):
    if "m.pt" in argv:
        (tmp_path / "m.pt").write_bytes(b"PK\x03\x04")   # never read: torch is missing first
    r = runtime_only(tmp_path, *argv)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"pip install 'edgeseq[{extra}]'" in lines[0], lines[0]
    assert lines[0].startswith(f"edgeseq {argv[0]}: ")


def test_safetensors_state_dict_converts_without_torch_or_onnx(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from edgeseq import artifact, reference
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(4, 8, batch_first=True).eval()
    save_file({k: v.contiguous() for k, v in lstm.state_dict().items()},
              str(tmp_path / "sd.safetensors"))
    r = runtime_only(tmp_path, "convert", "sd.safetensors", "--arch", "lstm(batch_first)",
                     "-o", "sd.eseq")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("converted sd.safetensors -> sd.eseq")
    graph = artifact.load(tmp_path / "sd.eseq")
    x = np.random.default_rng(0).standard_normal((2, 5, 4)).astype(np.float32)
    with torch.no_grad():
        want = lstm(torch.from_numpy(x))[0].numpy()
    (got,) = reference.run(graph, {graph.inputs[0].name: x}).values()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_extra_for_reads_the_package_metadata():
    from edgeseq.cli import extra_for
    assert extra_for("onnxruntime.capi") == "onnx"
    assert extra_for("onnx") == "onnx"
    assert extra_for("ai_edge_litert.interpreter") == "tflite"
    assert extra_for("torch") == "torch"
    assert extra_for("numpy") is None           # a core dependency: no extra installs it
    assert extra_for("pytest") is None           # only in the test extra, never suggested


def test_submodules_reachable_after_bare_import():
    code = textwrap.dedent('''\
        import sys, edgeseq
        assert "edgeseq.runtime" not in sys.modules and "edgeseq.converters" not in sys.modules
        assert callable(edgeseq.converters.onnx.convert)
        assert callable(edgeseq.converters.tflite.convert)
        assert callable(edgeseq.artifact.save)
        assert callable(edgeseq.runtime.Model) and callable(edgeseq.runtime.delta_calibrate)
        assert edgeseq.quant.__name__ == "edgeseq.quant"
        try:
            edgeseq.no_such_thing
        except AttributeError as e:
            assert "no_such_thing" in str(e)
        else:
            raise SystemExit("unknown attribute did not raise")
        print("ok")
        ''')
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, cwd="/")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def _options(parser: argparse.ArgumentParser, path: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield f"{path} {'/'.join(action.option_strings) or action.dest}", action


def test_every_option_has_help_text():
    from edgeseq.cli import build_parser
    parser = build_parser()
    missing = [name for name, a in _options(parser, "edgeseq") if not a.help]
    assert not missing, f"options without help text: {missing}"
    assert "Each command lives" not in parser.description


def test_compare_prints_a_verdict_against_its_tolerance(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from edgeseq.cli import main
    assert main(["compare", str(CLASSIFIER), "--random", "--dim", "3"]) == 0
    out = capsys.readouterr().out
    assert "OK: every output within max rel err <= 0.0001 (default for float32 weights)" in out
    assert main(["compare", str(CLASSIFIER), "--random", "--dim", "3", "--tol", "1e-12"]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH: logits over the tolerance max rel err <= 1e-12 (given by --tol)" in out


def test_run_warns_once_per_model_for_missing_state_and_float64(rng):
    from edgeseq import testing
    from edgeseq.runtime import Model
    graph = testing.lstm_graph(rng, 3, 4, initial_state=True)
    states = [v.name for v in graph.inputs[1:] if v.dtype.startswith("float")]
    assert states, [v.name for v in graph.inputs]
    x = rng.standard_normal((5, 1, 3))                   # float64
    model = Model(graph)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        first = model.run({graph.inputs[0].name: x})
        model.run({graph.inputs[0].name: x})            # the same mistakes: no new warning
    msgs = [str(w.message) for w in got]
    assert len(msgs) == 1 + len(states), msgs
    assert sum("float64 converted to float32" in m for m in msgs) == 1
    for name in states:
        assert sum(f"input '{name}' (a recurrent initial state) not given" in m
                   for m in msgs) == 1, msgs
    assert all(w.filename == __file__ for w in got), [w.filename for w in got]
    # given explicitly, in float32: silent, and the same result (zeros were used)
    feed = {graph.inputs[0].name: x.astype(np.float32)}
    feed.update({v.name: np.zeros([d if isinstance(d, int) else 1 for d in v.shape],
                                  np.float32) for v in graph.inputs[1:]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = Model(graph).run(feed)
    for k in first:
        np.testing.assert_array_equal(first[k], again[k])
