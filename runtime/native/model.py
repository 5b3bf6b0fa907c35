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
from edgeseq.runtime.native.layout import COLLECT, ENTRY, Layout, arg_specs

_NP = {"float32": np.float32, "int64": np.int64, "float64": np.float64}
_I64 = ctypes.c_int64
# a workspace grown past this many floats is not kept between calls (as runtime/codegen)
_WORKSPACE_MAX = 1 << 26


def _address(a: np.ndarray, _buf=ctypes.c_char.from_buffer, _at=ctypes.addressof) -> int:
    """Data address of an array: ~0.4 us through ctypes' buffer protocol, against ~2.5 us
    for `a.ctypes.data`, which read-only and empty arrays still need."""
    try:
        return _at(_buf(a))
    except (TypeError, ValueError):
        return a.ctypes.data


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
        missing = [f for f in (ENTRY, COLLECT) if f not in code.symbols]
        if missing:
            from edgeseq.errors import ModelFormatError
            raise ModelFormatError(f"the object code does not define {missing} (compiled by an "
                                   f"older edgeseq? compile it again)", field="symbols")
        self._entry = code.function(ENTRY, _I64, ctypes.c_void_p)
        self._collect = code.function(COLLECT, None, ctypes.c_void_p, ctypes.c_void_p, _I64)
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
        self._no_state_ptr = self._no_state.ctypes.data
        self._flag_slot = self._layout.args[len(self._in) + 3 + len(self._states)].offset
        self._flag_cache: dict = {}
        self._run_flags: dict = {}
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

    def stream(self, time_axes: dict | None = None, delta=None) -> "NativeStream":
        """A stream over the compiled code: push chunks, recurrent state carried (as
        runtime.Stream; no delta)."""
        if delta is not None:
            raise InputError(f"model '{self.name}': delta execution needs the JIT runtime "
                             f"(load with native_code=False)")
        return NativeStream(self, time_axes)

    def _call_state(self):
        """This thread's argument table (constants and dummies filled in once), its address,
        and its workspace: one per thread, as Model.run keeps one workspace per thread."""
        st = getattr(self._local, "st", None)
        if st is None:
            lay = self._layout
            # NOTE: a ctypes array: its item and slice stores cost a fraction of NumPy's
            table = (ctypes.c_int64 * lay.size)()
            fixed = [(self._no_state, (0,) * rank) for _, _, rank in self._in]
            fixed += [(c, c.shape) for c in self._consts]
            fixed += [(self._no_state, (0, 0, 0))] * len(self._states)
            for slot, (a, shape) in zip(lay.args, fixed):
                table[slot.offset] = a.ctypes.data
                table[slot.offset + 1:slot.offset + 1 + slot.rank] = shape
            ws = [np.zeros(1, np.float32), np.zeros(1, np.int64)] if self._workspace else None
            st = self._local.st = [table, ctypes.addressof(table), ws]
            if ws is not None:
                self._point(table, -2, ws[0])
                self._point(table, -1, ws[1])
        return st

    def _desc(self) -> tuple:
        """This thread's edgeseq_collect descriptor (result offsets filled in) and address."""
        d = getattr(self._local, "desc", None)
        if d is None:
            arr = (ctypes.c_int64 * (3 * len(self._results)))()
            for k, (off, _, _) in enumerate(self._results):
                arr[3 * k] = off
            d = self._local.desc = (arr, ctypes.addressof(arr))
        return d

    def _point(self, table, k: int, a: np.ndarray) -> None:
        slot = self._layout.args[k]
        table[slot.offset] = a.ctypes.data
        table[slot.offset + 1:slot.offset + 1 + slot.rank] = a.shape

    def _flags(self, states: tuple, env: dict) -> tuple:
        """(flags array, address, length) for these per-slot state flags and this presence
        pattern of the graph inputs, built once per pattern."""
        key = states + tuple(int(name in env) for name, _, _ in self._in)
        f = self._flag_cache.get(key)
        if f is None:
            a = np.array(key, np.int64)
            f = self._flag_cache.setdefault(key, (a, a.ctypes.data, len(key)))
        return f

    def _initial(self, s: dict, env: dict) -> int:
        """Flag of a state slot not carried: its source (0) or zeros (2)."""
        return 0 if (s["source"] in ("value", "const")
                     or (s["source"] == "input" and s["name"] in env)) else 2

    def run(self, inputs: dict, delta=None) -> dict:
        """{input name: array} -> {output name: array}, as runtime.Model.run."""
        if delta is not None:
            raise InputError(f"model '{self.name}': delta execution needs the JIT runtime "
                             f"(load with native_code=False)")
        env = self.check_inputs(inputs)
        # the state flags of a run follow from which inputs are given: one tuple per pattern
        given = tuple(name in env for name, _, _ in self._in)
        flags = self._run_flags.get(given)
        if flags is None:
            flags = self._run_flags.setdefault(
                given, tuple(self._initial(s, env) for s in self._states))
        return self._call(env, (), flags)[0]

    def _call(self, env: dict, carried: tuple, state_flags: tuple) -> tuple:
        """One call: (outputs by name, final states or [] when `carried` is empty).
        carried: per state slot an array (time-major, flag 1) or None."""
        table, address, ws = self._call_state()
        keep = []
        args = self._layout.args
        for (name, dt, rank), slot in zip(self._in, args):
            a = env.get(name)
            o = slot.offset
            if a is None:
                table[o] = self._no_state_ptr
                table[o + 1:o + 1 + rank] = (0,) * rank
                continue
            if a.dtype != dt or not a.flags.c_contiguous:
                a = np.ascontiguousarray(a, dtype=dt)
            keep.append(a)
            table[o] = _address(a)
            table[o + 1:o + 1 + rank] = a.shape
        if carried:
            for a, slot in zip(carried, args[len(self._in) + 3:]):
                o = slot.offset
                if a is None:
                    table[o] = self._no_state_ptr
                    table[o + 1:o + 4] = (0, 0, 0)
                else:
                    keep.append(a)
                    table[o] = _address(a)
                    table[o + 1:o + 4] = a.shape
        _, fptr, n = self._flags(state_flags, env)
        table[self._flag_slot] = fptr
        table[self._flag_slot + 1] = n
        if ws is not None:
            ws[1][0] = 0
        status = self._entry(address)
        if ws is not None:
            need = int(ws[1][0])
            if ws[0].shape[0] < need <= _WORKSPACE_MAX:
                ws[0] = _aligned(need, np.float32)
                self._point(table, -2, ws[0])
        if status != 0:
            # NOTE: the entry writes results only after the graph function succeeded
            raise InputError(f"model '{self.name}': the compiled code refused these inputs "
                             f"(a shape check inside the graph failed; load the model with "
                             f"native_code=False for the message naming the node)")
        desc, desc_address = self._desc()
        results = []
        n_copy = len(self.output_names) + (len(self._states) if carried else 0)
        for k, (off, dt, rank) in enumerate(self._results):
            if k < n_copy:
                # NOTE: only the result's words: a copy of the whole table (table[:]) cost
                # ~2 us a call on silero
                out = np.empty(tuple(table[off + 2:off + 2 + rank]), dt)
                results.append(out)
                desc[3 * k + 1] = _address(out) if out.nbytes else 0
                desc[3 * k + 2] = out.nbytes
            else:
                desc[3 * k + 1] = 0
        # one call copies the results and releases every MemInfo the entry handed over
        self._collect(address, desc_address, len(self._results))
        n_out = len(self.output_names)
        return dict(zip(self.output_names, results[:n_out])), results[n_out:]


