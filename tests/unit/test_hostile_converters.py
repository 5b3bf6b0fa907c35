"""Hostile model files given to the converters: nothing stored in a file runs as code, and
every malformed file ends in one clear error naming the file (no raw Python exception).

.pt2: a payload that writes a marker file is planted in each slot torch.export.load would
execute (pickled weight, pickled constant, opaque object, sample inputs, legacy torch-format
weights, a symbolic-shape string, a call target). Each payload is first shown to be live
(torch.export.load runs it), then edgeseq must refuse it naming --trust-code.
"""
from __future__ import annotations

import io
import json
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeseq.cli import main
from edgeseq.errors import EdgeseqError, ModelFormatError, UntrustedCodeError

torch = pytest.importorskip("torch")


class _Payload:
    """Unpickling this writes `marker` (stands for any code an attacker would run)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def _torch_pickle(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save(_Payload(marker), buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    """A small saved program: GRU + Linear, with a buffer."""
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.GRU(3, 4, batch_first=True)
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.rnn(x)[0])
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("pt2") / "net.pt2"
    torch.export.save(torch.export.export(Net().eval(), (torch.randn(1, 5, 3),)), str(path))
    return path


def _rewrite(src: Path, dst: Path, edit, compression=zipfile.ZIP_STORED) -> Path:
    """Copy the archive, letting `edit(records)` change the {name: bytes} map (root stripped)."""
    with zipfile.ZipFile(src) as z:
        root = next(n for n in z.namelist() if n.endswith("/archive_format"))[:-len("archive_format")]
        records = {n[len(root):]: z.read(n) for n in z.namelist()}
    edit(records)
    with zipfile.ZipFile(dst, "w", compression) as z:
        for name, data in records.items():
            z.writestr(root + name, data)
    return dst


def _config(records, name: str) -> dict:
    return json.loads(records[name])


def _pickled_weight(marker):
    def edit(r):
        cfg = _config(r, "data/weights/model_weights_config.json")
        meta = cfg["config"]["fc.bias"]
        meta["use_pickle"], r["data/weights/" + meta["path_name"]] = True, _torch_pickle(marker)
        r["data/weights/model_weights_config.json"] = json.dumps(cfg).encode()
    return edit


def _constant(prefix: str, data):
    def make(marker):
        def edit(r):
            cfg = _config(r, "data/constants/model_constants_config.json")
            cfg["config"]["c0"] = {"path_name": f"{prefix}0", "is_param": False,
                                   "use_pickle": True, "tensor_meta": None}
            r["data/constants/model_constants_config.json"] = json.dumps(cfg).encode()
            r[f"data/constants/{prefix}0"] = data(marker)
        return edit
    return make


def _sample_inputs(marker):
    def edit(r):
        r["data/sample_inputs/model.pt"] = _torch_pickle(marker)
    return edit


def _legacy_weights(marker):
    def edit(r):
        r["data/weights/model.pt"] = _torch_pickle(marker)
    return edit


def _sym_expr(marker):
    code = f"__import__('builtins').exec(\"open({str(marker)!r}, 'w').write('ran')\")"

    def edit(r):
        doc = json.loads(r["models/model.json"])
        vals = doc["graph_module"]["graph"]["tensor_values"]
        first = next(iter(vals.values()))
        first["sizes"][0] = {"as_expr": {"expr_str": code, "hint": {"as_int": 1}}}
        r["models/model.json"] = json.dumps(doc).encode()
    return edit


def _call_target(marker):
    def edit(r):
        doc = json.loads(r["models/model.json"])
        doc["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"
        r["models/model.json"] = json.dumps(doc).encode()
    return edit


# slot -> (edit factory, whether torch.export.load itself runs the payload)
SLOTS = {
    "pickled weight": (_pickled_weight, True),
    "pickled tensor constant": (_constant("tensor_", _torch_pickle), True),
    "opaque object constant": (_constant("opaque_obj_", lambda m: pickle.dumps(_Payload(m))),
                               True),
    "sample inputs": (_sample_inputs, True),
    "legacy torch-format weights": (_legacy_weights, True),
    "symbolic shape string": (_sym_expr, True),
    "call target": (_call_target, False),
}


@pytest.mark.parametrize("slot", list(SLOTS))
def test_pt2_payload_never_runs(program, tmp_path, slot):
    from edgeseq.converters.registry import convert
    make, torch_runs_it = SLOTS[slot]
    marker = tmp_path / "marker"
    hostile = _rewrite(program, tmp_path / "hostile.pt2", make(marker))
    if torch_runs_it:      # the payload is live: torch's own loader executes it
        try:
            torch.export.load(str(hostile))
        except Exception:  # noqa: BLE001 - some payloads also break the load afterwards
            pass
        assert marker.exists(), "payload did not run under torch.export.load: test is void"
        marker.unlink()
    with pytest.raises(UntrustedCodeError, match="--trust-code") as e:
        convert(hostile)
    assert str(hostile) in str(e.value)
    assert not marker.exists()
    # the peer runner of `edgeseq compare` reads the same way
    from edgeseq.converters.torch.peer import run_exported
    with pytest.raises(UntrustedCodeError):
        run_exported(hostile, {"x": np.zeros((1, 5, 3), np.float32)})
    assert not marker.exists()


def test_pt2_cli_refuses_payload_and_writes_nothing(program, tmp_path, capsys):
    marker = tmp_path / "marker"
    hostile = _rewrite(program, tmp_path / "hostile.pt2", _legacy_weights(marker))
    out = tmp_path / "out.eseq"
    assert main(["convert", str(hostile), "-o", str(out)]) == 2
    assert "--trust-code" in capsys.readouterr().err
    assert main(["compare", str(hostile), "--random"]) == 2
    assert "--trust-code" in capsys.readouterr().err
    assert not marker.exists() and not out.exists()


def test_pt2_safe_read_matches_torch_load(program, tmp_path):
    """The data-only reader gives the same graph as torch.export.load on a clean file."""
    from edgeseq.converters.torch import convert_exported
    safe = convert_exported(program)
    trusted = convert_exported(program, trust_code=True)
    assert [n.op for n in safe.nodes] == [n.op for n in trusted.nodes]
    assert safe.constants.keys() == trusted.constants.keys()
    for k in safe.constants:
        np.testing.assert_array_equal(safe.constants[k], trusted.constants[k])


def test_pt2_trust_code_is_an_explicit_opt_in(program, tmp_path, capsys):
    """With --trust-code a pickled (benign) weight loads through torch as before."""
    def edit(r):
        cfg = _config(r, "data/weights/model_weights_config.json")
        meta = cfg["config"]["fc.bias"]
        buf = io.BytesIO()
        torch.save(torch.nn.Parameter(torch.tensor([0.5, -0.5])), buf)
        meta["use_pickle"], r["data/weights/" + meta["path_name"]] = True, buf.getvalue()
        r["data/weights/model_weights_config.json"] = json.dumps(cfg).encode()
    f = _rewrite(program, tmp_path / "pickled.pt2", edit)
    out = tmp_path / "o.eseq"
    # a weights-only pickle of a plain tensor is data: no opt-in needed
    assert main(["convert", str(f), "-o", str(out)]) == 0
    assert main(["convert", str(f), "-o", str(out), "--trust-code"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("damage", ["truncated", "no json", "bad json", "deep json",
                                    "huge record", "strides out of range"])
def test_pt2_malformed_archive_is_a_format_error(program, tmp_path, damage):
    from edgeseq.converters.registry import convert
    path = tmp_path / "bad.pt2"
    if damage == "truncated":
        path.write_bytes(program.read_bytes()[:700])
    else:
        def edit(r):
            if damage == "no json":
                del r["models/model.json"]
            elif damage == "bad json":
                r["models/model.json"] = r["models/model.json"][:-40]
            elif damage == "deep json":
                r["models/model.json"] = b"[" * 200_000 + b"]" * 200_000
            elif damage == "huge record":      # a decompression bomb
                r["data/weights/weight_0"] = bytes(64 << 20)
            else:
                cfg = _config(r, "data/weights/model_weights_config.json")
                cfg["config"]["fc.weight"]["tensor_meta"]["strides"][0] = {"as_int": 10**9}
                r["data/weights/model_weights_config.json"] = json.dumps(cfg).encode()
        _rewrite(program, path, edit, zipfile.ZIP_DEFLATED)
    with pytest.raises(ModelFormatError) as e:
        convert(path)
    assert str(path) in str(e.value)


def test_pt2_lstm_state_of_a_million_layers_is_refused_quickly(tmp_path):
    """Converter fuzz case 4100 (.pt2, seed 0): the LSTM's zero initial state resized to
    [1000003, 1, 5] converted, and with dynamic_time the re-export spent ~70 s in torch's
    LSTM decomposition unbinding a million layer states. Refused at lowering, naming file,
    node and field; in a child with a timeout, since the hang is the defect."""
    import subprocess

    class LstmNet(torch.nn.Module):        # the fuzzer's lstm.pt2 seed
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(3, 5, batch_first=True)
            self.fc = torch.nn.Linear(5, 2)

        def forward(self, x):
            return torch.softmax(self.fc(self.rnn(x)[0]), -1)
    torch.manual_seed(0)
    seed = tmp_path / "lstm.pt2"
    torch.export.save(torch.export.export(LstmNet().eval(), (torch.randn(1, 5, 3),)), str(seed))

    def edit(r):
        doc = json.loads(r["models/model.json"])
        zeros = [n for n in doc["graph_module"]["graph"]["nodes"]
                 if n["target"] == "torch.ops.aten.zeros.default"]
        assert zeros, "the seed program has no aten.zeros initial state"
        for n in zeros:
            n["inputs"][0]["arg"]["as_ints"] = [1000003, 1, 5]
        r["models/model.json"] = json.dumps(doc).encode()
    path = _rewrite(seed, tmp_path / "state.pt2", edit)
    code = f"""
