"""Whole-graph compiler: a planned Graph becomes one generated `@njit` function, so that
`Model.run` and `Stream.push` are one native call after the Python input checks.

    lower.py          lowering context, emitter registry, the generated function's layout
    glue_ops.py       emitters of the glue ops (elementwise chains fused into one loop, ...)
    recurrent_ops.py  emitter of LSTM/GRU/RNN (calls the njit sequence kernels)
    kernel_calls.py   kernel calls through function pointers (JIT) or linked (ahead of time)
    cache.py          the generated module on disk, imported so Numba's file cache works

`compile_graph` returns a `CompiledGraph`, or raises `Unsupported` naming every node the
generator cannot emit (the Model then runs its per-node interpreter and says why).
"""
from __future__ import annotations

import os
import threading

import numpy as np
from numba import types

from edgeseq.errors import InputError
from edgeseq.graph import Graph
from edgeseq.runtime.codegen.cache import load_module
from edgeseq.runtime.codegen.kernel_calls import addresses, linked_by_default
from edgeseq.runtime.codegen.lower import FUNCTION, Lowered, Unsupported, lower

__all__ = ["CompiledGraph", "Unsupported", "Workspace", "compile_graph", "enabled"]

_DTYPES = {"float32": np.float32, "int64": np.int64}
_NB = {"float32": types.float32, "int64": types.int64}


# a workspace grown past this many floats (256 MB) is not kept between calls (a very long
# sequence then allocates its buffers per call, as before workspaces)
WORKSPACE_MAX_FLOATS = 1 << 26
# Numba + LLVM compile time grows faster than the function: 1100 generated lines compile in
# about a minute on a busy 2-core machine, while a 3500-line function (PyTorch's dynamo
# exporter unrolls a DeepSpeech-style model into 505 nodes) ran over 20 minutes at 3.2 GB.
# Longer functions run on the interpreter unless Model(..., codegen=True) insists.
MAX_GENERATED_LINES = 2000


class Workspace:
    """The arena a generated function takes its buffers from (kernels/graph_ops.take1..4),
    grown after a call that needed more, so steady-state calls allocate nothing. One per
    Stream, one per thread for Model.run: never shared by two calls at once."""
    __slots__ = ("ws", "wsp")

    def __init__(self) -> None:
        self.ws = np.zeros(0, np.float32)
        self.wsp = np.zeros(1, np.int64)      # the bump pointer; after a call: floats used

    def fit(self) -> None:
        """After a call: grow to what it used (the generated code fell back to fresh
        arrays for whatever did not fit)."""
        need = int(self.wsp[0])
        if self.ws.shape[0] < need <= WORKSPACE_MAX_FLOATS:
            from edgeseq.runtime.kernels.panels import aligned_zeros
            self.ws = aligned_zeros(need)


def enabled() -> bool:
    """EDGESEQ_CODEGEN=0 turns the compiler off (every Model uses the interpreter)."""
    return os.environ.get("EDGESEQ_CODEGEN", "1") != "0"


