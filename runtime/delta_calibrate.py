"""Per-layer, asymmetric delta thresholds chosen on calibration data for a MAC budget.

One threshold for every layer wastes the budget: layers differ in how many MACs a column
costs (W_x of a 12-input layer is tiny, W_h of a 256-unit layer is not) and in how much the
model's output cares about their skipped updates. `calibrate` searches the (θx, θh) of each
recurrent node greedily: starting from a small θ everywhere, each round tries raising every
threshold by a factor and keeps the one that buys the most MAC reduction per unit of output
deviation (log MAC gain / loss increase), until the model does `budget` x fewer MACs in its
recurrent layers than dense. The loss compares the delta outputs with the dense outputs of
the SAME calibration inputs (default: relative RMS over all outputs), so no labels are needed;
pass `loss=` for a task metric. Use data the model will be judged on never (a training or
validation split), then measure the chosen thresholds on held-out data.

    res = calibrate(model, {"x": x_train}, budget=5.0)
    model.run({"x": x_test}, delta=res.thresholds)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edgeseq.errors import InputError
from edgeseq.ops import RECURRENT


def relative_rms(out: dict, dense: dict) -> float:
    """sqrt(Σ (out - dense)² / Σ dense²) over every output (float64)."""
    num = den = 0.0
    for k, ref in dense.items():
        a = np.asarray(out[k], np.float64)
        b = np.asarray(ref, np.float64)
        num += float(np.sum((a - b) ** 2))
        den += float(np.sum(b * b))
    return math.sqrt(num / den) if den > 0 else math.sqrt(num)


@dataclass
class Calibration:
    """The chosen thresholds and what they did on the calibration data."""
    thresholds: dict[str, tuple[float, float]]
    mac_reduction: float
    loss: float
    met: bool                       # budget reached within max_rounds
    history: list[dict] = field(default_factory=list)   # one entry per accepted move


def calibrate(model, feeds: dict, *, budget: float, loss=relative_rms, start: float = 0.01,
              factor: float = 1.3, max_rounds: int = 60,
              layers: list[str] | None = None) -> Calibration:
    """Greedy per-layer (θx, θh) search on `feeds` until `budget` x fewer recurrent MACs.

    budget: target dense/done MAC ratio (> 1). loss(delta_outputs, dense_outputs) -> float,
    lower is better. start: initial θ for every knob; factor: multiplicative step (> 1).
    layers: recurrent node names to tune (default: all). Evaluations = about
    rounds x 2 x layers delta runs of `feeds`."""
    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 1):
        raise InputError(f"delta calibration: budget must be a MAC reduction > 1, got {budget!r}")
    if not (factor > 1 and start > 0):
        raise InputError(f"delta calibration: need start > 0 and factor > 1, got start={start!r}"
                         f", factor={factor!r}")
    names = [n.name for n in model.graph.nodes if n.op in RECURRENT]
    if layers is not None:
        unknown = sorted(set(layers) - set(names))
        if unknown:
            raise InputError(f"delta calibration: unknown recurrent node(s) {unknown}; "
                             f"recurrent nodes: {names}")
        names = list(layers)
    if not names:
        raise InputError(f"model '{model.name}' has no recurrent node to calibrate")
    dense = model.run(feeds)

    def evaluate(th: dict) -> tuple[float, float]:
        out = model.run(feeds, delta={k: tuple(v) for k, v in th.items()})
        return float(model.last_stats.mac_reduction), float(loss(out, dense))

    th = {n: [start, start] for n in names}
    macs, cur = evaluate(th)
    history = [{"thresholds": _frozen(th), "mac_reduction": macs, "loss": cur}]
    for _ in range(max_rounds):
        if macs >= budget:
            break
        best = None
        for n in names:
            for k in (0, 1):
                trial = {m: list(v) for m, v in th.items()}
                trial[n][k] *= factor
                m2, l2 = evaluate(trial)
                gain = math.log(max(m2, 1e-12) / macs)
                if gain <= 0:
                    continue
                # MAC gain per unit of extra loss; a move that also lowers the loss wins
                score = math.inf if l2 <= cur else gain / (l2 - cur)
                key = (score, gain)
                if best is None or key > best[0]:
                    best = (key, trial, m2, l2)
        if best is None:        # no knob reduces MACs any further
            break
        _, th, macs, cur = best
        history.append({"thresholds": _frozen(th), "mac_reduction": macs, "loss": cur})
    return Calibration(_frozen(th), macs, cur, macs >= budget, history)


def _frozen(th: dict) -> dict[str, tuple[float, float]]:
    return {k: (float(v[0]), float(v[1])) for k, v in th.items()}
