"""svd: factor each recurrent layer's W_h into w_h_u @ w_h_v (docs/design.md: the IR, compression passes).

Per direction, W_h = U Σ Vᵀ is truncated to rank r and split symmetrically,
w_h_u = U_r √Σ_r, w_h_v = √Σ_r V_rᵀ, so both factors have similar row norms (which keeps
per-row int8 scales of a later int8 pass tight). One rank serves both directions of a node
(the slot shape is [D, ., r]); chosen directly (`rank`), by retained energy Σσ²_kept / Σσ²
(`energy`), or as the smallest energy on a grid whose calibration output error stays within
`budget`. A layer whose factors would not be smaller than W_h stays dense.
"""
from __future__ import annotations

import numpy as np

from edgeseq.errors import GraphError
from edgeseq.graph import Graph, Node
from edgeseq.quant.common import drop_unused_constants, note_pass, put_constant, size_rows
from edgeseq.reference import dequantize

ENERGY_GRID = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999)


def rank_for_energy(sigma: np.ndarray, energy: float) -> int:
    """Smallest r whose leading singular values keep at least `energy` of Σσ²."""
    e = np.cumsum(np.asarray(sigma, np.float64) ** 2)
    if e[-1] == 0:
        return 1
    return int(min(np.searchsorted(e / e[-1], energy - 1e-12) + 1, len(sigma)))


def factor(w: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(u [rows, r], v [r, cols], retained energy) of one matrix, in float32."""
    u, s, vt = np.linalg.svd(np.asarray(w, np.float64), full_matrices=False)
    root = np.sqrt(s[:r])
    kept = float(np.sum(s[:r] ** 2) / np.sum(s ** 2)) if np.any(s) else 1.0
    return (u[:, :r] * root).astype(np.float32), (root[:, None] * vt[:r]).astype(np.float32), kept


def _dense_w_h(graph: Graph, node: Node) -> np.ndarray | None:
    if "w_h" not in node.weights:
        return None           # already factored
    return dequantize(graph.constants[node.weights["w_h"]], graph.scale(node, "w_h"))


def _choose_rank(w: np.ndarray, rank: int | None, energy: float | None) -> int:
    full = min(w.shape[-2:])
    if rank is not None:
        return max(1, min(int(rank), full))
    return max(rank_for_energy(np.linalg.svd(w[d].astype(np.float64), compute_uv=False), energy)
               for d in range(w.shape[0]))


def apply(graph: Graph, *, rank: int | None = None, energy: float | None = None,
          budget: float | None = None, calibration: dict | None = None,
          layers: list[str] | None = None) -> tuple[Graph, list[dict]]:
    """Factor W_h of every recurrent node (or the named `layers`); see the module doc."""
    given = [k for k, v in (("rank", rank), ("energy", energy), ("budget", budget)) if v is not None]
    if len(given) != 1:
        raise GraphError(f"svd: give exactly one of rank, energy or budget (got {given or 'none'})")
    if energy is not None and not 0.0 < energy <= 1.0:
        raise GraphError(f"svd: energy must be in (0, 1], got {energy}")
    if rank is not None and rank < 1:
        raise GraphError(f"svd: rank must be >= 1, got {rank}")
    if budget is not None:
        return _apply_budget(graph, budget, calibration, layers)
    src = graph if graph.values or not graph.nodes else graph.copy().validate()
    out = src.copy()
    extra: dict[str, dict] = {}
    for node in out.recurrent_nodes():
        if layers is not None and node.name not in layers:
            continue
        w = _dense_w_h(out, node)
        if w is None:
            continue
        rows, cols = w.shape[-2:]
        r = _choose_rank(w, rank, energy)
        if r * (rows + cols) >= rows * cols:
            extra[node.name] = {"rank": None, "note": f"kept dense (rank {r} saves nothing)"}
            continue
        us, vs, kept = zip(*(factor(w[d], r) for d in range(w.shape[0])))
        name = node.weights.pop("w_h")
        u_name, v_name = out.fresh_name(name + "_u"), out.fresh_name(name + "_v")
        put_constant(out, u_name, np.stack(us))
        put_constant(out, v_name, np.stack(vs))
        node.weights["w_h_u"], node.weights["w_h_v"] = u_name, v_name
        extra[node.name] = {"rank": r, "energy": round(min(kept), 6)}
    drop_unused_constants(out)
    note_pass(out, {"pass": "svd", "rank": rank, "energy": energy})
    out.validate()
    return out, size_rows(src, out, extra)


def _apply_budget(graph: Graph, budget: float, calibration: dict | None,
                  layers: list[str] | None) -> tuple[Graph, list[dict]]:
    """Smallest grid energy whose graph-output error on `calibration` is <= budget."""
    from edgeseq.quant.calibrate import output_error

    if calibration is None:
        raise GraphError("svd: an error budget needs calibration inputs (--calibrate FILE.npz)")
    best = None
    for e in ENERGY_GRID:
        cand, rows = apply(graph, energy=e, layers=layers)
        err = output_error(graph, cand, calibration)
        if err <= budget:
            best = (cand, rows, e, err)
            break
    if best is None:
        cand, rows = apply(graph, energy=1.0, layers=layers)
        best = (cand, rows, 1.0, output_error(graph, cand, calibration))
    cand, rows, e, err = best
    for row in rows:
        row["budget"], row["chosen_energy"] = budget, e
    cand.metadata["compression"][-1].update({"budget": budget, "chosen_energy": e,
                                             "calibration_error": err})
    return cand, rows
