"""Emitter of LSTM/GRU/RNN nodes on compressed weights (`runtime.compressed`: int8 with int16
or int8 activations, float16, factored W_h = U·V, LSTMP projection, any mix): the shared
recurrent frame (`recurrent_ops.emit_sequence`), then per direction the two kernel calls the
interpreter makes, taken from the kernel's own descriptions (`projection(d)`, `sequence(d)`),
so the generated code runs the same kernels on the same operands and its results are the
interpreter's bit for bit.

Operands are packed as stored: float32 / int64 / float64 arrays into the wf / wi / wd
buffers, any other dtype (int8 weights, float16 bits as uint16, int32 row sums) as its bytes
inside wf, viewed back with its dtype in the prologue; records (`s8dot.Packed8`) and the
(kind, f32, u16, i8, scale) tuples of `kernels.quantized` are rebuilt in the prologue from
those views, so the kernels see the types the interpreter passes (one specialisation each).
"""
from __future__ import annotations

import numpy as np

from edgeseq.graph import Node
from edgeseq.runtime.codegen.context import IMPORT_LINES, Lowering, Unsupported, kernel_emitter
from edgeseq.runtime.codegen.recurrent_ops import Frame, emit_sequence

# module of a kernel function or record type -> its name in the generated module
MODULES = {
    "edgeseq.runtime.kernels.quantized": "QUANT",
    "edgeseq.runtime.kernels.quantized_rnn8": "QRNN8",
    "edgeseq.runtime.kernels.s8dot": "S8DOT",
    "edgeseq.runtime.kernels.s8dot_asymmetric": "S8DOTA",
}
IMPORT_LINES.extend(f"from edgeseq.runtime.kernels import {m.rsplit('.', 1)[1]} as {alias}"
                    for m, alias in MODULES.items())

# dtypes with a buffer of their own
BUFFERS = {np.dtype(np.float32): "wf", np.dtype(np.int64): "wi", np.dtype(np.float64): "wd"}


def _qualified(obj) -> str:
    """The generated module's name of an njit kernel or a record class."""
    py = getattr(obj, "py_func", obj)
    alias = MODULES.get(py.__module__)
    if alias is None:
        raise Unsupported(f"kernel {py.__module__}.{py.__name__} is not importable by the "
                          f"generated code")
    return f"{alias}.{py.__name__}"


def _once(lw: Lowering, expr: str) -> str:
    """A prologue variable holding expr, made once per lowering (an operand shared by two
    calls, e.g. a GRU's W_h packed once for both of its products, is rebuilt once)."""
    for line in lw.prologue:
        var, _, rhs = line.strip().partition(" = ")
        if rhs == expr:
            return var
    var = lw.fresh("w")
    lw.prologue.append(f"    {var} = {expr}")
    return var


def _array(lw: Lowering, a: np.ndarray) -> str:
    """A prologue view of a kernel's array (packed once per array object, as the kernels
    share some matrices; one view per dtype and shape of the empty placeholders)."""
    key = ("empty", a.dtype.str, a.shape) if a.size == 0 else ("compressed", id(a))
    buf = BUFFERS.get(a.dtype)
    if buf is not None:
        return lw.pack(buf, a, key=key)
    raw = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    words = np.zeros(-(-raw.size // 4), np.uint32)
    words.view(np.uint8)[:raw.size] = raw
    # NOTE: float32 words are only copied (never computed on), so every bit pattern survives
    flat = lw.pack("wf", words.view(np.float32), key=key)
    shape = ", ".join(str(d) for d in a.shape) + ("," if a.ndim == 1 else "")
    return _once(lw, f"{flat}.view(np.uint8)[:{raw.size}].view(np.{a.dtype.name})"
                     f".reshape(({shape}))")


def _operand(lw: Lowering, obj) -> str:
    """The generated expression of one kernel operand, with the interpreter's Numba type."""
    if isinstance(obj, np.ndarray):
        return _array(lw, obj)
    if isinstance(obj, (bool, np.bool_)):
        # NOTE: a bare True/False would be a literal type: one more specialisation
        return f"np.bool_({bool(obj)})"
    if isinstance(obj, (int, np.integer)):
        return f"np.int64({int(obj)})"
    if isinstance(obj, tuple):
        parts = [_operand(lw, o) for o in obj]
        if hasattr(obj, "_fields"):         # a record (NamedTuple): its class rebuilds it
            return _once(lw, f"{_qualified(type(obj))}({', '.join(parts)})")
        return _once(lw, "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")")
    raise Unsupported(f"kernel operand of type {type(obj).__name__}")


def _direction(lw: Lowering, node: Node, kernel, f: Frame) -> None:
    """Direction f.d: the input projection for all steps, then the sequence kernel (in
    `_Compressed.__call__`'s order)."""
    d = f.d
    fn, w_x = kernel.projection(d)
    xin = f"{f.v}_x{d}"
    lw.emit(f"{xin} = {_qualified(fn)}({_operand(lw, w_x)}, {f.x})")
    fn, operands = kernel.sequence(d)
    args = [xin, *(_operand(lw, o) for o in operands), f.lens,
            *(f"{s}[{d}]" for s in f.states), f.y]
    lw.emit(f"{_qualified(fn)}({', '.join(args)})")


@kernel_emitter("CompressedLstm", "CompressedGru", "CompressedRnn")
def _compressed(lw: Lowering, node: Node, kernel) -> None:
    emit_sequence(lw, node, kernel, kernel.n_input, _direction)
