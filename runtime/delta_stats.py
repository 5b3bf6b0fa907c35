"""Per-layer delta statistics (`model.last_stats`, `stream.stats`) from the kernels'
kept-column counts, shared by the interpreter's plan walk (delta_runner.py) and generated
code (delta_codegen.py)."""
from __future__ import annotations

from dataclasses import dataclass, field


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


def accumulate(stats: DeltaStats, name: str, th, kernel, counts) -> None:
    """Add one node's kept-column counts of a call (int64 [3]) to `stats`."""
    kept_x, kept_h, steps = (int(v) for v in counts[:3])
    done, dense = kernel.macs((kept_x, kept_h, steps))
    s = stats.layers.get(name)
    if s is None:
        stats.layers[name] = LayerStats(name, th, steps, kernel.n_input, kernel.out_size,
                                        kept_x, kept_h, done, dense)
        return
    s.row_steps += steps
    s.kept_input += kept_x
    s.kept_recurrent += kept_h
    s.macs += done
    s.macs_dense += dense
