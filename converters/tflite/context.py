"""Conversion state shared by the op handlers, and the handler registry.

A handler maps one TFLite operator to edgeseq nodes: `@handler("FULLY_CONNECTED")` registers
`fn(ctx, op)`; it reads operands through the context (constants are dequantised on request),
emits nodes with `ctx.emit`, and names the TFLite output tensors' IR values with `ctx.out`.
A handler raises `Unsupported` for options it cannot map; the converter collects every such
problem and reports them all at once.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgeseq.graph import Node
from edgeseq.ops import Op

from edgeseq.converters.tflite import reader


class Unsupported(Exception):
    """An operator or option this converter cannot map (collected, then reported at once)."""


@dataclass(frozen=True)
class Handler:
    fn: Callable
    max_version: int | None   # newest op version the handler knows; None = any


HANDLERS: dict[str, Handler] = {}


def handler(*names: str, max_version: int | None = None):
    """Register `fn(ctx, op)` for the named builtin operators; a duplicate is an error."""
    def deco(fn):
        for name in names:
            if name in HANDLERS:
                raise AssertionError(f"duplicate TFLite handler for {name}")
            HANDLERS[name] = Handler(fn, max_version)
        return fn
    return deco


class OpView:
    """One operator with its index, name, version, operand indices and options."""

    def __init__(self, index: int, name: str, version: int, op):
        self.index, self.name, self.version, self.raw = index, name, version, op
        self.inputs: list[int] = [int(i) for i in (op.inputs if op.inputs is not None else [])]
        self.outputs: list[int] = [int(i) for i in (op.outputs if op.outputs is not None else [])]
        self.options = op.builtinOptions

    def input(self, k: int) -> int:
        """Operand index k, or -1 when absent."""
        return self.inputs[k] if k < len(self.inputs) else -1

    def option(self, name: str, default=None):
        return getattr(self.options, name, default) if self.options is not None else default

    @property
    def label(self) -> str:
        return f"operator #{self.index} {self.name}"


class Context:
    """Maps TFLite tensors to edgeseq values and constants while nodes are emitted."""

    def __init__(self, loaded: reader.Loaded, subgraph):
        self.loaded = loaded
        self.sub = subgraph
        self.nodes: list[Node] = []
        self.constants: dict[str, np.ndarray] = {}
        self.names: dict[int, str] = {}          # tensor index -> IR value/constant name
        self.folded: dict[int, np.ndarray] = {}  # tensor index -> constant computed at convert time
        self.used: set[str] = set()
        self.notes: list[str] = []
        self.current: OpView | None = None
        # hybrid ops (float activations, int8 weights kept int8): (label, asymmetric inputs)
        self.hybrid: list[tuple[str, bool]] = []

    # ---- tensors ----------------------------------------------------------------------------
    def tensor(self, idx: int):
        return self.sub.tensors[idx]

    def shape(self, idx: int) -> tuple[int, ...]:
        t = self.tensor(idx)
        return tuple(int(d) for d in (t.shape if t.shape is not None else ()))

    def tname(self, idx: int) -> str:
        return reader.tensor_name(self.tensor(idx))

    def is_const(self, idx: int) -> bool:
        if idx in self.folded:
            return True
        t = self.tensor(idx)
        return not t.isVariable and reader.buffer_bytes(self.loaded, t) is not None

    def raw(self, idx: int) -> np.ndarray | None:
        """Stored values of a constant (quantised ints stay ints)."""
        if idx in self.folded:
            return self.folded[idx]
        return reader.raw_array(self.loaded, self.tensor(idx))

    def real(self, idx: int) -> np.ndarray | None:
        """Real (dequantised, float32) values of a constant, or None if not constant."""
        if idx in self.folded:
            return self.folded[idx]
        return reader.real_array(self.loaded, self.tensor(idx))

    def ints(self, idx: int, what: str) -> list[int]:
        """A constant integer operand (shape, axis, perm, ...) as a list."""
        arr = self.raw(idx) if idx >= 0 else None
        if arr is None:
            raise Unsupported(f"{what} (tensor {idx}) must be a constant")
        return [int(v) for v in np.asarray(arr).reshape(-1)]

    def quant(self, idx: int) -> reader.Quant | None:
        return None if idx in self.folded else reader.quant(self.tensor(idx))

    # ---- names and nodes ----------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        base = re.sub(r"\s+", "_", base) or "t"
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name

    def value(self, idx: int) -> str:
        """The IR name carrying tensor `idx`; constants are registered on first use (float32
        real values, or the stored ints for integer tensors)."""
        if idx in self.names:
            return self.names[idx]
        if self.is_const(idx):
            arr = self.real(idx)
            name = self.fresh(self.tname(idx))
            self.constants[name] = np.ascontiguousarray(arr)
            self.names[idx] = name
            return name
        raise Unsupported(f"tensor {idx} '{self.tname(idx)}' is read before any operator "
                          f"produces it (not a graph input or constant)")

    def constant(self, base: str, arr: np.ndarray) -> str:
        name = self.fresh(base)
        self.constants[name] = np.ascontiguousarray(arr)
        return name

    def out(self, idx: int) -> str:
        """A fresh IR name for the TFLite output tensor `idx` (bound to it)."""
        name = self.fresh(self.tname(idx))
        self.names[idx] = name
        return name

    def tmp(self, base: str) -> str:
        op = self.current
        return self.fresh(f"{op.name.lower()}_{op.index}/{base}" if op else base)

    def emit(self, op: Op, inputs: list[str], outputs: list[str], weights: dict | None = None,
             **attrs) -> list[str]:
        cur = self.current
        name = self.fresh(f"{cur.name.lower()}_{cur.index}" if cur else op.value)
        self.nodes.append(Node(name, op, list(inputs), list(outputs), attrs, dict(weights or {})))
        return outputs

    def fold(self, idx: int, arr: np.ndarray) -> None:
        """Record tensor `idx` as a constant computed at convert time (e.g. DEQUANTIZE)."""
        self.folded[idx] = arr

    # ---- fused activations --------------------------------------------------------------------
    def fused(self, src: str, act: int, out_idx: int) -> None:
        """Apply a fused activation (ActivationFunctionType) to `src`, writing tensor out_idx."""
        kind = FUSED.get(act)
        if kind is None:
            raise Unsupported(f"fused activation {_act_name(act)} is not supported; supported: "
                              f"{sorted(_act_name(a) for a in FUSED)}")
        op, attrs = kind
        self.emit(op, [src], [self.out(out_idx)], **attrs)

    def fused_target(self, act: int, out_idx: int) -> str:
        """Where an op with a fused activation writes its pre-activation result."""
        if act not in FUSED:
            raise Unsupported(f"fused activation {_act_name(act)} is not supported; supported: "
                              f"{sorted(_act_name(a) for a in FUSED)}")
        return self.out(out_idx) if act == 0 else self.tmp("preact")

    def finish_fused(self, src: str, act: int, out_idx: int) -> None:
        if act != 0:
            self.fused(src, act, out_idx)


# ActivationFunctionType -> (op, attrs); NONE is handled by writing the output directly.
FUSED = {
    0: (Op.IDENTITY, {}),
    1: (Op.RELU, {}),
    2: (Op.CLIP, {"min": -1.0, "max": 1.0}),
    3: (Op.CLIP, {"min": 0.0, "max": 6.0}),
    4: (Op.TANH, {}),
}


def _act_name(act: int) -> str:
    return {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}.get(
        act, str(act))


act_name = _act_name