class NativeStream:
    """Push chunks of a sequence through compiled code; the recurrent state is carried
    between pushes, so any chunking equals one full run (as runtime.Stream)."""

    def __init__(self, model: NativeModel, time_axes_: dict | None = None) -> None:
        from edgeseq.runtime.streaming import time_axes
        self.model = model
        self.axes = time_axes(model.graph, time_axes_)
        self.input_specs = [(name, dt, tuple("T_chunk" if self.axes.get(name) == k else d
                                             for k, d in enumerate(shape)), opt)
                            for name, dt, shape, opt in model._specs]
        self.reset()

    def reset(self) -> None:
        """Forget the carried state: the next push starts a new sequence."""
        self._state = {s["node"]: {} for s in self.model._states}

    @property
    def state(self) -> dict:
        """Carried state per recurrent node ({"h": ..., "c": ...}, copies)."""
        return {k: {s: a.copy() for s, a in v.items()} for k, v in self._state.items()}

    def push(self, chunk: dict) -> dict:
        """Run one chunk; returns the graph outputs for the chunk."""
        m = self.model
        env = m.check_inputs(chunk, self.input_specs)
        carried, flags = [], []
        for s in m._states:
            have = self._state[s["node"]].get(s["slot"])
            if have is not None and not (s["source"] == "input" and s["name"] in chunk):
                a = have.transpose(1, 0, 2) if s["batch_first"] else have
                carried.append(np.ascontiguousarray(a, dtype=np.float32))
                flags.append(1)
            else:
                carried.append(None)
                flags.append(m._initial(s, env))
        outs, states = m._call(env, tuple(carried), tuple(flags))
        for s, new in zip(m._states, states):
            self._state[s["node"]][s["slot"]] = new.transpose(1, 0, 2) if s["batch_first"] \
                else new
        return outs
