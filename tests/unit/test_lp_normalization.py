"""L2 / L1 normalisation (IR op LpNormalization): the float64 reference and the float32 runtime
kernel against onnxruntime (ONNX LpNormalization), the TFLite interpreter (L2_NORMALIZATION,
written with the flatbuffer builders of tools/make_tflite_fixtures.py) and PyTorch
(F.normalize and a bare vector norm through from_module), including zero and tiny vectors
where the epsilon of each origin decides the result."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper

from edgeseq import reference
from edgeseq.converters import onnx as onnx_conv
from edgeseq.converters import tflite as tflite_conv
from edgeseq.converters.torch import from_module
from edgeseq.converters.tflite.interpreter import run_tflite
from edgeseq.ops import Op
from edgeseq.runtime import Model

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import make_tflite_fixtures as fx  # noqa: E402

TOL_REF = 1e-6       # reference (float64) vs a float32 origin on unit-scale data
TOL_RT = 1e-5        # float32 runtime vs the float64 reference


def _data(rng, shape, axis):
    x = rng.standard_normal(shape).astype(np.float32)
    # one all-zero vector and one tiny vector along the normalised axis
    idx = [0] * len(shape)
    idx[axis] = slice(None)
    x[tuple(idx)] = 0.0
    idx[-1 if axis != len(shape) - 1 else 0] = 1 if shape[-1 if axis != len(shape) - 1 else 0] > 1 else 0
    x[tuple(idx)] = 1e-9
    return x


def _onnx_model(path: Path, shape, axis: int, p: int) -> None:
    node = helper.make_node("LpNormalization", ["x"], ["y"], axis=axis, p=p)
    g = helper.make_graph([node], "lpn",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(m.SerializeToString())


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("shape,axis", [((3, 7), -1), ((2, 5, 3), 1), ((4, 3, 6), 0)])
def test_onnx_lp_normalization_vs_onnxruntime(tmp_path, rng, p, shape, axis):
    path = tmp_path / "lpn.onnx"
    _onnx_model(path, shape, axis, p)
    x = _data(rng, shape, axis % len(shape))
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    g = onnx_conv.convert(path)
    assert [n.op for n in g.nodes] == [Op.LP_NORMALIZATION]
    ref = reference.run(g, {"x": x.astype(np.float64)})["y"]
    assert np.abs(ref - want).max() <= TOL_REF
    got = Model(g).run({"x": x})["y"]
    assert got.dtype == np.float32 and np.abs(got - ref).max() <= TOL_RT


def test_onnx_lp_normalization_p3_refused(tmp_path):
    path = tmp_path / "p3.onnx"
    _onnx_model(path, (2, 3), -1, 3)
    with pytest.raises(Exception, match="p=3"):
        onnx_conv.convert(path)


def _tflite_l2(shape, act: int = 0) -> bytes:
    b = fx.ModelBuilder("l2 normalization")
    x = b.tensor("x", shape)
    y = b.tensor("y", shape)
    opt = fx.fb.L2NormOptionsT()
    opt.fusedActivationFunction = act
    b.op(fx.fb.BuiltinOperator.L2_NORMALIZATION, [x], [y], fx.OPT.L2NormOptions, opt)
    return b.finish([x], [y])


@pytest.mark.parametrize("shape", [(3, 7), (2, 4, 5)])
def test_tflite_l2_normalization_vs_interpreter(tmp_path, rng, shape):
    path = tmp_path / "l2.tflite"
    path.write_bytes(_tflite_l2(shape))
    x = _data(rng, shape, len(shape) - 1)
    flat = x.reshape(-1, shape[-1])
    flat[2] = 1e-8       # norm below TFLite's epsilon 1e-6: divided by the epsilon
    want = run_tflite(path, {"x": x})
    want = next(iter(want.values()))
    g = tflite_conv.convert(path, dynamic_time=False)
    assert Op.LP_NORMALIZATION in [n.op for n in g.nodes]
    name = g.inputs[0].name
    ref = next(iter(reference.run(g, {name: x.astype(np.float64)}).values()))
    assert np.abs(ref - want).max() <= TOL_REF
    assert np.abs(ref.reshape(-1, shape[-1])[2] - 1e-8 / 1e-6).max() <= TOL_REF
    got = next(iter(Model(g).run({name: x}).values()))
    assert np.abs(got - ref).max() <= TOL_RT


def test_tflite_l2_normalization_with_activation_refused(tmp_path):
    path = tmp_path / "l2relu.tflite"
    path.write_bytes(_tflite_l2((2, 3), act=1))
    with pytest.raises(Exception, match="L2_NORMALIZATION with a fused activation"):
        tflite_conv.convert(path, dynamic_time=False)


class _Normalize(torch.nn.Module):
    def __init__(self, p: float, dim: int, eps: float):
        super().__init__()
        self.p, self.dim, self.eps = p, dim, eps

    def forward(self, x):
        return F.normalize(torch.tanh(x), p=self.p, dim=self.dim, eps=self.eps)


class _Norm(torch.nn.Module):
    def forward(self, x):
        return torch.linalg.vector_norm(x, 2, dim=-1)


@pytest.mark.parametrize("p,dim,eps", [(2.0, -1, 1e-12), (1.0, 1, 1e-3), (2.0, 0, 1e-6)])
def test_torch_normalize_vs_pytorch(rng, p, dim, eps):
    x = _data(rng, (3, 5, 4), dim % 3)
    g = from_module(_Normalize(p, dim, eps), (torch.from_numpy(x),), dynamic_time=False)
    assert [n.op for n in g.nodes].count(Op.LP_NORMALIZATION) == 1
    x64 = x.astype(np.float64)
    with torch.no_grad():
        want = _Normalize(p, dim, eps)(torch.from_numpy(x64)).numpy()
    ref = reference.run(g, {g.inputs[0].name: x64})["output"]
    assert np.abs(ref - want).max() <= 1e-12
    got = Model(g).run({g.inputs[0].name: x})["output"]
    assert np.abs(got - ref).max() <= TOL_RT


def test_torch_bare_vector_norm_vs_pytorch(rng):
    x = rng.standard_normal((3, 5, 4))
    g = from_module(_Norm(), (torch.from_numpy(x.astype(np.float32)),), dynamic_time=False)
    with torch.no_grad():
        want = _Norm()(torch.from_numpy(x)).numpy()
    ref = reference.run(g, {g.inputs[0].name: x})["output"]
    assert np.abs(ref - want).max() <= 1e-12


def test_lp_normalization_streams_over_time(rng, tmp_path):
    """Normalising the feature axis is per time step: pushing chunks equals one full run."""
    path = tmp_path / "lpn.onnx"
    _onnx_model(path, ("T", 1, 6), -1, 2)
    g = onnx_conv.convert(path)
    m = Model(g)
    x = rng.standard_normal((9, 1, 6)).astype(np.float32)
    full = m.run({"x": x})["y"]
    s = m.stream()
    parts = [s.push({"x": c})["y"] for c in np.array_split(x, [2, 3, 7])]
    assert np.abs(np.concatenate(parts) - full).max() == 0.0
