"""The `edgeseq` command line: --version, `inspect` (tables and JSON), and the error contract
(one line on stderr, exit status 2; --debug shows the traceback)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeseq import __version__, artifact
from edgeseq.cli import main
from edgeseq.errors import ArtifactError
from edgeseq.graph import Node, Value
from edgeseq.ops import Op
from edgeseq.testing import gru_graph, lstm_graph, lstm_weights, recurrent_graph


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeseq", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def lstm_art(tmp_path, rng) -> Path:
    g = lstm_graph(rng, 5, 6, direction="bidirectional", proj_size=3, peephole=True,
                   coupled_gate="input", layer_norm=True, cell_clip=3.0, seq_lens=True,
                   activations=["sigmoid", "tanh", "relu"])
    return artifact.save(g, tmp_path / "lstm.eseq", producer="test", source="sha256:feed")


@pytest.fixture
def int8_art(tmp_path, rng) -> Path:
    """A factored int8 LSTM feeding a float32 Gemm head."""
    w = lstm_weights(rng, 4, 8)
    u, s, vt = np.linalg.svd(w.pop("w_h")[0].astype(np.float64), full_matrices=False)
    w["w_h_u"] = (u[:, :2] * s[:2]).astype(np.float32)[None]
    w["w_h_v"] = vt[:2].astype(np.float32)[None]
    amax = np.abs(w["w_x"]).max(axis=-1)
    w["w_x.scale"] = (amax / 127).astype(np.float32)
    w["w_x"] = np.rint(w["w_x"] / w["w_x.scale"][..., None]).astype(np.int8)
    g = recurrent_graph(Op.LSTM, 4, {"hidden_size": 8}, w)
    g.nodes.append(Node("head", Op.RESHAPE, ["y_h"], ["h2"], {"shape": (-1, 8)}))
    g.nodes.append(Node("fc", Op.GEMM, ["h2", "fc.w", "fc.b"], ["logits"], {"trans_b": True}))
    g.constants["fc.w"] = rng.standard_normal((3, 8)).astype(np.float32)
    g.constants["fc.b"] = np.zeros(3, np.float32)
    g.outputs = [Value("logits", "float32", ())]
    return artifact.save(g.validate(), tmp_path / "int8.eseq")


def test_version():
    r = _cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"edgeseq {__version__}"


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "edgeseq"
    assert exe.exists(), "console script 'edgeseq' missing: reinstall with pip install -e ."
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and __version__ in r.stdout


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "inspect" in capsys.readouterr().out


def test_inspect_table(lstm_art, capsys):
    assert main(["inspect", str(lstm_art)]) == 0
    out = capsys.readouterr().out
    for want in ("lstm", "LSTM", "bidirectional", "proj=3", "peephole", "cifg(input derived)",
                 "layer_norm", "cell_clip=3", "seq_lens", "act=sigmoid,tanh,relu",
                 "(T, N, 5)", "(T, 2, N, 3)", "(N,)", "float32", "producer test",
                 "sha256:feed", "verified"):
        assert want in out, f"{want!r} missing from:\n{out}"
    g = artifact.load(lstm_art)
    total = sum(c.size for c in g.constants.values())
    assert f"{total:,}" in out


def test_inspect_json_facts(lstm_art, capsys):
    assert main(["inspect", str(lstm_art), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    g = artifact.load(lstm_art)
    (layer,) = s["layers"]
    assert layer == {**layer, "node": "lstm", "op": "LSTM", "direction": "bidirectional",
                     "num_directions": 2, "input_size": 5, "hidden_size": 6, "proj_size": 3,
                     "peephole": True, "coupled_gate": "input", "layer_norm": True,
                     "cell_clip": 3.0, "proj_clip": 0.0, "gate_clip": 0.0, "factored_rank": 0,
                     "layout": "time_major", "sequence_lens": True, "initial_state": False,
                     "activations": ["sigmoid", "tanh", "relu"] * 2}
    assert layer["weight_dtypes"] == {k: "float32" for k in g.nodes[0].weights}
    total = sum(int(c.size) for c in g.constants.values())
    assert layer["params"] == s["parameters"]["count"] == total
    assert s["parameters"]["bytes"] == 4 * total
    assert s["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["T", "N", 5]},
                           {"name": "sequence_lens", "dtype": "int32", "shape": ["N"]}]
    assert s["outputs"][0] == {"name": "y", "dtype": "float32", "shape": ["T", 2, "N", 3]}
    assert s["ops"] == {"LSTM": 1}
    assert s["artifact"]["version"] == "1.0" and s["artifact"]["checksum_verified"]
    assert s["artifact"]["file_bytes"] == lstm_art.stat().st_size


def test_inspect_bytes_by_dtype_for_int8_and_factored(int8_art, capsys):
    assert main(["inspect", str(int8_art), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    by = s["parameters"]["by_dtype"]
    assert by["int8"] == {"count": 32 * 4, "bytes": 32 * 4}
    # float32: scale 32 + bias 32 + factors 32*2 + 2*8 + head 3*8 + 3
    f32 = 32 + 32 + 64 + 16 + 24 + 3
    assert by["float32"] == {"count": f32, "bytes": 4 * f32}
    lstm, fc = s["layers"]
    assert lstm["factored_rank"] == 2
    assert lstm["weight_dtypes"]["w_x"] == "int8" and lstm["weight_dtypes"]["w_h_u"] == "float32"
    assert lstm["params_by_dtype"]["int8"]["count"] == 128     # the scale is counted with w_x
    assert fc == {**fc, "node": "fc", "op": "Gemm", "params": 27, "bytes": 108}
    assert s["ops"] == {"LSTM": 1, "Reshape": 1, "Gemm": 1}
    assert main(["inspect", str(int8_art)]) == 0
    out = capsys.readouterr().out
    assert "rank=2" in out and "int8" in out and "Gemm" in out


def test_inspect_gru_features(tmp_path, rng, capsys):
    path = artifact.save(gru_graph(rng, 3, 4, linear_before_reset=True, batch_first=True),
                         tmp_path / "gru.eseq")
    assert main(["inspect", str(path), "--json"]) == 0
    (layer,) = json.loads(capsys.readouterr().out)["layers"]
    assert layer["linear_before_reset"] is True and layer["layout"] == "batch_first"
    assert "peephole" not in layer


def _bad_files(src: Path, d: Path) -> dict[str, tuple[Path, str]]:
    raw = src.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    cases = {
        "truncated": (raw[:8 + n // 2], "truncated: header length"),
        "data_truncated": (raw[:-3], "data region truncated"),
        "flipped": (raw[:-5] + bytes([raw[-5] ^ 1]) + raw[-4:], "checksum mismatch"),
        "empty": (b"", "empty file"),
        "random": (np.random.default_rng(3).bytes(100), "not an edgeseq artifact"),
    }
    out = {}
    for k, (data, msg) in cases.items():
        p = d / f"{k}.eseq"
        p.write_bytes(data)
        out[k] = (p, msg)
    return out


def test_inspect_bad_files_one_line_exit_2(lstm_art, tmp_path, capsys):
    for case, (path, msg) in _bad_files(lstm_art, tmp_path).items():
        assert main(["inspect", str(path)]) == 2, case
        cap = capsys.readouterr()
        assert cap.out == ""
        lines = cap.err.strip().splitlines()
        assert len(lines) == 1, cap.err
        assert lines[0].startswith("edgeseq inspect: ArtifactError: ") and msg in lines[0] \
            and str(path) in lines[0], lines[0]


def test_inspect_no_verify_skips_the_checksum(lstm_art, tmp_path, capsys):
    raw = lstm_art.read_bytes()
    bad = tmp_path / "flipped.eseq"
    bad.write_bytes(raw[:-5] + bytes([raw[-5] ^ 1]) + raw[-4:])
    assert main(["inspect", str(bad)]) == 2
    capsys.readouterr()
    assert main(["inspect", str(bad), "--no-verify"]) == 0
    assert "(not verified)" in capsys.readouterr().out


def test_inspect_missing_file(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "nope.eseq")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No such file" in err[0] and "nope.eseq" in err[0]


def test_debug_raises_instead_of_one_line(lstm_art, tmp_path):
    bad = tmp_path / "bad.eseq"
    bad.write_bytes(lstm_art.read_bytes()[:20])
    for argv in (["--debug", "inspect", str(bad)], ["inspect", "--debug", str(bad)]):
        with pytest.raises(ArtifactError, match="truncated"):
            main(argv)


def test_bad_file_via_subprocess(lstm_art, tmp_path):
    """The real process: one line and status 2; with --debug a traceback (status 1)."""
    bad = tmp_path / "bad.eseq"
    bad.write_bytes(lstm_art.read_bytes()[:-1])
    r = _cli("inspect", str(bad))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "ArtifactError" in r.stderr
    r = _cli("--debug", "inspect", str(bad))
    assert r.returncode == 1 and "Traceback" in r.stderr and "data region truncated" in r.stderr
    r = _cli("inspect", str(lstm_art), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["layers"][0]["node"] == "lstm"


def test_inspect_a_real_converted_model(tmp_path, capsys):
    """The shipped demo classifier (2-layer LSTM, ONNX): layer facts and parameter counts agree
    with the ONNX initializers, counted here with the onnx library."""
    import onnx
    from onnx import numpy_helper

    from edgeseq.converters.onnx import convert

    src = Path(__file__).resolve().parents[2] / "edgeseq" / "data" / "demo_classifier.onnx"
    model = onnx.load(src)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    want_layers = []
    for node in model.graph.node:
        if node.op_type == "LSTM":
            w, r = inits[node.input[1]], inits[node.input[2]]
            b = inits[node.input[3]] if len(node.input) > 3 and node.input[3] else None
            # edgeseq sums ONNX's two biases (Wb + Rb) into one
            want_layers.append((w.shape[2], r.shape[2], w.size + r.size + (b.size // 2 if b is not None else 0)))
    path = artifact.save(convert(src), tmp_path / "demo.eseq", source=src)
    assert main(["inspect", str(path), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    got = [(f["input_size"], f["hidden_size"], f["params"]) for f in s["layers"] if f["op"] == "LSTM"]
    assert got == want_layers
    assert s["ops"]["LSTM"] == 2
    assert s["artifact"]["source"].startswith("sha256:")
    assert main(["inspect", str(path)]) == 0
    assert "LSTM" in capsys.readouterr().out
