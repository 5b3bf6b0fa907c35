"""Bad input end to end through the command line: every case ends with exit status 2 and a
clear message on stderr naming what is wrong (no traceback, no signal), never a crash or a
silently wrong output. Artifact/file damage runs in subprocesses (a bad mmap must not take the
process down); the rest runs `edgeseq.cli.main` in-process to keep the tier fast."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeseq import artifact, testing
from edgeseq.cli import main

ROOT = Path(__file__).resolve().parents[2]
CLASSIFIER = ROOT / "edgeseq" / "data" / "demo_classifier.onnx"


def _lstm_onnx(path: Path, rng, **attrs) -> Path:
    """A one-node ONNX LSTM (hidden 5, input 4); attrs may hold values edgeseq refuses."""
    h = attrs.pop("hidden_size", 5)
    w = numpy_helper.from_array(rng.standard_normal((1, 20, 4)).astype(np.float32), "W")
    r = numpy_helper.from_array(rng.standard_normal((1, 20, 5)).astype(np.float32), "R")
    node = helper.make_node("LSTM", ["X", "W", "R"], ["Y"], name="lstm0", hidden_size=h, **attrs)
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, (3, 1, 4))
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)
    m = helper.make_model(helper.make_graph([node], "g", [x], [y], initializer=[w, r]),
                          opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    raw = artifact.save(testing.lstm_graph(rng, 4, 5), d / "good.eseq").read_bytes()
    artifact.save(testing.gru_graph(rng, 4, 5, seq_lens=True), d / "lens.eseq")
    np.save(d / "lens_big.npy", np.array([4], np.int32))
    np.save(d / "lens_neg.npy", np.array([-1], np.int32))
    (d / "trunc.eseq").write_bytes(raw[:len(raw) // 2])
    (d / "empty.eseq").write_bytes(b"")
    (d / "junk.eseq").write_bytes(np.random.default_rng(1).bytes(3000))
    flipped = bytearray(raw)
    flipped[-7] ^= 0xFF
    (d / "flip.eseq").write_bytes(bytes(flipped))
    import safetensors.numpy as sn
    sn.save_file({"a": np.zeros(3, np.float32)}, str(d / "foreign.eseq"))
    (d / "adir.eseq").mkdir()
    np.save(d / "x.npy", rng.standard_normal((3, 1, 4)).astype(np.float32))
    np.save(d / "xi.npy", np.ones((3, 1, 4), np.int32))
    np.save(d / "x2d.npy", np.ones((3, 4), np.float32))
    np.save(d / "xdim.npy", np.ones((3, 1, 5), np.float32))
    xn = np.ones((3, 1, 4), np.float32)
    xn[1, 0, 1] = np.nan
    np.save(d / "xnan.npy", xn)
    np.save(d / "xinf.npy", np.full((3, 1, 4), np.inf, np.float32))
    np.save(d / "xobj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (d / "xcorrupt.npy").write_bytes(b"\x93NUMPY garbage")
    (d / "xtext.npy").write_text("hello")
    # ONNX: an unsupported op, unsupported attribute values, a size that disagrees
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, (3, 1, 4))
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)
    m = helper.make_model(helper.make_graph([helper.make_node("Sin", ["X"], ["Y"], name="sin0")],
                                            "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    onnx.save(m, d / "sin.onnx")
    _lstm_onnx(d / "gelu.onnx", rng, activations=["Sigmoid", "Gelu", "Tanh"])
    _lstm_onnx(d / "sideways.onnx", rng, direction="sideways")
    _lstm_onnx(d / "layout2.onnx", rng, layout=2)
    _lstm_onnx(d / "hidden7.onnx", rng, hidden_size=7)
    (d / "junk.onnx").write_bytes(np.random.default_rng(2).bytes(500))
    # TFLite with unsupported operators (FLOOR, SQUARE, ADD with SIGN_BIT activation)
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import make_tflite_fixtures as fx
    finally:
        sys.path.pop(0)
    (d / "unsup.tflite").write_bytes(fx.unsupported_model())
    (d / "junk.tflite").write_bytes(np.random.default_rng(3).bytes(500))
    # a PyTorch state_dict of lstm(batch_first)+linear, and damaged state_dict files
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    lstm, linear = torch.nn.LSTM(4, 5, batch_first=True), torch.nn.Linear(5, 3)
    sd = {**{f"lstm.{k}": v for k, v in lstm.state_dict().items()},
          **{f"linear.{k}": v for k, v in linear.state_dict().items()}}
    torch.save(sd, d / "sd.pt")
    (d / "junk.pt").write_bytes(np.random.default_rng(4).bytes(500))
    (d / "junk.safetensors").write_bytes(np.random.default_rng(5).bytes(500))
    (d / "trunc.safetensors").write_bytes(raw[:300])
    (d / "model.xyz").write_bytes(b"abc")
    return d


def _check_one_line_exit_2(rc: int, err: str, match: str) -> None:
    assert rc == 2, f"exit status {rc} (want 2); stderr:\n{err}"
    assert "Traceback" not in err, err
    assert match in err, f"{match!r} not in {err!r}"


# (argv with {B} for the fixture dir, text the error must contain)
CASES = [
    (["run", "{B}/good.eseq", "--input", "z={B}/x.npy"], "unknown input(s) ['z']"),
    (["run", "{B}/good.eseq"], "missing input 'x'"),
    (["run", "{B}/good.eseq", "--input", "x"], "--input expects NAME=FILE.npy"),
    (["run", "{B}/good.eseq", "--input", "x={B}/x2d.npy"], "got rank 2"),
    (["run", "{B}/good.eseq", "--input", "x={B}/xdim.npy"], "dim 2 must be 4"),
    (["run", "{B}/good.eseq", "--input", "x={B}/xi.npy"], "got dtype int32"),
    (["run", "{B}/good.eseq", "--input", "x={B}/xnan.npy"], "1 non-finite value"),
    (["run", "{B}/good.eseq", "--input", "x={B}/xinf.npy"], "12 non-finite value"),
    (["run", "{B}/good.eseq", "--engine", "reference", "--input", "x={B}/xnan.npy"],
     "input 'x': 1 non-finite value"),
    (["run", "{B}/lens.eseq", "--input", "x={B}/x.npy", "--input",
      "sequence_lens={B}/lens_big.npy"],
     "node 'gru' (GRU): sequence_lens must be 1 values in [0, 3], got [4]"),
    (["run", "{B}/lens.eseq", "--input", "x={B}/x.npy", "--input",
      "sequence_lens={B}/lens_neg.npy"], "in [0, 3], got [-1]"),
    (["run", "{B}/lens.eseq", "--engine", "reference", "--input", "x={B}/x.npy", "--input",
      "sequence_lens={B}/lens_big.npy"], "sequence_lens must be 1 values in [0, 3], got [4]"),
    (["run", "{B}/good.eseq", "--input", "x={B}/xobj.npy"], "xobj.npy is not a readable .npy"),
    (["run", "{B}/good.eseq", "--input", "x={B}/xcorrupt.npy"],
     "xcorrupt.npy is not a readable .npy"),
    (["run", "{B}/good.eseq", "--input", "x={B}/xtext.npy"], "xtext.npy is not a readable .npy"),
    (["run", "{B}/good.eseq", "--input", "x={B}/nope.npy"], "No such file"),
    (["run", "{B}/good.eseq", "--input", "x={B}/x.npy", "--delta", "abc"], "--delta expects"),
    (["run", "{B}/good.eseq", "--input", "x={B}/x.npy", "--delta", "-1"], "finite and >= 0"),
    (["run", "{B}/good.eseq", "--input", "x={B}/x.npy", "--output-dir", "{B}/x.npy"],
     "File exists"),
    (["run", "{B}", "--input", "x={B}/x.npy"], "Is a directory"),
    (["run", "{B}/model.xyz", "--input", "x={B}/x.npy"],
     "ArtifactError: {B}/model.xyz: truncated"),
    (["convert", "{B}/sin.onnx", "-o", "{B}/o.eseq"],
     "op Sin (opset 14): no handler; nodes 'sin0'"),
    (["convert", "{B}/gelu.onnx", "-o", "{B}/o.eseq"], "'lstm0' (LSTM)"),
    (["convert", "{B}/sideways.onnx", "-o", "{B}/o.eseq"],
     "node 'lstm0' (LSTM): direction 'sideways' is not one of"),
    (["convert", "{B}/layout2.onnx", "-o", "{B}/o.eseq"],
     "node 'lstm0' (LSTM): layout must be 0 or 1, got 2"),
    (["convert", "{B}/hidden7.onnx", "-o", "{B}/o.eseq"], "do not match hidden_size=7"),
    (["convert", "{B}/junk.onnx", "-o", "{B}/o.eseq"], "not a readable ONNX model"),
    (["convert", "{B}/unsup.tflite", "-o", "{B}/o.eseq"], "operator #0 FLOOR (version 1)"),
    (["convert", "{B}/junk.tflite", "-o", "{B}/o.eseq"], "not a TFLite flatbuffer"),
    (["convert", "{B}/sd.pt", "--arch", "gru+linear", "-o", "{B}/o.eseq"],
     "these weights are not a GRU"),
    (["convert", "{B}/sd.pt", "--arch", "lstm(((", "-o", "{B}/o.eseq"], "cannot parse 'lstm((('"),
    (["convert", "{B}/sd.pt", "-o", "{B}/o.eseq"], "needs --arch"),
    (["convert", "{B}/junk.pt", "--arch", "lstm+linear", "-o", "{B}/o.eseq"],
     "not a loadable state_dict"),
    (["convert", "{B}/junk.safetensors", "--arch", "lstm+linear", "-o", "{B}/o.eseq"],
     "not a readable .safetensors state_dict"),
    (["convert", "{B}/trunc.safetensors", "--arch", "lstm+linear", "-o", "{B}/o.eseq"],
     "not a readable .safetensors state_dict"),
    (["convert", "{B}/unsup.tflite", "--arch", "lstm", "-o", "{B}/o.eseq"],
     "option(s) ['arch'] do not apply to '.tflite' models"),
    (["convert", str(CLASSIFIER), "--arch", "lstm", "-o", "{B}/o.eseq"],
     "option(s) ['arch'] do not apply to '.onnx' models"),
    (["convert", str(ROOT / "tests/fixtures/tflite/keras_bidi_float.tflite"), "--shape", "x=1,2",
      "-o", "{B}/o.eseq"],
     "--shape ['x'] not a graph input; inputs: ['serving_default_input"),
    (["convert", "{B}/model.xyz", "-o", "{B}/o.eseq"], "no converter for '.xyz'"),
    (["convert", "{B}/nope.onnx", "-o", "{B}/o.eseq"], "no such model file"),
    (["convert", str(CLASSIFIER), "--shape", "x=1,2.5", "-o", "{B}/o.eseq"], "--shape expects"),
    (["convert", str(CLASSIFIER), "--shape", "zz=1,2", "-o", "{B}/o.eseq"],
     "'zz' is not a graph input"),
    (["convert", str(CLASSIFIER), "--svd-rank", "0", "-o", "{B}/o.eseq"], "rank must be >= 1"),
    (["convert", str(CLASSIFIER), "--weights", "int8", "--calibrate", "{B}/xtext.npy",
      "-o", "{B}/o.eseq"], "not a readable .npz"),
    (["convert", str(CLASSIFIER), "--weights", "int8", "--calibrate", "{B}/x.npy",
      "-o", "{B}/o.eseq"], "must be an .npz archive"),
    (["compare", str(CLASSIFIER), "{B}/good.eseq", "--random"], "onnxruntime refused the inputs"),
    (["compare", str(CLASSIFIER), "--input", "x={B}/x.npy"], "dim 1 must be 29"),
    (["compare", str(CLASSIFIER)], "give --input NAME=FILE.npy or --random"),
    (["compare", "{B}/good.eseq", "--random"], "no peer runtime for '.eseq'"),
    (["compare", "{B}/sin.onnx", "--random"], "op Sin"),
    (["compare", "{B}/sd.pt", "--random"], "needs --arch"),
]


@pytest.mark.parametrize("argv,match", CASES, ids=[" ".join(a[:2]) + f" #{k}"
                                                   for k, (a, _) in enumerate(CASES)])
def test_cli_bad_input_exit_2(argv, match, bad, capsys):
    rc = main([a.replace("{B}", str(bad)) for a in argv])
    _check_one_line_exit_2(rc, capsys.readouterr().err, match.replace("{B}", str(bad)))


# damaged or foreign files, in a child process each (a crash would show as a signal)
SUBPROCESS = [
    (["run", "{B}/trunc.eseq", "--input", "x={B}/x.npy"],
     "ArtifactError: {B}/trunc.eseq: truncated"),
    (["run", "{B}/empty.eseq", "--input", "x={B}/x.npy"], "empty file (0 bytes)"),
    (["run", "{B}/junk.eseq", "--input", "x={B}/x.npy"], "not an edgeseq artifact"),
    (["run", "{B}/flip.eseq", "--input", "x={B}/x.npy"], "checksum mismatch"),
    (["run", "{B}/foreign.eseq", "--input", "x={B}/x.npy"], "without edgeseq metadata"),
    (["run", "{B}/adir.eseq", "--input", "x={B}/x.npy"], "Is a directory"),
    (["run", "{B}/nope.eseq", "--input", "x={B}/x.npy"], "No such file"),
    (["inspect", "{B}/trunc.eseq"], "truncated"),
    (["inspect", "{B}/sin.onnx"], "convert it first"),
    (["inspect", "{B}/adir.eseq"], "Is a directory"),
    (["run", "{B}/good.eseq", "--input", "x={B}/xnan.npy"], "non-finite"),
]


@pytest.mark.parametrize("argv,match", SUBPROCESS, ids=[" ".join(a[:2]) + f" #{k}"
                                                         for k, (a, _) in enumerate(SUBPROCESS)])
def test_cli_damaged_files_in_a_subprocess(argv, match, bad):
    b = str(bad)
    p = subprocess.run([sys.executable, "-m", "edgeseq", *[a.replace("{B}", b) for a in argv]],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    assert p.returncode >= 0, f"killed by signal {-p.returncode}: {p.stderr}"
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    _check_one_line_exit_2(p.returncode, p.stderr, match.replace("{B}", b))


def test_artifact_under_any_name_runs(bad, tmp_path, capsys):
    """`convert -o model.bin` writes an artifact; `run model.bin` must read it back."""
    rc = main(["convert", str(CLASSIFIER), "-o", str(tmp_path / "model.bin")])
    assert rc == 0, capsys.readouterr().err
    np.save(tmp_path / "x.npy", np.zeros((2, 29, 12), np.float32))
    rc = main(["run", str(tmp_path / "model.bin"), "--input", f"x={tmp_path}/x.npy"])
    assert rc == 0, capsys.readouterr().err


def test_cli_float64_and_empty_inputs_run(bad, tmp_path, capsys):
    """float64 is converted to float32 (docs/runtime.md); T=0 and N=0 give empty outputs."""
    rng = np.random.default_rng(7)
    for name, x in [("x64", rng.standard_normal((3, 1, 4))),
                    ("xT0", np.zeros((0, 1, 4), np.float32)),
                    ("xN0", np.zeros((3, 0, 4), np.float32))]:
        np.save(tmp_path / f"{name}.npy", x)
        out = tmp_path / name
        rc = main(["run", str(bad / "good.eseq"), "--input", f"x={tmp_path}/{name}.npy",
                   "--output-dir", str(out)])
        assert rc == 0, capsys.readouterr().err
        y = np.load(out / "y.npy")
        assert y.dtype == np.float32 and y.shape == (x.shape[0], 1, x.shape[1], 5)
        assert np.isfinite(y).all()


def test_bench_unknown_case_is_refused(capsys):
    # was: an empty table and exit status 0
    rc = main(["bench", "--cases", "nope"])
    _check_one_line_exit_2(rc, capsys.readouterr().err, "unknown case")


def test_demo_of_a_broken_user_model_exits_2(tmp_path, capsys):
    # was: FAILED on stdout and exit status 1
    bad_model = tmp_path / "bad.onnx"
    bad_model.write_bytes(b"garbage")
    rc = main(["demo", "--model", str(bad_model)])
    _check_one_line_exit_2(rc, capsys.readouterr().err, "not a readable ONNX model")