from edgeseq.converters.torch import convert_exported
from edgeseq.errors import EdgeseqError
try:
    convert_exported({str(path)!r}, dynamic_time=True)
    print("converted")
except EdgeseqError as e:
    print("refused", type(e).__name__, str(e).replace(chr(10), " "))
"""
    # NOTE: a bound for a loaded machine (start-up + torch import included), not a benchmark
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.startswith("refused"), p.stdout
    for part in (str(path), "node 'lstm'", "field 'hx[0]'", "(1000003, 1, 5)"):
        assert part in p.stdout, (part, p.stdout)


# --- ONNX ------------------------------------------------------------------------------
def _onnx_with_constant(tmp_path: Path, constant: onnx.NodeProto) -> Path:
    """x + Constant -> y, with the Constant node given."""
    add = helper.make_node("Add", ["x", "c"], ["y"], name="add")
    g = helper.make_graph([constant, add], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, (2,))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, (2,))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "const.onnx"
    path.write_bytes(m.SerializeToString())
    return path


def _empty_tensor_constant():
    t = TensorProto()
    t.dims.extend([2])
    t.data_type = TensorProto.FLOAT           # two elements declared, none stored
    return helper.make_node("Constant", [], ["c"], name="c0", value=t)


def _no_attribute_constant():
    return helper.make_node("Constant", [], ["c"], name="c0")


def _string_constant():
    return helper.make_node("Constant", [], ["c"], name="c0",
                            value=helper.make_tensor("s", TensorProto.STRING, (1,), [b"ab"]))


def _two_attribute_constant():
    return helper.make_node("Constant", [], ["c"], name="c0", value_float=1.0, value_int=2)


@pytest.mark.parametrize("make", [_empty_tensor_constant, _no_attribute_constant,
                                  _string_constant, _two_attribute_constant])
def test_onnx_malformed_constant_is_named(tmp_path, make):
    from edgeseq.converters.onnx import convert
    path = _onnx_with_constant(tmp_path, make())
    with pytest.raises(EdgeseqError) as e:
        convert(path)
    msg = str(e.value)
    assert path.name in msg and "'c0'" in msg


def test_onnx_malformed_initializer_and_every_problem_at_once(tmp_path):
    """A truncated initializer and a bad Constant in one file: one error listing the first
    stage's damage (initializers are read before nodes), naming file, tensor and field."""
    from edgeseq.converters.onnx import convert
    bad = numpy_helper.from_array(np.ones(4, np.float32), "w")
    bad.raw_data = bad.raw_data[:5]
    add = helper.make_node("Add", ["x", "w"], ["y"], name="add")
    g = helper.make_graph([add], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, (4,))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, (4,))],
                          initializer=[bad])
    path = tmp_path / "init.onnx"
    path.write_bytes(helper.make_model(g).SerializeToString())
    with pytest.raises(ModelFormatError) as e:
        convert(path)
    assert e.value.file == path.name and e.value.node == "w" and e.value.field == "initializer"


