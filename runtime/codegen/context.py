"""The lowering context and the emitter registry of the whole-graph compiler (lower.py
drives them; glue_ops.py and recurrent_ops.py register emitters).

The generated function takes the graph inputs (float32 / int64, C-contiguous), the packed
constants (`wf` float32, `wi` int64, `wd` float64: one buffer each, sliced into views in
the prologue), and per recurrent state slot a carried array plus one flag each, the flags,
and the workspace (`ws` float32 arena, `wsp` its bump pointer: buffers planned once), and
returns the graph outputs followed by the final recurrent states (time-major [D, N, size]),
none of them in the workspace.
Every value inside is a C-contiguous array, so reshapes are free views and kernels get one
array layout (one Numba specialisation each).

Per op, an emitter registered with `@emitter(Op...)` writes the node's lines, or raises
`Unsupported(reason)`; lowering visits every node so `Model.describe()` can list them all.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgeseq.graph import Graph, Node
from edgeseq.ops import Op
from edgeseq.runtime.codegen.kernel_calls import KernelCalls
from edgeseq.runtime.kernels.panels import ALIGN

FUNCTION = "graph_run"
EMITTERS: dict[Op, Callable] = {}
# recurrent nodes whose plan kernel is not the dense one (compressed, delta, ...): the kernel
# class name -> fn(lowering, node, kernel); the LSTM/GRU/RNN emitter dispatches through it
KERNEL_EMITTERS: dict[str, Callable] = {}
# the generated module's imports beyond numpy/numba/graph_ops/panels, added by emitter modules
IMPORT_LINES: list[str] = []


def kernel_emitter(*kernel_class_names: str) -> Callable:
    """Register fn(lowering, node, kernel) for recurrent nodes whose plan kernel has one of
    these class names (one emitter per class)."""
    def deco(fn: Callable) -> Callable:
        for name in kernel_class_names:
            if name in KERNEL_EMITTERS:
                raise AssertionError(f"kernel emitter for {name} registered twice")
            KERNEL_EMITTERS[name] = fn
        return fn
    return deco


class Unsupported(Exception):
    """A node the generator does not emit (the model then runs on the interpreter)."""


def emitter(*ops: Op) -> Callable:
    """Register fn(lowering, node) as the emitter of each op (one per op)."""
    def deco(fn: Callable) -> Callable:
        for op in ops:
            if op in EMITTERS:
                raise AssertionError(f"emitter for {op} registered twice")
            EMITTERS[op] = fn
        return fn
    return deco


@dataclass
class StateSlot:
    """One recurrent state slot (h or c of a node) carried in and out of the function."""
    node: str
    slot: str                 # "h" | "c"
    source: str               # "input" | "value" | "const" | "none"
    name: str                 # graph input / value / constant name ("" for none)
    batch_first: bool
    arg: str = ""             # carried-array argument of the generated function
    flag: int = 0             # index into the flags argument


class Lowering:
    """Emission context: variable names, constant packing, source lines."""

    def __init__(self, graph: Graph, kernels: dict, linked: bool = False) -> None:
        self.graph = graph
        self.kernels = kernels          # node name -> the plan's kernel (weights prepared)
        self.kernel_calls = KernelCalls(linked)
        self.lines: list[str] = []
        self.prologue: list[str] = []
        self.var: dict[str, str] = {}
        self._n = 0
        self._packs = {"wf": ([], 0, np.float32), "wi": ([], 0, np.int64),
                       "wd": ([], 0, np.float64)}
        self._const_cache: dict = {}
        self.states: list[StateSlot] = []
        self.readers: dict[str, int] = {}
        for n in graph.nodes:
            for name in n.inputs:
                if name:
                    self.readers[name] = self.readers.get(name, 0) + 1
        self.graph_outputs = {v.name for v in graph.outputs}
        self.pending: dict[str, Node] = {}   # elementwise nodes folded into a later loop
        self.fused: set[str] = set()         # activations applied by their producer
        # variables holding a fresh array, never the workspace: returned without a detach
        self.owned: set[str] = set()
        self.notes: list[str] = []

    # ---- names and lines -------------------------------------------------------------
    def fresh(self, prefix: str = "v") -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def emit(self, line: str) -> None:
        self.lines.append("    " + line)

    def call(self, name: str, *args: str) -> str:
        """A call of kernel entry `name` (kernels/pointer_calls.ENTRIES): through its
        pointer, or linked for ahead-of-time compilation (codegen/kernel_calls.py)."""
        return self.kernel_calls.call(name, *args)

    def comment(self, node: Node) -> None:
        self.lines.append(f"    # {node.op.value} '{node.name}'")

    def rank(self, name: str) -> int:
        return len(self.graph.value(name).shape)

    def shape(self, name: str) -> tuple:
        return tuple(self.graph.value(name).shape)

    def is_const(self, name: str) -> bool:
        return name in self.graph.constants

    def value(self, name: str) -> str:
        """The variable holding a (non-constant) value."""
        if name in self.var:
            return self.var[name]
        if self.is_const(name):
            return self.const_array(name)
        raise Unsupported(f"input '{name}' is not available")

    def bind(self, name: str, var: str) -> None:
        if name:
            self.var[name] = var

    # ---- constants -------------------------------------------------------------------
    def pack(self, buf: str, arr: np.ndarray, key=None) -> str:
        """A prologue view of `arr` packed into buffer wf/wi/wd (64-byte aligned)."""
        if key is not None and (buf, key) in self._const_cache:
            return self._const_cache[(buf, key)]
        parts, size, dt = self._packs[buf]
        arr = np.ascontiguousarray(arr, dtype=dt)
        align = ALIGN // np.dtype(dt).itemsize
        off = -(-size // align) * align
        if off > size:
            parts.append(np.zeros(off - size, dtype=dt))
        parts.append(arr.ravel())
        self._packs[buf] = (parts, off + arr.size, dt)
        var = self.fresh("w")
        shape = ", ".join(str(d) for d in arr.shape) + ("," if arr.ndim == 1 else "")
        view = f"{buf}[{off}:{off + arr.size}]"
        if buf == "wf" and 2 <= arr.ndim <= 4:
            # NOTE: a call rather than an inline reshape (kernels/const_views.py)
            self.prologue.append(f"    {var} = " + self.call(
                f"view{arr.ndim}", buf, f"np.int64({off})", *(f"np.int64({d})" for d in arr.shape)))
        else:
            self.prologue.append(f"    {var} = {view}.reshape(({shape}))" if arr.ndim != 1
                                 else f"    {var} = {view}")
        if key is not None:
            self._const_cache[(buf, key)] = var
        return var

    def const_f32(self, name: str) -> np.ndarray:
        """A float constant as float32 values (int8 weights with a per-row scale dequantised,
        float16 widened: runtime.plan.glue_constant)."""
        from edgeseq.runtime.plan import glue_constant
        return np.asarray(glue_constant(self.graph, name), dtype=np.float32)

    def const_array(self, name: str) -> str:
        """A float32 (or int64 for integer) graph constant as a prologue view."""
        c = self.graph.constants[name]
        if c.dtype.kind in "iu":
            return self.pack("wi", c, key=name)
        if c.dtype == np.int8 or c.dtype.kind != "f":
            raise Unsupported(f"constant '{name}' has dtype {c.dtype}")
        from edgeseq.runtime.plan import glue_constant
        return self.pack("wf", glue_constant(self.graph, name).astype(np.float32), key=name)

    def buffers(self) -> tuple:
        out = []
        for buf in ("wf", "wi", "wd"):
            parts, size, dt = self._packs[buf]
            if buf == "wf":
                from edgeseq.runtime.kernels.panels import aligned_zeros
                a = aligned_zeros(max(size, 1))
                if parts:
                    a[:size] = np.concatenate(parts)
            else:
                a = np.concatenate(parts) if parts else np.zeros(1, dtype=dt)
                a = np.ascontiguousarray(a, dtype=dt)
            out.append(a)
        return tuple(out)

    # ---- shapes at run time ------------------------------------------------------------
    @staticmethod
    def dims(var: str, rank: int) -> list[str]:
        return [f"{var}.shape[{k}]" for k in range(rank)]

    @staticmethod
    def prod(exprs: list[str]) -> str:
        return " * ".join(exprs) if exprs else "1"

    @staticmethod
    def tup(exprs: list[str]) -> str:
        return "(" + ", ".join(exprs) + ("," if len(exprs) == 1 else "") + ")"

    def empty(self, dims: list[str]) -> str:
        """An uninitialised float32 buffer of these dims, taken from the caller's workspace
        (arguments `ws`, `wsp`: kernels/graph_ops.take1..4), so a stream step of fixed
        shapes allocates nothing; valid until the function returns (results leave through
        G.detach)."""
        if 1 <= len(dims) <= 4:
            # NOTE: a bare int literal would make Numba specialise the helper per value
            dims = [f"np.int64({d})" if d.isdigit() else d for d in dims]
            return self.call(f"take{len(dims)}", "ws", "wsp", *dims)
        return f"np.empty({Lowering.tup(dims)}, dtype=np.float32)"

    def loop_nest(self, dims: list[str], body: list[str], idx: str = "i") -> None:
        """for i0 in range(d0): for i1 ...: body (body lines use i0, i1, ...)."""
        pad = ""
        for k, d in enumerate(dims):
            self.emit(f"{pad}for {idx}{k} in range({d}):")
            pad += "    "
        for line in body:
            self.emit(pad + line)
