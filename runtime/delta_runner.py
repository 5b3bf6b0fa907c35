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
from dataclasses import dataclass, field

import numpy as np

from edgeseq.errors import InputError
from edgeseq.ops import RECURRENT
from edgeseq.runtime.delta import check_thresholds, is_delta_kernel
from edgeseq.runtime.plan import select
from edgeseq.runtime.streaming import _feed_state


def parse_thresholds(model, delta) -> dict[str, tuple[float, float]]:
    """{recurrent node name: (θx, θh)} for the nodes that run with delta."""
    names = [n.name for n in model.graph.nodes if n.op in RECURRENT]
    if isinstance(delta, dict):
        unknown = sorted(set(delta) - set(names))
        if unknown:
            raise InputError(f"model '{model.name}': delta names unknown recurrent node(s) "
                             f"{unknown}; recurrent nodes: {names}")
        return {k: check_thresholds(v, f"model '{model.name}': delta['{k}']")
                for k, v in delta.items()}
    th = check_thresholds(delta, f"model '{model.name}': delta")
    return {n: th for n in names}


@dataclass
class LayerStats:
    """Delta statistics of one recurrent node over a run (or a stream since reset)."""
    node: str
    thresholds: tuple[float, float]
    row_steps: int = 0            # time steps x batch rows x directions processed
    n_input: int = 0              # input columns per step (W_x)
    n_recurrent: int = 0          # recurrent columns per step (W_h or V)
    kept_input: int = 0
    kept_recurrent: int = 0
    macs: int = 0                 # multiply-adds done in the node's matrices
    macs_dense: int = 0           # ... by the dense kernel on the same steps

    @property
    def skipped_input(self) -> float:
        """Fraction of input columns skipped."""
        total = self.row_steps * self.n_input
        return 1.0 - self.kept_input / total if total else 0.0

    @property
    def skipped_recurrent(self) -> float:
        """Fraction of recurrent columns skipped."""
        total = self.row_steps * self.n_recurrent
        return 1.0 - self.kept_recurrent / total if total else 0.0

    @property
    def mac_reduction(self) -> float:
        """Dense MACs / MACs done (>= 1: how many times fewer)."""
        return self.macs_dense / self.macs if self.macs else float("inf")


@dataclass
class DeltaStats:
    """Per-layer delta statistics; `str()` is a small table."""
    layers: dict[str, LayerStats] = field(default_factory=dict)

    @property
    def macs(self) -> int:
        return sum(s.macs for s in self.layers.values())

    @property
    def macs_dense(self) -> int:
        return sum(s.macs_dense for s in self.layers.values())

    @property
    def mac_reduction(self) -> float:
        return self.macs_dense / self.macs if self.macs else float("inf")

    def as_dict(self) -> dict:
        return {k: {"thresholds": list(s.thresholds), "row_steps": s.row_steps,
                    "skipped_input": s.skipped_input, "skipped_recurrent": s.skipped_recurrent,
                    "macs": s.macs, "macs_dense": s.macs_dense} for k, s in self.layers.items()}

    def __str__(self) -> str:
        lines = [f"{'layer':<16} {'θx':>7} {'θh':>7} {'skip x':>7} {'skip h':>7} "
                 f"{'MACs':>13} {'dense MACs':>13} {'fewer':>7}"]
        for s in self.layers.values():
            lines.append(f"{s.node:<16} {s.thresholds[0]:>7.4g} {s.thresholds[1]:>7.4g} "
                         f"{s.skipped_input:>7.1%} {s.skipped_recurrent:>7.1%} {s.macs:>13,} "
                         f"{s.macs_dense:>13,} {s.mac_reduction:>6.2f}x")
        return "\n".join(lines)


class DeltaRunner:
    """A model's delta kernels (built on first use, weights transposed once) and the plan walk
    that runs them. One per Model; thread-safe (no per-call state)."""

    def __init__(self, model) -> None:
        self.model = model
        self._kernels: dict[str, object] = {}
        self._lock = threading.Lock()

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
                _accumulate(stats, node.name, th, kernel, counts)
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


def _accumulate(stats: DeltaStats, name: str, th, kernel, counts) -> None:
    s = stats.layers.get(name)
    if s is None:
        s = stats.layers[name] = LayerStats(name, th, n_input=kernel.n_input,
                                            n_recurrent=kernel.out_size)
    done, dense = kernel.macs(counts)
    s.row_steps += int(counts[2])
    s.kept_input += int(counts[0])
    s.kept_recurrent += int(counts[1])
    s.macs += done
    s.macs_dense += dense


def run_delta(model, env: dict, delta) -> dict:
    """Model.run with delta execution; sets model.last_stats."""
    thresholds = parse_thresholds(model, delta)
    stats = DeltaStats()
    env = DeltaRunner.of(model).execute(env, thresholds, stats)
    model.last_stats = stats
    return {n: env[n] for n in model.output_names}
