"""Read a .tflite flatbuffer into the schema's object API (`ai_edge_litert`'s generated
`schema_py_generated`), and turn tensors into NumPy arrays."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeseq.errors import ModelFormatError, UnsupportedModelError


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
    """Parse a .tflite file and check its cross references (check_structure); refuses files
    that are not TFLite flatbuffers with a ModelFormatError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (or not a regular file)")
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelFormatError(f"not a TFLite flatbuffer (file identifier {data[4:8]!r}, "
                               f"expected b'TFL3')", file=str(path), field="file_identifier")
    fb = schema()
    try:
        model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0))
    except (Exception, RecursionError) as e:  # flatbuffers raises from deep inside on damage
        raise ModelFormatError(f"cannot parse the TFLite flatbuffer (truncated or corrupt?): "
                               f"{type(e).__name__}: {' '.join(str(e).split())[:200]}",
                               file=str(path)) from None
    loaded = Loaded(model, data, str(path))
    check_structure(loaded)
    return loaded


def check_structure(loaded: Loaded) -> None:
    """Every index the converter follows is in range: operator -> opcode, operator and
    subgraph -> tensor, tensor -> buffer; all violations are reported in one error."""
    m = loaded.model
    n_codes, n_buffers = len(m.operatorCodes or []), len(m.buffers or [])
    bad: list[tuple[str, str, str]] = []           # (where, field, what)
    if not m.subgraphs:
        bad.append(("model", "subgraphs", "no subgraph"))
    for s, sub in enumerate(m.subgraphs or []):
        tensors = sub.tensors or []
        where = f"subgraph {s}"

        def check(indices, field, owner, optional=False):
            for k, i in enumerate(indices if indices is not None else []):
                i = int(i)
                if not (0 <= i < len(tensors) or (optional and i == -1)):
                    bad.append((owner, f"{field}[{k}]", f"tensor index {i} of {len(tensors)}"))
        check(sub.inputs, "inputs", where)
        check(sub.outputs, "outputs", where)
        for t, tensor in enumerate(tensors):
            if tensor.buffer is not None and not 0 <= int(tensor.buffer) < max(n_buffers, 1):
                bad.append((f"{where} tensor {t}", "buffer",
                            f"buffer index {tensor.buffer} of {n_buffers}"))
            if tensor.shape is not None and any(int(d) < -1 for d in tensor.shape):
                bad.append((f"{where} tensor {t}", "shape", f"dims {list(tensor.shape)}"))
        for o, op in enumerate(sub.operators or []):
            owner = f"{where} operator {o}"
            if not 0 <= int(op.opcodeIndex) < n_codes:
                bad.append((owner, "opcodeIndex", f"opcode index {op.opcodeIndex} of {n_codes}"))
            check(op.inputs, "inputs", owner, optional=True)
            check(op.outputs, "outputs", owner)
            check(op.intermediates, "intermediates", owner, optional=True)
    if bad:
        lines = "\n".join(f"  - {w}: field '{f}': {what}" for w, f, what in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        err = ModelFormatError(f"{len(bad)} broken reference(s) in the flatbuffer:\n{lines}"
                               f"{more}", file=loaded.path)
        err.node, err.field = bad[0][0], bad[0][1]
        raise err


def builtin_code(opcode) -> int:
    """The builtin code of an OperatorCode (the deprecated byte field holds codes < 127)."""
    return max(int(opcode.builtinCode), int(opcode.deprecatedBuiltinCode))


def buffer_bytes(loaded: Loaded, tensor) -> bytes | None:
    """The raw bytes behind a tensor, or None when it has no data (not a constant)."""
    buffers = loaded.model.buffers or []
    buf = buffers[tensor.buffer] if 0 <= tensor.buffer < len(buffers) else None
    if buf is None:
        return None
    if buf.data is not None and len(buf.data):
        return np.asarray(buf.data, dtype=np.uint8).tobytes()
    if buf.offset > 1 and buf.size:   # large models keep buffers after the flatbuffer
        if buf.offset + buf.size > len(loaded.data):
            raise ModelFormatError(f"tensor '{_name(tensor)}': buffer {tensor.buffer} reaches "
                                   f"byte {buf.offset + buf.size} of {len(loaded.data)}",
                                   file=loaded.path, node=_name(tensor), field="buffer.offset")
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
