"""lstmp: turn an LSTM stack into LSTMP by one joint SVD per layer (docs/design.md, compression passes;
Prabhavalkar et al. 2016).

For layer l and direction d, the recurrent matrix W_h[d] (4H × H) and the columns of the next
consumer's weight that read direction d's output (the next LSTM's W_x, or the Gemm/MatMul head
after the last LSTM) both multiply the same H-vector m_t. Stack them, J = [W_h[d]; W_next[:, d]],
take J ≈ (U_r Σ_r) V_rᵀ: V_rᵀ becomes the projection w_proj[d] (r × H), the top block of U_r Σ_r
the new recurrent weight (4H × r) and the rest the next consumer's new columns. Recurrence and
the next layer then both read the r-dimensional projected output. r = H reproduces the float
graph exactly (J has H columns).

What lies between a layer's y and its consumer (Transpose/Squeeze/Reshape/Gather/Slice/...)
is checked by pushing a probe tensor through it with the reference interpreter: the consumer
must see the features as d·H + h along its last axis, before and after the rewrite. Anything
else (concat of two nodes, y or y_h used elsewhere, a given initial_h, an existing projection,
factored W_h) is refused for that layer with the reason in the report.
"""
from __future__ import annotations

import numpy as np

from edgeseq.errors import GraphError
from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import LAYOUT, Op, UNARY, num_directions
from edgeseq.quant.common import drop_unused_constants, note_pass, put_constant, size_rows
from edgeseq.reference import dequantize

# ops allowed between a layer's y and its consumer: they move or select elements, never mix
# features (the probe below checks that they keep the d·H + h order on the last axis)
_PASS_THROUGH = (LAYOUT - {Op.CONCAT, Op.SPLIT, Op.PAD}) | {Op.IDENTITY}
_HEADS = (Op.GEMM, Op.MATMUL)


class Refused(Exception):
    """A layer lstmp cannot rewrite; the message goes into the report."""


def _consumers(graph: Graph) -> dict[str, list[tuple[Node, int]]]:
    users: dict[str, list[tuple[Node, int]]] = {}
    for node in graph.nodes:
        for k, name in enumerate(node.inputs):
            if name:
                users.setdefault(name, []).append((node, k))
    return users


def _follow(graph: Graph, node: Node, users) -> tuple[list[Node], Node]:
    """(glue chain, consumer) from the layer's y to the next LSTM or linear head."""
    outputs = {v.name for v in graph.outputs}
    if node.output("y_h") and (node.output("y_h") in outputs or users.get(node.output("y_h"))):
        raise Refused("its final state y_h is used (its size would change)")
    if node.input("initial_h"):
        raise Refused("it has an initial_h input (its size would change)")
    chain: list[Node] = []
    name = node.outputs[0] if node.outputs else ""
    while True:
        if not name:
            raise Refused("its output y is not used")
        if name in outputs:
            raise Refused(f"'{name}' is a graph output (its size would change)")
        u = users.get(name, [])
        if len(u) != 1:
            raise Refused(f"'{name}' has {len(u)} consumers; expected exactly one")
        nxt, k = u[0]
        if nxt.op is Op.LSTM and k == 0:
            return chain, nxt
        if nxt.op in _HEADS and k == 0 and nxt.inputs[1] in graph.constants:
            if nxt.op is Op.GEMM and nxt.attrs["trans_a"]:
                raise Refused(f"head '{nxt.name}' uses trans_a")
            if graph.constants[nxt.inputs[1]].ndim != 2:
                raise Refused(f"head '{nxt.name}' has a batched weight")
            return chain, nxt
        if nxt.op not in _PASS_THROUGH or k != 0 or len(nxt.outputs) != 1:
            raise Refused(f"its output reaches '{nxt.name}' ({nxt.op.value}), which is neither "
                          f"layout glue, an LSTM, nor a Gemm/MatMul head with a constant weight")
        chain.append(nxt)
        name = nxt.outputs[0]


def _probe_ok(graph: Graph, node: Node, chain: list[Node], d: int, p: int) -> bool:
    """Does the chain deliver y's features as d·p + h on the consumer's last axis?"""
    from edgeseq.reference import run

    bf = node.attrs["batch_first"]
    t, n = 3, 2
    shape = (n, t, d, p) if bf else (t, d, n, p)
    code = np.arange(d * p, dtype=np.float64).reshape(d, p)
    probe = np.broadcast_to(code[None, :, None, :] if not bf else code[None, None], shape)
    end = chain[-1].outputs[0] if chain else node.outputs[0]
    consts = {k: graph.constants[k] for c in chain for k in c.inputs if k in graph.constants}
    sub = Graph("probe", [Value(node.outputs[0], "float32", shape)],
                [Value(end, "float32", ())], [Node(c.name, c.op, list(c.inputs),
                                                   list(c.outputs), dict(c.attrs)) for c in chain],
                consts)
    try:
        out = run(sub.validate(), {node.outputs[0]: probe.astype(np.float32)})[end]
    except Exception:
        return False
    return out.shape[-1] == d * p and bool(np.all(out == np.arange(d * p)))


def _resize_reshapes(chain: list[Node], old: int, new: int) -> list[tuple[Node, tuple]]:
    """Reshapes in the chain that spell the feature size out literally now get the new size
    (the probe then checks the result); returns (node, previous shape) for undoing."""
    changed = []
    for n in chain:
        if n.op is Op.RESHAPE and n.attrs["shape"] and n.attrs["shape"][-1] == old:
            changed.append((n, n.attrs["shape"]))
            n.attrs["shape"] = tuple(n.attrs["shape"][:-1]) + (new,)
    return changed


