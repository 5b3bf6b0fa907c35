"""NativeModel: an artifact's graph run by its ahead-of-time compiled code (no Numba, no
LLVM): Python checks the inputs, builds the int64 argument table (runtime/native/layout.py),
makes one ctypes call, and copies each result out before releasing it.

It mirrors CompiledGraph.run of the whole-graph compiler (runtime/codegen): the same flags
per recurrent state slot and graph input, the same packed constants and workspace."""
from __future__ import annotations

import ctypes
import threading

import numpy as np

from edgeseq.errors import InputError
from edgeseq.graph import Graph
from edgeseq.limits import LIMITS
from edgeseq.runtime.native.inputs import InputChecks
from edgeseq.runtime.native.layout import ENTRY, RELEASE, Layout, arg_specs

_NP = {"float32": np.float32, "int64": np.int64, "float64": np.float64}
_I64 = ctypes.c_int64
# a workspace grown past this many floats is not kept between calls (as runtime/codegen)
_WORKSPACE_MAX = 1 << 26


def _aligned(n: int, dtype) -> np.ndarray:
    """A zeroed 1-D array whose data is 64-byte aligned (the packed constants' alignment)."""
    item = np.dtype(dtype).itemsize
    raw = np.zeros(n * item + 64, np.uint8)
    off = -raw.ctypes.data % 64
    return raw[off:off + n * item].view(dtype)


class NativeModel(InputChecks):
    """Runs whole sequences with compiled code; `describe()` says which target."""

    def __init__(self, graph: Graph, unit: dict, consts: tuple, code, target, *,
                 name: str | None = None, check_finite: bool = True,
                 memory_limit: int | None = LIMITS.memory_bytes) -> None:
        self.graph = graph
        self.name = name or graph.name
        self.check_finite = check_finite
        self.memory_limit = memory_limit
        self._warned: set = set()
        self._init_checks(graph)
        self.inputs = [s[0] for s in self._specs]
        self.output_names = list(unit["outputs"])
        self.target = target
        self._code = code                   # keeps the mapping alive
        self._entry = code.function(ENTRY, _I64, ctypes.c_void_p)
        self._release = code.function(RELEASE, None, _I64)
        self._unit = unit
        self._in = [(n, _NP[dt], rank) for n, dt, rank in unit["inputs"]]
        self._states = unit["states"]
        self._workspace = bool(unit["workspace"])
        self._layout = Layout.of(arg_specs(unit["inputs"], len(self._states), self._workspace),
                                 [tuple(r) for r in unit["results"]])
        self._results = [(s.offset, _NP[s.dtype], s.rank) for s in self._layout.results]
        self._consts = tuple(_aligned(a.shape[0], a.dtype) for a in consts)
        for dst, src in zip(self._consts, consts):
            dst[:] = src
        self._no_state = np.zeros((1,), np.float32)
        self._local = threading.local()

    def __repr__(self) -> str:
        return (f"NativeModel({self.name!r}, target={self.target.name}, "
                f"inputs={self.inputs}, outputs={self.output_names})")

    def describe(self) -> str:
        t = self.target
        return (f"native code: {t.name} ({t.triple}, cpu {t.cpu}), compiled ahead of time; "
                f"one call per run, no Numba")

    def source(self) -> None:
        return None

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            import warnings
            warnings.warn(message + " (warned once per Model)", UserWarning, stacklevel=4)

    def stream(self, *args, **kwargs):
        raise NotImplementedError(
            f"model '{self.name}': Stream is not supported on ahead-of-time compiled code; "
            f"pass the recurrent states as inputs to run(), or load with native_code=False")

    def _ws(self) -> list:
        ws = getattr(self._local, "ws", None)
        if ws is None:
            ws = self._local.ws = [np.zeros(1, np.float32), np.zeros(1, np.int64)]
        return ws

    def run(self, inputs: dict, delta=None) -> dict:
        """{input name: array} -> {output name: array}, as runtime.Model.run."""
        if delta is not None:
            raise InputError(f"model '{self.name}': delta execution needs the JIT runtime "
                             f"(load with native_code=False)")
        env = self.check_inputs(inputs)
        lay = self._layout
        table = np.zeros(lay.size, np.int64)
        keep = []
        args = []
        for name, dt, rank in self._in:
            a = env.get(name)
            if a is None:
                args.append((self._no_state, (0,) * rank))
                continue
            if a.dtype != dt or not a.flags.c_contiguous:
                a = np.ascontiguousarray(a, dtype=dt)
            args.append((a, a.shape))
        args += [(c, c.shape) for c in self._consts]
        flags = []
        for s in self._states:
            args.append((self._no_state, (0, 0, 0)))
            flags.append(0 if (s["source"] in ("value", "const")
                               or (s["source"] == "input" and s["name"] in env)) else 2)
        flags += [int(env.get(n) is not None) for n, _, _ in self._in]
        fl = np.array(flags, np.int64)
        args.append((fl, fl.shape))
        if self._workspace:
            ws = self._ws()
            ws[1][0] = 0
            args += [(ws[0], ws[0].shape), (ws[1], ws[1].shape)]
        for slot, (a, shape) in zip(lay.args, args):
            keep.append(a)
            table[slot.offset] = a.ctypes.data
            table[slot.offset + 1:slot.offset + 1 + slot.rank] = shape
        status = self._entry(table.ctypes.data)
        if self._workspace:
            need = int(ws[1][0])
            if ws[0].shape[0] < need <= _WORKSPACE_MAX:
                ws[0] = _aligned(need, np.float32)
        results = []
        for off, dt, rank in self._results:
            mi, ptr = int(table[off]), int(table[off + 1])
            shape = tuple(int(d) for d in table[off + 2:off + 2 + rank])
            if status == 0:
                out = np.empty(shape, dt)
                if out.nbytes:
                    ctypes.memmove(out.ctypes.data, ptr, out.nbytes)
                results.append(out)
            self._release(mi)
        if status != 0:
            raise InputError(f"model '{self.name}': the compiled code refused these inputs "
                             f"(a shape check inside the graph failed; load the model with "
                             f"native_code=False for the message naming the node)")
        return dict(zip(self.output_names, results))