class CompiledGraph:
    """The generated function of a graph and the packed constants it reads."""

    def __init__(self, lowered: Lowered, name: str) -> None:
        self.name = name
        self.lowered = lowered
        self.source = lowered.source
        module, self.path = load_module(lowered.source)
        self.fn = getattr(module, FUNCTION)
        self._inputs = lowered.inputs
        self._dummies = [np.zeros((0,) * rank, _DTYPES[dt]) for _, dt, rank in lowered.inputs]
        self._no_state = np.zeros((0, 0, 0), np.float32)
        self._n_out = len(lowered.outputs)
        self._consts = (lowered.wf, lowered.wi, lowered.wd)
        self.linked = lowered.linked
        # the kernels' addresses in this process (the last argument, unless linked)
        self._extra = () if self.linked else (addresses(lowered.kernel_calls),)
        self._flag_arrays: dict[tuple, np.ndarray] = {}
        # per graph input (name, dtype, empty dummy), per state slot what push reads
        self._arg_specs = [(name, np.dtype(_DTYPES[dt]), dummy)
                           for (name, dt, _), dummy in zip(lowered.inputs, self._dummies)]
        self._input_names = [name for name, _, _ in lowered.inputs]
        self._no_states = [self._no_state] * len(lowered.states)
        self._run_flags: dict[tuple, np.ndarray] = {}    # inputs given -> flags of a run
        self._slots = [(s.node, s.slot, s.name if s.source == "input" else None,
                        s.batch_first, s) for s in lowered.states]
        self._local = threading.local()     # .workspace of Model.run in this thread

    def compile(self) -> None:
        """Compile (or load from Numba's cache) the one signature the function is called
        with: C-contiguous float32 / int64 arrays."""
        arr = [types.Array(_NB[dt], rank, "C") for _, dt, rank in self._inputs]
        consts = [types.Array(types.float32, 1, "C"), types.Array(types.int64, 1, "C"),
                  types.Array(types.float64, 1, "C")]
        states = [types.Array(types.float32, 3, "C")] * len(self.lowered.states)
        flags = [types.Array(types.int64, 1, "C")]
        workspace = [types.Array(types.float32, 1, "C"), types.Array(types.int64, 1, "C")]
        table = [] if self.linked else [types.Array(types.int64, 1, "C")]
        self.fn.compile(tuple(arr + consts + states + flags + workspace + table))

    def _args(self, env: dict) -> list:
        args = []
        for name, want, dummy in self._arg_specs:
            a = env.get(name)
            if a is None:
                args.append(dummy)
                continue
            if type(a) is not np.ndarray or a.dtype != want:
                a = np.array(a, dtype=want, order="C")
            else:
                f = a.flags
                if not (f.c_contiguous and f.writeable):
                    # NOTE: read-only arrays would need a second Numba specialisation
                    a = np.array(a, dtype=want, order="C")
            args.append(a)
        return args

    def _flags(self, values: tuple, env: dict) -> np.ndarray:
        """The flags argument: these per-slot state values, then one presence flag per graph
        input (1 given, 0 left out: the function then sees an empty dummy); one read-only
        array per pattern, so a stream step reuses it instead of building one."""
        values = values + tuple([name in env for name in self._input_names])
        f = self._flag_arrays.get(values)
        if f is None:
            f = np.array(values, dtype=np.int64)
            f = self._flag_arrays.setdefault(values, f)
        return f

    def workspace(self) -> Workspace:
        """A new workspace (a Stream owns one)."""
        return Workspace()

    def _call(self, env: dict, states: list, flags: np.ndarray, ws: Workspace) -> tuple:
        try:
            res = self.fn(*self._args(env), *self._consts, *states, flags, ws.ws, ws.wsp,
                          *self._extra)
        except ValueError as e:
            raise InputError(f"model '{self.name}': {e}") from None
        ws.fit()
        return res

    def _initial(self, s, env: dict) -> int:
        """Flag of a state slot not carried: its source (0) or zeros (2)."""
        return 0 if (s.source in ("value", "const") or
                     (s.source == "input" and s.name in env)) else 2

    def run(self, env: dict) -> dict:
        """Whole sequences: validated inputs -> {output: array}."""
        present = tuple([name in env for name in self._input_names])
        flags = self._run_flags.get(present)
        if flags is None:
            # the state flags of a run depend only on which inputs are given
            flags = self._flags(tuple(self._initial(s, env) for s in self.lowered.states), env)
            self._run_flags[present] = flags
        ws = getattr(self._local, "workspace", None)
        if ws is None:
            ws = self._local.workspace = Workspace()
        res = self._call(env, self._no_states, flags, ws)
        return dict(zip(self.lowered.outputs, res[:self._n_out]))

    def push(self, env: dict, carried: dict, given, workspace: Workspace | None = None) -> dict:
        """One stream step: carried {node: {slot: state in the graph's layout}} is read
        (unless the chunk gives that initial state explicitly) and replaced by the new
        state. workspace: the Stream's (else a temporary one)."""
        states, flags = [], []
        for node, slot, input_name, bf, s in self._slots:
            have = carried[node].get(slot)
            if have is not None and (input_name is None or input_name not in given):
                a = have.transpose(1, 0, 2) if bf else have
                if not (a.dtype == np.float32 and a.flags.c_contiguous):
                    a = np.ascontiguousarray(a, dtype=np.float32)
                states.append(a)
                flags.append(1)
            else:
                states.append(self._no_state)
                flags.append(self._initial(s, env))
        res = self._call(env, states, self._flags(tuple(flags), env), workspace or Workspace())
        n_out = self._n_out
        for (node, slot, _, bf, _), new in zip(self._slots, res[n_out:]):
            carried[node][slot] = new.transpose(1, 0, 2) if bf else new
        return dict(zip(self.lowered.outputs, res[:n_out]))


def compile_graph(graph: Graph, kernels: dict, name: str,
                  linked: bool | None = None) -> CompiledGraph:
    """Lower, load and compile a validated graph whose plan prepared `kernels`
    ({node name: kernel}); raises Unsupported with one line per node it cannot emit.
    linked: kernels linked into the function instead of called through pointers (None:
    EDGESEQ_CODEGEN_LINKED, off by default)."""
    compiled = CompiledGraph(lower(graph, kernels, _linked(linked)), name)
    compiled.compile()
    return compiled


def _linked(linked: bool | None) -> bool:
    return linked_by_default() if linked is None else linked


def for_model(model, *, use: bool | None, delta: bool, build_now: bool) -> tuple:
    """(CompiledGraph or None, one line for Model.describe()) for a Model's graph and plan.
    use: True / False, or None to follow EDGESEQ_CODEGEN (on by default). Unsupported nodes
    or delta kernels leave the per-node interpreter on."""
    if not (enabled() if use is None else use):
        return None, "codegen: off (per-node interpreter)"
    if delta:
        return None, "codegen: not used (delta kernels run on the per-node interpreter)"
    kernels = {s.node.name: s.kernel for s in model.plan.steps}
    try:
        lowered = lower(model.graph, kernels, _linked(None))
        lines = lowered.source.count("\n")
        if use is not True and lines > MAX_GENERATED_LINES:
            return None, (f"codegen: not used, the per-node interpreter runs the graph: its "
                          f"generated function would have {lines} lines (> "
                          f"{MAX_GENERATED_LINES}, minutes of compiling); "
                          f"Model(..., codegen=True) compiles it anyway")
        compiled = CompiledGraph(lowered, model.name)
        if build_now:
            compiled.compile()
    except Unsupported as e:
        return None, ("codegen: not used, the per-node interpreter runs the graph; the "
                      "generator cannot emit:\n  " + str(e).replace("\n", "\n  "))
    return compiled, (f"codegen: one compiled call per run / stream push "
                      f"(Model.source(); {compiled.path})")
