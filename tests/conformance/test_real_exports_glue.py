"""Real converter outputs whose refusal was a glue op, not a loop: Keras `unroll=True` (TFLite
SPLIT per step) and LayerNormalization as tf2onnx writes it for tf-keras (BatchNormalization
with a mean and variance computed at run time) and as Keras 3's TFLite file writes it (NEG).

The fixtures (tests/fixtures/real_exports/glue) were written by tools/real_exports.py with
TensorFlow 2.21's TFLite converter and tf2onnx 1.17; each `<model>.npz` holds the fixed input x
and Keras' own output y0. The file's own runtime (TFLite interpreter, onnxruntime) is a second
reference.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeseq.ops import Op
from edgeseq.runtime import Model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "real_exports" / "glue"
TOL = 1e-5

# file -> the IR op its formerly refused operator must now produce
CASES = {
    # unroll=True: the per-step SPLITs convert, then converters/reroll.py re-rolls the copies
    "k2_unroll.tflite_float.tflite": Op.LSTM,        # tf-keras unroll=True: SPLIT of the gates
    "k3_unroll.tflite_float.tflite": Op.LSTM,        # Keras 3 unroll=True
    "k2_layernorm.onnx13.onnx": Op.SQRT,             # BatchNormalization with computed stats
    "k3_layernorm.tflite_float.tflite": Op.NEG,      # Keras 3 LayerNormalization's NEG
}


def _convert(path: Path):
    if path.suffix == ".onnx":
        from edgeseq.converters.onnx import convert
    else:
        from edgeseq.converters.tflite import convert
    return convert(path)


def _own_runtime(path: Path, x: np.ndarray) -> np.ndarray:
    if path.suffix == ".onnx":
        ort = pytest.importorskip("onnxruntime")
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (out,) = s.run(None, {s.get_inputs()[0].name: x})
        return out
    from edgeseq.converters.tflite.interpreter import interpreter_class
    it = interpreter_class()(model_path=str(path))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


@pytest.mark.parametrize("name", sorted(CASES))
def test_converts_and_matches_keras_and_own_runtime(name):
    path = FIXTURES / name
    ref = np.load(FIXTURES / (name.split(".")[0] + ".npz"))
    x, keras_y = ref["x"], ref["y0"]
    graph = _convert(path)
    assert CASES[name] in {n.op for n in graph.nodes}
    (inp,), (out,) = graph.inputs, graph.outputs
    got = Model(graph).run({inp.name: x})[out.name]
    assert got.shape == keras_y.shape
    assert np.max(np.abs(got - keras_y)) <= TOL
    assert np.max(np.abs(got - _own_runtime(path, x))) <= TOL


def test_a_split_that_does_not_divide_its_axis_is_refused_naming_the_operator(tmp_path):
    """The unrolled file with one SPLIT's gate axis (4 x 6 units) declared one wider: no equal
    parts, so that operator is refused by its index and name (not split unevenly)."""
    flatbuffers = pytest.importorskip("flatbuffers")
    fb = pytest.importorskip("ai_edge_litert.schema_py_generated")
    from edgeseq.errors import UnsupportedModelError
    data = (FIXTURES / "k3_unroll.tflite_float.tflite").read_bytes()
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0))
    sub = model.subgraphs[0]
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    k, op = next((k, o) for k, o in enumerate(sub.operators)
                 if codes[o.opcodeIndex] == fb.BuiltinOperator.SPLIT)
    x = sub.tensors[op.inputs[1]]
    x.shape = np.array(list(x.shape[:-1]) + [x.shape[-1] + 1], np.int32)
    b = flatbuffers.Builder(len(data) + 1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    path = tmp_path / "bad_split.tflite"
    path.write_bytes(bytes(b.Output()))
    with pytest.raises(UnsupportedModelError) as e:
        _convert(path)
    msg = str(e.value)
    assert f"operator #{k} SPLIT" in msg and f"dim of {x.shape[-1]} into 4 equal parts" in msg, msg
