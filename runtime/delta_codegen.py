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
from edgeseq.runtime.delta import DSTATE_SLOTS, is_delta_kernel
from edgeseq.runtime.delta_stats import DeltaStats, accumulate

THETA, COUNTS = "theta", "counts"      # the per-call slots (codegen/delta_ops.py)


class CountedDense:
    """A recurrent node run by its dense kernel inside a delta run (θ = (0, 0)), lowered as
    the dense node plus the statistics' counts (codegen/delta_ops.py)."""

    def __init__(self, dense, delta) -> None:
        self.dense = dense          # the plan's kernel
        self.delta = delta          # the node's delta kernel (sizes for the counts)


def theta_bits(th: tuple[float, float]) -> np.ndarray:
    """(θx, θh) as the float64 pair the kernels read, in a float32 [1, 1, 4] slot (read-only
    for the generated code, so one array serves every call with these thresholds)."""
    return np.array(th, np.float64).view(np.float32).reshape(1, 1, 4)


def counts_bits(n_nodes: int) -> tuple[np.ndarray, list]:
    """Zeroed int64 [n, 3] counts, and per node its float32 [1, 1, 6] slot view."""
    block = np.zeros((n_nodes, 3), np.int64)
    slots = block.view(np.float32).reshape(n_nodes, 1, 1, 6)
    return block, [slots[k] for k in range(n_nodes)]


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
        self._theta: dict[tuple, np.ndarray] = {}     # thresholds -> their slot array
        self._local = threading.local()

    def workspace(self):
        return self.compiled.workspace()

    def call(self, env: dict, thresholds: dict, stats, state: dict | None = None,
             dstates: dict | None = None, given=(), workspace=None) -> dict:
        """One run (state None) or stream push (state / dstates carried and replaced);
        accumulates `stats` like `DeltaRunner.execute`."""
        block, count_slots = counts_bits(len(self.counted))
        carried = {}
        for name in self.recurrent:
            carried[name] = dict(state[name]) if state is not None else {}
        for name, cs in zip(self.counted, count_slots):
            slots = carried[name]
            if name in self.delta:
                if dstates is not None and dstates.get(name):
                    slots.update(dstates[name])
                th = thresholds[name]
                bits = self._theta.get(th)
                if bits is None:
                    if len(self._theta) >= 256:     # a threshold search: keep it bounded
                        self._theta.clear()
                    bits = self._theta[th] = theta_bits(th)
                slots[THETA] = bits
            slots[COUNTS] = cs
        if workspace is None:
            workspace = getattr(self._local, "workspace", None)
            if workspace is None:
                workspace = self._local.workspace = self.compiled.workspace()
        out = self.compiled.push(env, carried, given, workspace)
        for name, c in zip(self.counted, block):
            accumulate(stats, name, thresholds[name], self.stats_kernels[name], c)
        if state is not None:
            for name in self.recurrent:
                got = carried[name]
                state[name] = {k: got[k] for k in ("h", "c") if k in got}
                if name in self.delta:
                    dstates[name] = {k: got[k] for k in DSTATE_SLOTS}
        return out


def compiled_for(model, runner, thresholds: dict):
    """The model's CompiledDelta for these thresholds (built once per split), or None when
    the interpreter runs delta for this model (`runner.codegen_note` says why)."""
    if model._compiled is None:
        return None
    key = split(thresholds, model.plan)
    got = runner.compiled.get(key, False)
    if got is not False:
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
        return cd.call(env, stream.thresholds, stream.stats, stream._state, stream._dstates,
                       chunk, ws)
    except InputError:
        # the interpreter's message names the values; it runs on copies of the state
        stream._runner.execute(dict(env), stream.thresholds, DeltaStats(),
                               {k: dict(v) for k, v in stream._state.items()}, chunk,
                               {k: {s: a.copy() for s, a in v.items()}
                                for k, v in stream._dstates.items()})
        raise
