"""Delta execution for `Model.run(inputs, delta=...)` and `Model.stream(delta=...)` (the
`DeltaStream` in `session.py` runs its pushes through a `DeltaRunner`), and the per-layer
statistics it reports (`model.last_stats`, `stream.stats`).

Thresholds: `delta=0.05` (θx = θh = 0.05 for every recurrent node), `delta=(θx, θh)`, or
`delta={"lstm_0": 0.05, "gru_1": (0.1, 0.02)}` (named nodes only; the others run dense).
A node whose thresholds are both 0 runs the dense kernel (the delta kernel would reproduce it
to float rounding, slower); its statistics then show every column kept.
"""
from __future__ import annotations

import threading

import numpy as np

from edgeseq.errors import InputError
from edgeseq.ops import RECURRENT
from edgeseq.runtime import delta_codegen
from edgeseq.runtime.delta import check_thresholds, is_delta_kernel
from edgeseq.runtime.delta_stats import DeltaStats, LayerStats, accumulate  # noqa: F401
from edgeseq.runtime.plan import select
from edgeseq.runtime.streaming import _feed_state


def parse_thresholds(model, delta) -> dict[str, tuple[float, float]]:
    """{recurrent node name: (θx, θh)} for the nodes that run with delta."""
    names = model.__dict__.get("_recurrent_names")
    if names is None:
        names = model._recurrent_names = [n.name for n in model.graph.nodes
                                          if n.op in RECURRENT]
    key = _plain_key(delta)
    cache = model.__dict__.setdefault("_parsed_thresholds", {})
    if key is not None and key in cache:
        return cache[key]
    parsed = _parse(model, names, delta)
    if key is not None:
        if len(cache) >= 256:           # a threshold search: keep it bounded
            cache.clear()
        cache[key] = parsed
    return parsed


def _plain_key(delta):
    """A cache key for thresholds spelled with Python floats only (the calibrated dicts and
    plain numbers; anything else is parsed each call), else None."""
    if type(delta) is float:
        return delta
    if type(delta) is not dict:
        return None
    key = []
    for k, v in delta.items():
        if not (type(v) is float or (type(v) is tuple and len(v) == 2
                                     and type(v[0]) is float and type(v[1]) is float)):
            return None
        key.append((k, v))
    return tuple(key)


def _parse(model, names: list, delta) -> dict[str, tuple[float, float]]:
    if isinstance(delta, dict):
        unknown = sorted(set(delta) - set(names))
        if unknown:
            raise InputError(f"model '{model.name}': delta names unknown recurrent node(s) "
                             f"{unknown}; recurrent nodes: {names}")
        return {k: check_thresholds(v, f"model '{model.name}': delta['{k}']")
                for k, v in delta.items()}
    th = check_thresholds(delta, f"model '{model.name}': delta")
    return {n: th for n in names}


class DeltaRunner:
    """A model's delta kernels (built on first use, weights transposed once) and the plan walk
    that runs them. One per Model; thread-safe (no per-call state)."""

    def __init__(self, model) -> None:
        self.model = model
        self._kernels: dict[str, object] = {}
        self._lock = threading.Lock()
        # generated delta functions per (delta nodes, counted nodes) (delta_codegen.py)
        self.compiled: dict[tuple, object] = {}
        self.compiled_by_thresholds: dict[tuple, object] = {}
        self.compile_lock = threading.Lock()
        self.codegen_note = ""

    @classmethod
    def of(cls, model) -> "DeltaRunner":
        with _RUNNERS_LOCK:
            r = model.__dict__.get("_delta_runner")
            if r is None:
                r = model.__dict__["_delta_runner"] = cls(model)
        return r

    def kernel(self, step):
        """The delta kernel of a plan step (the plan's own when it already is one)."""
        if is_delta_kernel(step.kernel):
            return step.kernel
        name = step.node.name
        with self._lock:
            k = self._kernels.get(name)
            if k is None:
                cls, _ = select(self.model.graph, step.node, delta=True)
                k = self._kernels[name] = cls(self.model.graph, step.node)
        return k

    def execute(self, env: dict, thresholds: dict, stats: DeltaStats, state: dict | None = None,
                given=(), dstates: dict | None = None) -> dict:
        """Model._execute with delta kernels for the nodes in `thresholds`."""
        prep = self.model._prep
        for step in self.model.plan.steps:
            node = step.node
            ins = [env.get(x) if k == "v" else x for k, x in step.sources]
            if node.name in prep.nodes and any(k == "v" and env.get(x) is None
                                               for k, x in step.sources):
                continue    # an initial state left out: its glue yields nothing
            if state is not None and node.name in state:
                _feed_state(node, ins, state[node.name], given, prep.sources)
            th = thresholds.get(node.name)
            if th is None:
                res = step.kernel(ins)
            else:
                kernel = self.kernel(step)
                counts = np.zeros(3, np.int64)
                if th == (0.0, 0.0) and not is_delta_kernel(step.kernel):
                    res = step.kernel(ins)
                    _dense_counts(kernel, ins, counts)
                else:
                    ds = None if dstates is None else dstates.setdefault(node.name, {})
                    res = kernel(ins, thresholds=th, dstate=ds, counts=counts)
                accumulate(stats, node.name, th, kernel, counts)
            if state is not None and node.name in state:
                st = state[node.name]
                for slot, arr in zip(("h", "c"), res[1:]):
                    st[slot] = arr
            for name, arr in zip(step.outputs, res):
                if name:
                    env[name] = arr
        return env


_RUNNERS_LOCK = threading.Lock()


def _dense_counts(kernel, ins, counts) -> None:
    """Counts of a dense run: every column of every processed row-step kept."""
    x, lens = ins[0], ins[1]
    t_len, n_batch = (x.shape[1], x.shape[0]) if kernel.batch_first else x.shape[:2]
    steps = int(np.sum(lens)) if lens is not None else t_len * n_batch
    steps *= kernel.n_dir
    counts[:] = (steps * kernel.n_input, steps * kernel.out_size, steps)


def run_delta(model, env: dict, delta) -> dict:
    """Model.run with delta execution; sets model.last_stats."""
    thresholds = parse_thresholds(model, delta)
    stats = DeltaStats()
    runner = DeltaRunner.of(model)
    out = delta_codegen.run(model, runner, env, thresholds, stats)
    if out is None:
        env = runner.execute(env, thresholds, stats)
        out = {n: env[n] for n in model.output_names}
    model.last_stats = stats
    return out