def _next_blocks(graph: Graph, consumer: Node, d: int, h: int) -> list[np.ndarray]:
    """For each direction d of the layer, the consumer's weight columns reading it, as rows×H."""
    name = consumer.inputs[1] if consumer.op in _HEADS else consumer.weights["w_x"]
    w = dequantize(graph.constants[name], graph.constant_scale(name))
    if consumer.op is Op.LSTM:             # [D', 4H', D*H] -> rows D'*4H'
        w = w.reshape(-1, w.shape[-1])
    elif consumer.op is Op.MATMUL or not consumer.attrs["trans_b"]:   # [K, O]
        w = w.T
    if w.shape[-1] != d * h:
        raise Refused(f"consumer '{consumer.name}' reads {w.shape[-1]} features, expected {d * h}")
    return [w[:, k * h:(k + 1) * h] for k in range(d)]


def _set_next(graph: Graph, consumer: Node, blocks: list[np.ndarray]) -> None:
    """Write the consumer's new weight from its per-direction column blocks (rows × r)."""
    w = np.concatenate(blocks, axis=1).astype(np.float32)
    if consumer.op is Op.LSTM:
        old = consumer.weights["w_x"]
        d2 = graph.constants[old].shape[0]
        new = graph.fresh_name(old + "_lstmp")
        put_constant(graph, new, w.reshape(d2, -1, w.shape[-1]))
        consumer.weights["w_x"] = new
    else:
        old = consumer.inputs[1]
        new = graph.fresh_name(old + "_lstmp")
        put_constant(graph, new, w if consumer.op is Op.GEMM and consumer.attrs["trans_b"] else w.T)
        consumer.inputs[1] = new


def _rank(sigma: np.ndarray, proj: int | None, energy: float | None) -> int:
    from edgeseq.quant.svd import rank_for_energy

    return min(int(proj), len(sigma)) if proj is not None else rank_for_energy(sigma, energy)


def _rewrite(graph: Graph, node: Node, proj: int | None, energy: float | None, users) -> dict:
    a = node.attrs
    if a["proj_size"]:
        raise Refused("it already has a projection")
    if "w_h" not in node.weights:
        raise Refused("its W_h is factored (run lstmp before svd)")
    chain, consumer = _follow(graph, node, users)
    d, h = num_directions(a), a["hidden_size"]
    if not _probe_ok(graph, node, chain, d, h):
        raise Refused("the glue to its consumer does not keep features in d·H + h order")
    w_h = dequantize(graph.constants[node.weights["w_h"]], graph.scale(node, "w_h"))
    nxt = _next_blocks(graph, consumer, d, h)
    joints = [np.concatenate([w_h[k], nxt[k]], axis=0) for k in range(d)]
    svds = [np.linalg.svd(j, full_matrices=False) for j in joints]
    r = max(_rank(s, proj, energy) for _, s, _ in svds)
    # NOTE: r = H is allowed (it is exact, which is how the pass is tested) though it saves nothing
    rows = 4 * h
    w_proj, w_h_new, next_new, kept = [], [], [], []
    for u, s, vt in svds:
        left = u[:, :r] * s[:r]
        w_proj.append(vt[:r])
        w_h_new.append(left[:rows])
        next_new.append(left[rows:])
        kept.append(float(np.sum(s[:r] ** 2) / np.sum(s ** 2)) if np.any(s) else 1.0)
    resized = _resize_reshapes(chain, d * h, d * r)
    if not _probe_ok(graph, node, chain, d, r):
        for reshape, old in resized:
            reshape.attrs["shape"] = old
        raise Refused(f"the glue to its consumer cannot carry {d}×{r} projected features "
                      f"(fixed sizes in a Reshape?)")
    old = node.weights["w_h"]
    node.weights["w_h"] = graph.fresh_name(old + "_lstmp")
    put_constant(graph, node.weights["w_h"], np.stack(w_h_new).astype(np.float32))
    node.weights["w_proj"] = graph.fresh_name(f"{node.name}.w_proj")
    put_constant(graph, node.weights["w_proj"], np.stack(w_proj).astype(np.float32))
    a["proj_size"] = r
    _set_next(graph, consumer, next_new)
    return {"proj": r, "energy": round(min(kept), 6), "joint_with": consumer.name}


def apply(graph: Graph, *, proj: int | None = None, energy: float | None = None,
          layers: list[str] | None = None) -> tuple[Graph, list[dict]]:
    """LSTMP copy of `graph` with projection size `proj` (or the rank keeping `energy`)."""
    if (proj is None) == (energy is None):
        raise GraphError("lstmp: give exactly one of proj (projection size) or energy")
    if proj is not None and proj < 1:
        raise GraphError(f"lstmp: projection size must be >= 1, got {proj}")
    src = graph if graph.values or not graph.nodes else graph.copy().validate()
    out = src.copy()
    extra: dict[str, dict] = {}
    for node in list(out.nodes):
        if node.op is not Op.LSTM or (layers is not None and node.name not in layers):
            continue
        try:
            out.validate()       # shapes of the glue after earlier rewrites
            extra[node.name] = _rewrite(out, node, proj, energy, _consumers(out))
        except Refused as e:
            extra[node.name] = {"note": f"not projected: {e}"}
    drop_unused_constants(out)
    note_pass(out, {"pass": "lstmp", "proj": proj, "energy": energy})
    out.validate()
    if not any("proj" in v for v in extra.values()):
        reasons = "; ".join(f"{k}: {v['note']}" for k, v in extra.items()) or "no LSTM layers"
        raise GraphError(f"lstmp: no layer could be projected ({reasons})")
    return out, size_rows(src, out, extra)
