"""Delta execution through the whole-graph compiler: `Model.run(..., delta=...)` and a
`DeltaStream`'s pushes become one call of a generated function (runtime/codegen/delta_ops.py
emits the delta nodes), instead of the per-node plan walk of `delta_runner.DeltaRunner`.

One generated function per model and per set of nodes running delta (and set of nodes run
densely but counted, at θ = (0, 0)); the thresholds, the delta state and the statistics'
counts travel as carried state slots, so one compiled function serves every threshold value
(a calibration search compiles once). Results equal the interpreter's delta path bit for bit
(the same kernels on the same operands, in the same order); `last_stats` / `stream.stats`
are the interpreter's, from the same kept-column counts.

Used when the Model's own graph is generated (`Model.source()` is not None: codegen on, every
node emittable) and the delta graph lowers too; otherwise the interpreter runs, as before.
"""
from __future__ import annotations

import threading

import numpy as np

from edgeseq.errors import InputError
from edgeseq.ops import RECURRENT
from edgeseq.runtime.delta import (ARGS_SLOT as ARGS, DSTATE_SLOTS, STATE_SLOT as STATE,
                                   is_delta_kernel)
from edgeseq.runtime.delta_stats import DeltaStats, accumulate



class CountedDense:
    """A recurrent node run by its dense kernel inside a delta run (θ = (0, 0)), lowered as
    the dense node plus the statistics' counts (codegen/delta_ops.py)."""

    def __init__(self, dense, delta) -> None:
        self.dense = dense          # the plan's kernel
        self.delta = delta          # the node's delta kernel (sizes for the counts)


def args_template(thresholds: dict, names: list) -> np.ndarray:
    """Per node its ARGS slot, float32 [1, 1, 10]: (θx, θh) as float64, zero int64 counts."""
    block = np.zeros((len(names), 5), np.float64)
    for k, name in enumerate(names):
        block[k, :2] = thresholds[name]
    return block.view(np.float32).reshape(len(names), 1, 1, 10)


def pack_state(name: str, kernel, ds: dict) -> np.ndarray:
    """A node's four delta-state arrays [D, N, size] as one flat STATE slot."""
    parts, n = [], None
    for k, size in zip(DSTATE_SLOTS, kernel.state_sizes()):
        a = ds[k]
        if a.ndim != 3 or a.shape[0] != kernel.n_dir or a.shape[2] != size \
                or (n is not None and a.shape[1] != n):
            raise InputError(f"node '{name}': delta state '{k}' must be "
                             f"({kernel.n_dir}, N, {size}) float32 (N as the other slots), "
                             f"got {a.shape}")
        n = a.shape[1]
        parts.append(np.ascontiguousarray(a, np.float32).ravel())
    return np.concatenate(parts).reshape(1, 1, -1)


def unpack_state(kernel, flat: np.ndarray) -> dict:
    """The four delta-state arrays as views of a STATE slot."""
    flat = flat.reshape(-1)
    sizes = kernel.state_sizes()
    n = flat.size // (kernel.n_dir * sum(sizes))
    out, off = {}, 0
    for k, size in zip(DSTATE_SLOTS, sizes):
        end = off + kernel.n_dir * n * size
        out[k] = flat[off:end].reshape(kernel.n_dir, n, size)
        off = end
    return out


def split(thresholds: dict, plan) -> tuple[frozenset, frozenset]:
    """(nodes run by a delta kernel, nodes run densely and counted) for these thresholds,
    as `DeltaRunner.execute` chooses them."""
    delta, counted = set(), set()
    for step in plan.steps:
        th = thresholds.get(step.node.name)
        if th is None:
            continue
        if th == (0.0, 0.0) and not is_delta_kernel(step.kernel):
            counted.add(step.node.name)
        else:
            delta.add(step.node.name)
    return frozenset(delta), frozenset(counted)


