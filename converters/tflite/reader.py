"""Read a .tflite flatbuffer into the schema's object API (`ai_edge_litert`'s generated
`schema_py_generated`), and turn tensors into NumPy arrays."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeseq.errors import UnsupportedModelError


def schema():
    """The generated TFLite schema module (object API)."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise UnsupportedModelError(
            "reading .tflite files needs the 'ai-edge-litert' package "
            "(pip install 'edgeseq[tflite]')") from e
    return schema_py_generated


# TensorType -> NumPy dtype (only the types a recurrent model's tensors use).
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_,
           7: np.int16, 9: np.int8, 10: np.float64}


def dtype_name(tensor_type: int) -> str:
    """The TensorType's name (FLOAT32, INT8, ...)."""
    fb = schema()
    for k, v in vars(fb.TensorType).items():
        if v == tensor_type and not k.startswith("_"):
            return k
    return str(tensor_type)


def op_name(code: int) -> str:
    """The BuiltinOperator's name for a builtin code."""
    fb = schema()
    for k, v in vars(fb.BuiltinOperator).items():
        if v == code and not k.startswith("_"):
            return k
    return f"builtin#{code}"


@dataclass
class Loaded:
    """A parsed model plus the raw file bytes (for buffers stored by offset)."""
    model: object           # ModelT
    data: bytes
    path: str


def load(path: str | Path) -> Loaded:
    """Parse a .tflite file; refuses files that are not TFLite flatbuffers."""
    data = Path(path).read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise UnsupportedModelError(f"{path}: not a TFLite flatbuffer (file identifier "
                                    f"{data[4:8]!r}, expected b'TFL3')")
    fb = schema()
    try:
        model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0))
    except Exception as e:  # a truncated flatbuffer raises from deep inside flatbuffers
        raise UnsupportedModelError(f"{path}: cannot parse the TFLite flatbuffer (truncated or corrupt?): {e}") from None
    return Loaded(model, data, str(path))


def builtin_code(opcode) -> int:
    """The builtin code of an OperatorCode (the deprecated byte field holds codes < 127)."""
    return max(int(opcode.builtinCode), int(opcode.deprecatedBuiltinCode))


def buffer_bytes(loaded: Loaded, tensor) -> bytes | None:
    """The raw bytes behind a tensor, or None when it has no data (not a constant)."""
    buf = loaded.model.buffers[tensor.buffer] if tensor.buffer < len(loaded.model.buffers) else None
    if buf is None:
        return None
    if buf.data is not None and len(buf.data):
        return np.asarray(buf.data, dtype=np.uint8).tobytes()
    if buf.offset > 1 and buf.size:   # large models keep buffers after the flatbuffer
        return loaded.data[buf.offset:buf.offset + buf.size]
    return None


def raw_array(loaded: Loaded, tensor) -> np.ndarray | None:
    """A constant tensor's stored values (quantised ints stay ints), or None."""
    raw = buffer_bytes(loaded, tensor)
    if raw is None:
        return None
    if tensor.sparsity is not None:
        raise UnsupportedModelError(f"tensor '{_name(tensor)}' is stored sparse (TFLite "
                                    f"sparsity format); densify it before converting")
    if tensor.type not in _DTYPES:
        raise UnsupportedModelError(f"tensor '{_name(tensor)}': type {dtype_name(tensor.type)} "
                                    f"is not supported; supported: "
                                    f"{sorted(dtype_name(t) for t in _DTYPES)}")
    shape = tuple(int(d) for d in (tensor.shape if tensor.shape is not None else ()))
    arr = np.frombuffer(raw, dtype=_DTYPES[tensor.type])
    if arr.size != int(np.prod(shape)):
        raise UnsupportedModelError(f"tensor '{_name(tensor)}': buffer holds {arr.size} values, "
                                    f"shape {shape} needs {int(np.prod(shape))}")
    return arr.reshape(shape)


@dataclass
class Quant:
    """Affine quantisation of a tensor: real = scale * (q - zero_point) along `axis`."""
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1

    def expand(self, shape: tuple, name: str) -> tuple[np.ndarray, np.ndarray]:
        """scale and zero point broadcastable against an array of `shape`."""
        s, z = self.scale.astype(np.float64), self.zero_point.astype(np.float64)
        if not self.per_channel:
            return s.reshape(()), z.reshape(())
        if self.axis >= len(shape) or shape[self.axis] != s.size:
            raise UnsupportedModelError(f"tensor '{name}': {s.size} scales along axis {self.axis} "
                                        f"do not fit shape {shape}")
        view = [1] * len(shape)
        view[self.axis] = s.size
        return s.reshape(view), (z.reshape(view) if z.size == s.size else z.reshape(()))


def quant(tensor) -> Quant | None:
    """The tensor's quantisation parameters, or None for float/unquantised tensors."""
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    zp = np.asarray(q.zeroPoint if q.zeroPoint is not None and len(q.zeroPoint) else [0], np.int64)
    return Quant(np.asarray(q.scale, np.float32), zp, int(q.quantizedDimension))


def real_array(loaded: Loaded, tensor) -> np.ndarray | None:
    """A constant tensor's real values as float32 (dequantised when quantised)."""
    arr = raw_array(loaded, tensor)
    if arr is None:
        return None
    q = quant(tensor)
    if q is not None and arr.dtype.kind in "iu":
        s, z = q.expand(arr.shape, _name(tensor))
        return ((arr.astype(np.float64) - z) * s).astype(np.float32)
    if arr.dtype.kind == "f":
        return arr.astype(np.float32)
    return arr


def _name(tensor) -> str:
    n = tensor.name
    return n.decode() if isinstance(n, bytes) else str(n)


tensor_name = _name