def test_onnx_all_node_problems_at_once(tmp_path):
    """Two damaged Constants and an unsupported op are reported together."""
    from edgeseq.converters.onnx import convert
    nodes = [_no_attribute_constant(),
             helper.make_node("Constant", [], ["d"], name="d0"),
             helper.make_node("Add", ["x", "c"], ["s"], name="add"),
             helper.make_node("Add", ["s", "d"], ["t"], name="add2"),
             helper.make_node("NoSuchOp", ["t"], ["y"], name="weird")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (2,))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, (2,))])
    path = tmp_path / "many.onnx"
    path.write_bytes(helper.make_model(g).SerializeToString())
    with pytest.raises(ModelFormatError) as e:
        convert(path)
    msg = str(e.value)
    assert all(s in msg for s in ("'c0'", "'d0'", "NoSuchOp")), msg
    assert e.value.node == "c0" and e.value.field == "attribute"


# --- TFLite ----------------------------------------------------------------------------
TFLITE = Path(__file__).resolve().parents[1] / "fixtures" / "tflite" / "keras_stacked_float.tflite"


def _tflite_edit(tmp_path: Path, edit) -> Path:
    """The fixture re-packed after `edit(model)` changed its object-API tree."""
    flatbuffers = pytest.importorskip("flatbuffers")
    fb = pytest.importorskip("ai_edge_litert.schema_py_generated")
    data = TFLITE.read_bytes()
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0))
    edit(model)
    b = flatbuffers.Builder(len(data) + 1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    path = tmp_path / "damaged.tflite"
    path.write_bytes(bytes(b.Output()))
    return path


def _set(obj, name, value):
    setattr(obj, name, value)


TFLITE_DAMAGE = {
    "opcode index": (lambda m: _set(m.subgraphs[0].operators[0], "opcodeIndex", 250),
                     "opcodeIndex"),
    "subgraph input": (lambda m: _set(m.subgraphs[0], "inputs", np.array([9999], np.int32)),
                       "inputs[0]"),
    "subgraph output": (lambda m: _set(m.subgraphs[0], "outputs", np.array([-7], np.int32)),
                        "outputs[0]"),
    "no buffers": (lambda m: _set(m, "buffers", None), "buffer"),
    "no tensors": (lambda m: _set(m.subgraphs[0], "tensors", None), "inputs[0]"),
    "operator operand": (lambda m: _set(m.subgraphs[0].operators[0], "inputs",
                                        np.array([0, 5000], np.int32)), "inputs[1]"),
}


@pytest.mark.parametrize("damage", list(TFLITE_DAMAGE))
def test_tflite_broken_reference_is_a_format_error(tmp_path, damage):
    from edgeseq.converters.tflite import convert
    edit, field = TFLITE_DAMAGE[damage]
    path = _tflite_edit(tmp_path, edit)
    with pytest.raises(ModelFormatError) as e:
        convert(path)
    assert str(path) in str(e.value) and e.value.field == field


def test_tflite_operand_problems_name_the_file(tmp_path):
    """An error raised while reading an operand (buffer size vs shape) names the file."""
    from edgeseq.converters.tflite import convert

    def edit(m):
        sub = m.subgraphs[0]
        for t in sub.tensors:
            buf = m.buffers[t.buffer]
            if buf.data is not None and len(buf.data) > 8:
                buf.data = buf.data[:-4]        # one float short
                return
    with pytest.raises(EdgeseqError) as e:
        convert(_tflite_edit(tmp_path, edit))
    assert "damaged.tflite" in str(e.value)


# --- a deterministic slice of the converter fuzzers (tools/fuzz_converters.py) ---------
def _fuzz_module():
    import importlib.util
    path = Path(__file__).resolve().parents[2] / "tools" / "fuzz_converters.py"
    spec = importlib.util.spec_from_file_location("fuzz_converters", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fuzz_converters", module)     # dataclasses look the module up
    spec.loader.exec_module(module)
    return sys.modules["fuzz_converters"]


@pytest.mark.parametrize("fmt,cases", [("onnx", 12), ("tflite", 12), ("pt2", 4)])
def test_fuzz_slice(tmp_path, fmt, cases):
    """The first cases of the long fuzz run (seed 0), in-process: each converts or is refused
    with an error naming the file; no planted payload runs."""
    fc = _fuzz_module()
    target = fc.TARGETS[fmt]
    seeds = target.seeds()
    marker = tmp_path / "payload-ran"
    outcomes = []
    for index in range(cases):
        entry, data = fc.case_bytes(target, seeds, 0, index, str(marker))
        path = tmp_path / f"case{index}{target.suffix}"
        path.write_bytes(data)
        outcomes.append(fc.classify(target, path, dict(entry[2]), differential=False))
        assert not marker.exists(), f"case {index}: a planted payload ran"
    bad = [(k, o) for k, o in enumerate(outcomes) if not o.startswith(("converted", "refused"))]
    assert not bad, bad
    assert any(o.startswith("refused") for o in outcomes)


def test_onnx_cases_that_aborted_in_onnx_shape_inference(tmp_path):
    """Two fuzz cases on which onnx's C++ shape inference fails an assertion and aborts the
    process (1548: a dangling Squeeze input, std::clamp; 1933: std::vector::operator[]).
    Run in a child, as before the fix they killed it with SIGABRT."""
    import subprocess
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2] / 'tools')!r})
from pathlib import Path
import fuzz_converters as fc
from edgeseq.errors import EdgeseqError
t = fc.TARGETS["onnx"]
seeds = t.seeds()
for case in (1548, 1933):
    entry, data = fc.case_bytes(t, seeds, 0, case)
    path = Path({str(tmp_path)!r}) / f"case{{case}}.onnx"
    path.write_bytes(data)
    try:
        t.convert(path, dict(entry[2]))
        print(case, "converted")
    except EdgeseqError as e:
        print(case, "refused", path.name in str(e))
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.split("\n")
    assert "1548 refused True" in lines, p.stdout
    assert "1933 converted" in lines or "1933 refused True" in lines, p.stdout


def test_onnx_option_errors_name_the_file(tmp_path):
    """--fix naming an input the (damaged) file does not have: the error names the file
    (fuzz case 3169: a mutation dropped silero's 'sr' input)."""
    from edgeseq.converters.onnx import convert
    path = _onnx_with_constant(tmp_path, helper.make_node("Constant", [], ["c"], name="c0",
                                                           value_floats=[1.0, 2.0]))
    with pytest.raises(EdgeseqError, match="not a graph input") as e:
        convert(path, fix={"sr": 16000})
    assert path.name in str(e.value)