class CompiledDelta:
    """The generated function of one model for one (delta nodes, counted nodes) split."""

    def __init__(self, model, runner, delta: frozenset, counted: frozenset) -> None:
        from edgeseq.runtime.codegen import compile_graph
        kernels, self.stats_kernels = {}, {}
        for step in model.plan.steps:
            name = step.node.name
            kernels[name] = step.kernel
            if name in delta or name in counted:
                dk = runner.kernel(step)
                self.stats_kernels[name] = dk
                kernels[name] = dk if name in delta else CountedDense(step.kernel, dk)
        self.delta = delta
        self.compiled = compile_graph(model.graph, kernels, model.name)
        self.recurrent = [s.node.name for s in model.plan.steps if s.node.op in RECURRENT]
        # nodes with statistics (delta and counted dense), in plan order
        self.counted = [n for n in self.recurrent if n in self.stats_kernels]
        self._args: dict[tuple, np.ndarray] = {}      # thresholds -> ARGS slots template
        # Model.run's arguments: every state slot empty (fresh) but the ARGS ones
        slots = self.compiled.lowered.states
        self._run_states = [np.zeros((0, 0, 0), np.float32)] * len(slots)
        self._args_at = [(pos, self.counted.index(s.node)) for pos, s in enumerate(slots)
                         if s.slot == ARGS]
        self._inputs = [v.name for v in model.graph.inputs]
        self._run_flags: dict[tuple, np.ndarray] = {}  # inputs given -> flags of a run
        self._local = threading.local()

    def workspace(self):
        return self.compiled.workspace()

    def call(self, env: dict, thresholds: dict, stats, state: dict | None = None,
             dstates: dict | None = None, given=(), workspace=None,
             packed: dict | None = None) -> dict:
        """One run (state None) or stream push (state / dstates carried and replaced;
        packed: {node: (STATE slot, the dstates dict made from it)} of the stream, so an
        unchanged state is passed on without packing); accumulates `stats` like
        `DeltaRunner.execute`."""
        args = self._fresh_args(thresholds)
        if workspace is None:
            workspace = getattr(self._local, "workspace", None)
            if workspace is None:
                workspace = self._local.workspace = self.compiled.workspace()
        if state is None:
            out = self._run(env, args, workspace)
            self._accumulate(stats, thresholds, args)
            return out
        carried = {}
        for name in self.recurrent:
            carried[name] = dict(state[name]) if state is not None else {}
        for k, name in enumerate(self.counted):
            slots = carried[name]
            slots[ARGS] = args[k]
            ds = dstates.get(name) if dstates is not None else None
            if name in self.delta and ds:
                prev = packed.get(name) if packed is not None else None
                slots[STATE] = prev[0] if prev is not None and prev[1] is ds else \
                    pack_state(name, self.stats_kernels[name], ds)
        out = self.compiled.push(env, carried, given, workspace)
        self._accumulate(stats, thresholds, args)
        for name in self.recurrent:
            got = carried[name]
            state[name] = {k: got[k] for k in ("h", "c") if k in got}
            if name in self.delta:
                flat = got[STATE]
                ds = dstates[name] = unpack_state(self.stats_kernels[name], flat)
                if packed is not None:
                    packed[name] = (flat, ds)
        return out

    def _fresh_args(self, thresholds: dict) -> np.ndarray:
        """The ARGS slots of a call: these thresholds, zero counts."""
        key = tuple(thresholds[n] for n in self.counted)
        template = self._args.get(key)
        if template is None:
            if len(self._args) >= 256:          # a threshold search: keep it bounded
                self._args.clear()
            template = self._args[key] = args_template(thresholds, self.counted)
        return template.copy()

    def _accumulate(self, stats, thresholds: dict, args: np.ndarray) -> None:
        counts = args.reshape(-1, 10)[:, 4:].view(np.int64)
        for name, c in zip(self.counted, counts.tolist()):
            accumulate(stats, name, thresholds[name], self.stats_kernels[name], c)

    def _run(self, env: dict, args: np.ndarray, workspace) -> dict:
        """Model.run: no state carried in, so the slots are fixed but for the ARGS arrays
        (the generic `CompiledGraph.push` walk of the slots costs ~10 us a call)."""
        cg = self.compiled
        states = list(self._run_states)
        for pos, k in self._args_at:
            states[pos] = args[k]
        present = tuple([name in env for name in self._inputs])
        flags = self._run_flags.get(present)
        if flags is None:
            flags = self._run_flags[present] = cg._flags(tuple(
                1 if s.slot == ARGS else cg._initial(s, env) for s in cg.lowered.states), env)
        res = cg._call(env, states, flags, workspace)
        return dict(zip(cg.lowered.outputs, res[:len(cg.lowered.outputs)]))


def compiled_for(model, runner, thresholds: dict):
    """The model's CompiledDelta for these thresholds (built once per split), or None when
    the interpreter runs delta for this model (`runner.codegen_note` says why)."""
    if model._compiled is None:
        return None
    # NOTE: the split depends only on which thresholds are (0, 0): looked up by them first
    seen = tuple(thresholds.items())
    got = runner.compiled_by_thresholds.get(seen, False)
    if got is not False:
        return got
    key = split(thresholds, model.plan)
    got = runner.compiled.get(key, False)
    if got is not False:
        if len(runner.compiled_by_thresholds) >= 256:
            runner.compiled_by_thresholds.clear()
        runner.compiled_by_thresholds[seen] = got
        return got
    with runner.compile_lock:
        if key not in runner.compiled:
            from edgeseq.runtime.codegen import Unsupported
            try:
                runner.compiled[key] = CompiledDelta(model, runner, *key)
            except Unsupported as e:
                runner.compiled[key] = None
                runner.codegen_note = ("delta codegen: not used, the per-node interpreter "
                                       "runs delta; the generator cannot emit:\n  "
                                       + str(e).replace("\n", "\n  "))
        return runner.compiled[key]


def run(model, runner, env: dict, thresholds: dict, stats) -> dict | None:
    """Model.run with delta as one generated call, or None (then the interpreter runs)."""
    if model._left_out_prep(env):
        return None
    cd = compiled_for(model, runner, thresholds)
    if cd is None:
        return None
    try:
        return cd.call(env, thresholds, stats)
    except InputError:
        # NOTE: generated code raises constant messages; the interpreter names the values
        runner.execute(dict(env), thresholds, DeltaStats())
        raise


def push(stream, env: dict, chunk: dict) -> dict | None:
    """A DeltaStream's push as one generated call (its state, delta state and stats carried
    and replaced), or None (then the interpreter runs)."""
    m = stream.model
    if m._left_out_prep(env) and not any(stream._state.values()):
        return None
    cd = compiled_for(m, stream._runner, stream.thresholds)
    if cd is None:
        return None
    ws = stream.__dict__.get("_delta_workspace")
    if ws is None:
        ws = stream._delta_workspace = cd.workspace()
    try:
        packed = stream.__dict__.setdefault("_delta_packed", {})
        return cd.call(env, stream.thresholds, stream.stats, stream._state, stream._dstates,
                       chunk, ws, packed)
    except InputError:
        # the interpreter's message names the values; it runs on copies of the state
        stream._runner.execute(dict(env), stream.thresholds, DeltaStats(),
                               {k: dict(v) for k, v in stream._state.items()}, chunk,
                               {k: {s: a.copy() for s, a in v.items()}
                                for k, v in stream._dstates.items()})
        raise
