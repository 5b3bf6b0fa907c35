"""Per-layer facts of a Graph: ops, recurrent features, parameter counts and bytes by dtype.

Shared by `edgeseq inspect` and the convert/quant reports, so every command describes a
model the same way. `summarize` returns plain JSON-able data; `format_summary` renders it.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from edgeseq.graph import Graph, Node, scale_name
from edgeseq.ops import ACTIVATIONS, DEFAULT_ACTIVATIONS, RECURRENT, Op, num_directions


def constants_of(graph: Graph, node: Node) -> list[str]:
    """Names of the constants a node reads: weight slots, their int8 scales, constant inputs."""
    names = list(node.weights.values())
    names += [scale_name(n) for n in node.weights.values() if scale_name(n) in graph.constants]
    names += [n for n in node.inputs if n and n in graph.constants]
    body = node.attrs.get("body")     # a Loop: its body's constants (edgeseq/loop_op.py)
    names += [n for n in getattr(body, "constants", ()) if n in graph.constants]
    return list(dict.fromkeys(names))


def param_stats(graph: Graph, names=None) -> dict[str, dict[str, int]]:
    """dtype -> {"count": elements, "bytes": bytes} over the named constants (default: all)."""
    out: dict[str, dict[str, int]] = {}
    for name in (graph.constants if names is None else names):
        c = graph.constants[name]
        s = out.setdefault(str(c.dtype), {"count": 0, "bytes": 0})
        s["count"] += int(c.size)
        s["bytes"] += int(c.nbytes)
    return dict(sorted(out.items()))


def _totals(stats: dict[str, dict[str, int]]) -> tuple[int, int]:
    return sum(s["count"] for s in stats.values()), sum(s["bytes"] for s in stats.values())


def layer_facts(graph: Graph, node: Node) -> dict[str, Any]:
    """Features of one recurrent node (graph must be validated: attrs normalised)."""
    a = node.attrs
    w_x = graph.weight(node, "w_x")
    batch_first = a["batch_first"]
    f: dict[str, Any] = {
        "node": node.name, "op": node.op.value, "direction": a["direction"],
        "num_directions": num_directions(a), "input_size": int(w_x.shape[-1]),
        "hidden_size": a["hidden_size"], "layout": "batch_first" if batch_first else "time_major",
        "activations": list(a["activations"]),
    }
    if node.op is Op.LSTM:
        f["proj_size"] = a["proj_size"]
        f["peephole"] = "peephole" in node.weights
        f["coupled_gate"] = a["coupled_gate"]
        f["layer_norm"] = "layer_norm" in node.weights
        f["cell_clip"] = a["cell_clip"]
        f["proj_clip"] = a["proj_clip"]
    if node.op is Op.GRU:
        f["linear_before_reset"] = a["linear_before_reset"]
    if node.op is Op.SRU:
        proj = graph.weight(node, "w_x_proj")
        f["input_size"] = int(proj.shape[-1]) if proj is not None else f["input_size"]
        f["proj_size"] = int(proj.shape[1]) if proj is not None else 0
        f["sru_skip"] = a["skip"]
        f["layer_norm"] = a["layer_norm"] if a["layer_norm"] != "none" else False
        f["sru_v1"] = "v" not in node.weights
    f["gate_clip"] = a["gate_clip"]
    if any(x != d for x, d in zip(a["activation_alpha"] + a["activation_beta"],
                                  _default_alpha_beta(a["activations"]))):
        f["activation_alpha"] = list(a["activation_alpha"])
        f["activation_beta"] = list(a["activation_beta"])
    u = graph.weight(node, "w_h_u")
    f["factored_rank"] = int(u.shape[-1]) if u is not None else 0
    f["sequence_lens"] = bool(node.input("sequence_lens"))
    f["initial_state"] = any(node.inputs[2:])      # initial_h (and _c), or SRU's initial_c
    f["weight_dtypes"] = {slot: str(graph.constants[c].dtype) for slot, c in node.weights.items()}
    return f


def _default_alpha_beta(acts) -> tuple[float, ...]:
    return tuple(ACTIVATIONS[n][0] or 0.0 for n in acts) + tuple(ACTIVATIONS[n][1] or 0.0 for n in acts)


def summarize(graph: Graph) -> dict[str, Any]:
    """JSON-able description of a validated graph."""
    layers = []
    for node in graph.nodes:
        names = constants_of(graph, node)
        if node.op not in RECURRENT and not names:
            continue
        facts = layer_facts(graph, node) if node.op in RECURRENT else \
            {"node": node.name, "op": node.op.value}
        stats = param_stats(graph, names)
        facts["params"], facts["bytes"] = _totals(stats)
        facts["params_by_dtype"] = stats
        layers.append(facts)
    stats = param_stats(graph)
    count, nbytes = _totals(stats)
    return {
        "name": graph.name,
        "inputs": [_value(v) for v in graph.inputs],
        "outputs": [_value(v) for v in graph.outputs],
        "ops": dict(Counter(n.op.value for n in graph.nodes)),
        "layers": layers,
        "parameters": {"count": count, "bytes": nbytes, "by_dtype": stats},
    }


def _value(v) -> dict[str, Any]:
    return {"name": v.name, "dtype": v.dtype, "shape": list(v.shape)}


# ---- rendering ------------------------------------------------------------------------------
def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def _shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(str(r[k])) for r in [header] + rows) for k in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]


def _matrix_dtypes(f: dict) -> str:
    """dtypes of the weight matrices (biases, peepholes and gains are always float32)."""
    return ",".join(sorted({dt for slot, dt in f["weight_dtypes"].items() if slot.startswith("w_")}))


def _features(f: dict) -> str:
    """The non-default features of a recurrent layer, compactly."""
    out = []
    if f.get("proj_size"):
        out.append(f"proj={f['proj_size']}")
    if f.get("peephole"):
        out.append("peephole")
    if f.get("coupled_gate", "none") != "none":
        out.append(f"cifg({f['coupled_gate']} derived)")
    if f.get("layer_norm"):
        out.append("layer_norm" if f["layer_norm"] is True else f"layer_norm={f['layer_norm']}")
    if f.get("sru_skip", "input") != "input":
        out.append(f"skip={f['sru_skip']}")
    if f.get("sru_v1"):
        out.append("v1")
    for k in ("cell_clip", "proj_clip", "gate_clip"):
        if f.get(k):
            out.append(f"{k}={f[k]:g}")
    if f.get("linear_before_reset"):
        out.append("linear_before_reset")
    if f.get("factored_rank"):
        out.append(f"rank={f['factored_rank']}")
    if f["layout"] == "batch_first":
        out.append("batch_first")
    if f.get("sequence_lens"):
        out.append("seq_lens")
    if f.get("initial_state"):
        out.append("init_state")
    default = list(DEFAULT_ACTIVATIONS[Op(f["op"])]) * f["num_directions"]
    if f["activations"] != default or "activation_alpha" in f:
        out.append("act=" + ",".join(f["activations"]))
    return " ".join(out) or "-"


def format_summary(s: dict[str, Any]) -> str:
    """Human-readable tables of `summarize` output (plus `artifact` facts when present)."""
    lines = [f"model   {s['name']}"]
    art = s.get("artifact")
    if art:
        lines.append(f"file    {art['path']} ({_human_bytes(art['file_bytes'])}), format "
                     f"{art['format']} {art['version']}, producer {art['producer'] or '?'}")
        if art.get("source"):
            lines.append(f"source  {art['source']}")
        lines.append(f"checksum {art['checksum']} "
                     f"({'verified' if art.get('checksum_verified') else 'not verified'})")
    lines.append("")
    io_rows = [["input", v["name"], v["dtype"], _shape(v["shape"])] for v in s["inputs"]]
    io_rows += [["output", v["name"], v["dtype"], _shape(v["shape"])] for v in s["outputs"]]
    lines += _table(io_rows, ["", "name", "dtype", "shape"])
    lines.append("")
    lines.append("ops     " + ", ".join(f"{op} x{n}" for op, n in s["ops"].items()))
    lines.append("")
    rec = [f for f in s["layers"] if Op(f["op"]) in RECURRENT]
    if rec:
        rows = [[f["node"], f["op"], f["direction"], f["input_size"], f["hidden_size"],
                 _matrix_dtypes(f), f"{f['params']:,}", _human_bytes(f["bytes"]),
                 _features(f)] for f in rec]
        lines += _table(rows, ["layer", "op", "direction", "in", "hidden", "weights", "params",
                               "bytes", "features"])
        lines.append("")
    other = [f for f in s["layers"] if Op(f["op"]) not in RECURRENT]
    if other:
        rows = [[f["node"], f["op"], ",".join(f["params_by_dtype"]), f"{f['params']:,}",
                 _human_bytes(f["bytes"])] for f in other]
        lines += _table(rows, ["node", "op", "dtypes", "params", "bytes"])
        lines.append("")
    p = s["parameters"]
    rows = [[dt, f"{st['count']:,}", _human_bytes(st["bytes"])] for dt, st in p["by_dtype"].items()]
    rows.append(["total", f"{p['count']:,}", _human_bytes(p["bytes"])])
    lines += _table(rows, ["dtype", "params", "bytes"])
    return "\n".join(lines)


__all__ = ["summarize", "format_summary", "layer_facts", "param_stats", "constants_of"]
