"""The edgeseq graph: named Values, Nodes in topological order, and constant tensors.

A node input names either a graph value (graph input or another node's output) or a
constant; "" marks an absent optional input. Recurrent nodes reference their weights through
`Node.weights` (slot -> constant name); glue ops take constants as ordinary inputs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from edgeseq.errors import GraphError, ShapeError
# the IR's parts live in edgeseq/ir.py (shape inference reads them without the graph); the
# graph re-exports them
from edgeseq.ir import SCALE_SUFFIX, Dim, Node, Shape, Value, scale_name  # noqa: F401
from edgeseq.limits import LIMITS
from edgeseq.ops import DTYPES, Op, RECURRENT, SPECS, normalize_attrs


@dataclass
class Graph:
    """A model: inputs, outputs, nodes in topological order, and constants (weights)."""
    name: str
    inputs: list[Value]
    outputs: list[Value]
    nodes: list[Node]
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    values: dict[str, Value] = field(default_factory=dict)   # inferred intermediates
    metadata: dict[str, Any] = field(default_factory=dict)

    # ---- lookup -------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def value(self, name: str) -> Value:
        """Value info for a graph input, output, intermediate or constant."""
        for v in self.inputs:
            if v.name == name:
                return v
        if name in self.values:
            return self.values[name]
        if name in self.constants:
            c = self.constants[name]
            return Value(name, str(c.dtype), tuple(c.shape))
        for v in self.outputs:
            if v.name == name:
                return v
        raise KeyError(name)

    def weight(self, node: Node, slot: str) -> np.ndarray | None:
        """The constant bound to a recurrent node's weight slot, or None."""
        name = node.weights.get(slot)
        return None if name is None else self.constants[name]

    def scale(self, node: Node, slot: str) -> np.ndarray | None:
        """Per-row float32 scale of an int8 weight slot, or None."""
        name = node.weights.get(slot)
        return None if name is None else self.constant_scale(name)

    def constant_scale(self, name: str) -> np.ndarray | None:
        """Per-row float32 scale of the int8 constant `name`, or None."""
        return self.constants.get(scale_name(name))

    # ---- checking -----------------------------------------------------------------------
    def validate(self) -> "Graph":
        """Check names, order, attributes, weight shapes; infer every value's shape and dtype.

        Raises GraphError / ShapeError naming the node and saying expected vs got.
        Normalises attributes in place (defaults filled), fills `self.values`.
        """
        from edgeseq.shapes import infer_node  # late: shapes imports graph types

        if len(self.nodes) > LIMITS.nodes:
            raise GraphError(f"graph of {len(self.nodes)} nodes exceeds the limit of "
                             f"{LIMITS.nodes} (edgeseq.limits.Limits.nodes)")
        known: dict[str, Value] = {}
        for v in self.inputs:
            _check_value(v, "graph input")
            if v.name in known:
                raise GraphError(f"duplicate graph input '{v.name}'")
            if v.name in self.constants:
                raise GraphError(f"graph input '{v.name}' has the same name as a constant")
            known[v.name] = v
        for name, c in self.constants.items():
            if not isinstance(c, np.ndarray):
                raise GraphError(f"constant '{name}' is not a numpy array")
            _check_dims(f"constant '{name}'", c.shape)
            known[name] = Value(name, str(c.dtype), tuple(c.shape))
        seen_nodes: set[str] = set()
        self.values = {}
        for node in self.nodes:
            where = f"node '{node.name}' ({node.op.value})"
            if not isinstance(node.name, str) or not all(
                    isinstance(n, str) for n in [*node.inputs, *node.outputs, *node.weights.values()]):
                raise GraphError(f"{where}: name, inputs, outputs and weights must be strings, got "
                                 f"inputs {node.inputs!r}, outputs {node.outputs!r}, "
                                 f"weights {node.weights!r}")
            if node.name in seen_nodes:
                raise GraphError(f"duplicate node name '{node.name}'")
            seen_nodes.add(node.name)
            s = SPECS[node.op]
            try:
                node.attrs = normalize_attrs(node.op, node.attrs)
            except (KeyError, ValueError) as e:
                raise GraphError(f"{where}: {e}") from None
            _check_attr_sizes(where, node.op, node.attrs)
            if not s.variadic_inputs and len(node.inputs) > len(s.inputs):
                raise GraphError(f"{where}: expected at most {len(s.inputs)} inputs "
                                 f"{list(s.inputs)}, got {len(node.inputs)}")
            if len(node.inputs) < s.min_inputs or any(not node.inputs[i] for i in range(s.min_inputs)):
                raise GraphError(f"{where}: expected at least {s.min_inputs} inputs "
                                 f"{list(s.inputs[:s.min_inputs])}, got {node.inputs}")
            for name in node.inputs:
                if name and name not in known:
                    raise GraphError(f"{where}: input '{name}' is not a graph input, constant, "
                                     f"or the output of an earlier node")
            slots = {sl.name for sl in s.slots}
            for slot, cname in node.weights.items():
                if slot not in slots:
                    raise GraphError(f"{where}: unknown weight slot '{slot}'; "
                                     f"slots: {sorted(slots)}")
                if cname not in self.constants:
                    raise GraphError(f"{where}: weight '{slot}' refers to missing constant '{cname}'")
            for sl in s.slots:
                if sl.required and sl.name not in node.weights:
                    raise GraphError(f"{where}: required weight slot '{sl.name}' is missing")
            if not s.variadic_outputs and len(node.outputs) > len(s.outputs):
                raise GraphError(f"{where}: expected at most {len(s.outputs)} outputs, "
                                 f"got {len(node.outputs)}")
            ins = [known[n] if n else None for n in node.inputs]
            try:
                outs = infer_node(self, node, ins)
            except ShapeError as e:
                raise ShapeError(f"{where}: {e}") from None
            for name, v in zip(node.outputs, outs):
                if not name:
                    continue
                _check_dims(f"{where}: output '{name}'", v.shape)
                if name in known:
                    raise GraphError(f"{where}: output '{name}' is already defined")
                val = Value(name, v.dtype, v.shape)
                known[name] = val
                self.values[name] = val
        for v in self.outputs:
            _check_value(v, "graph output")
            if v.name not in known:
                raise GraphError(f"graph output '{v.name}' is not produced by any node or input")
            got = known[v.name]
            v.dtype = got.dtype
            try:
                v.shape = _merge_shape(v.shape, got.shape)
            except ShapeError as e:
                raise ShapeError(f"output '{v.name}': {e}") from None
        return self

    # ---- serialisation ------------------------------------------------------------------
    def to_json(self) -> dict:
        """Everything but constant data (constants are listed with dtype and shape)."""
        return {
            "name": self.name,
            "inputs": [v.to_json() for v in self.inputs],
            "outputs": [v.to_json() for v in self.outputs],
            "nodes": [n.to_json() for n in self.nodes],
            "constants": {k: {"dtype": str(c.dtype), "shape": list(c.shape)}
                          for k, c in self.constants.items()},
            "metadata": self.metadata,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"), allow_nan=True)

    @classmethod
    def from_json(cls, d: dict, constants: dict[str, np.ndarray], _depth: int = 0) -> "Graph":
        """Rebuild from `to_json` output and the constant arrays (not validated). A Loop
        body's constants are taken by name from `constants` (the enclosing table)."""
        try:
            g = cls(d["name"], [Value.from_json(v) for v in d["inputs"]],
                    [Value.from_json(v) for v in d["outputs"]],
                    [Node.from_json(n) for n in d["nodes"]], dict(constants), {},
                    dict(d.get("metadata", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise GraphError(f"malformed graph JSON: missing or bad field {e}") from None
        for n in g.nodes:
            if n.op is Op.LOOP:
                n.attrs["body"] = _body_from_json(n, n.attrs.get("body"), constants, _depth + 1)
        return g

    def copy(self) -> "Graph":
        """A structural copy sharing constant arrays (passes replace, never mutate, arrays)."""
        return Graph.from_json(json.loads(self.dumps()), _nested_constants(self))

    # ---- reporting -----------------------------------------------------------------------
    def recurrent_nodes(self) -> Iterable[Node]:
        return (n for n in self.nodes if n.op in RECURRENT)

    def fresh_name(self, base: str) -> str:
        """A name not used by any value, constant or node."""
        used = {v.name for v in self.inputs} | set(self.values) | set(self.constants) \
            | {n.name for n in self.nodes} | {o for n in self.nodes for o in n.outputs}
        if base not in used:
            return base
        i = 1
        while f"{base}_{i}" in used:
            i += 1
        return f"{base}_{i}"


def read_constants(constants: dict[str, np.ndarray], nodes) -> dict[str, np.ndarray]:
    """The entries of `constants` that `nodes` read (as inputs or weights), with the per-row
    scales of the int8 ones."""
    used = {i for n in nodes for i in n.inputs} | {w for n in nodes for w in n.weights.values()}
    used |= {scale_name(u) for u in used}
    return {k: v for k, v in constants.items() if k in used}


def _body_from_json(node: Node, d, constants: dict, depth: int) -> "Graph":
    """A Loop body from its JSON: its constants come from the enclosing table by name, each
    with the dtype and shape the body's table states; nesting is bounded."""
    where = f"node '{node.name}' (Loop): field 'attrs.body'"
    if depth > LIMITS.loop_depth:
        raise GraphError(f"{where}: Loop bodies nest more than {LIMITS.loop_depth} levels deep "
                         f"(edgeseq.limits.Limits.loop_depth)")
    if hasattr(d, "nodes"):                       # already a Graph (from_json of a live node)
        return d
    if not isinstance(d, dict) or not isinstance(d.get("constants"), dict):
        raise GraphError(f"{where}: expected a graph object with a constant table, got "
                         f"{type(d).__name__}")
    own = {}
    for name, spec in d["constants"].items():
        arr = constants.get(name)
        if arr is None:
            raise GraphError(f"{where}: constant '{name}' is not in the enclosing constant "
                             f"table")
        if not isinstance(spec, dict) or spec.get("dtype") != str(arr.dtype) \
                or list(spec.get("shape", ())) != list(arr.shape):
            raise GraphError(f"{where}: constant '{name}' is stated as {spec!r:.80} but the "
                             f"table holds {arr.dtype} {tuple(arr.shape)}")
        own[name] = arr
    try:
        return Graph.from_json(d, own, depth)
    except GraphError as e:
        raise GraphError(f"{where}: {e}") from None


def _nested_constants(graph: "Graph") -> dict[str, np.ndarray]:
    """The constants of a graph and of every Loop body in it (bodies not yet validated have
    not joined the enclosing table)."""
    out, todo = {}, [graph]
    while todo:
        g = todo.pop()
        for name, arr in g.constants.items():
            out.setdefault(name, arr)
        todo += [n.attrs["body"] for n in g.nodes
                 if n.op is Op.LOOP and hasattr(n.attrs.get("body"), "nodes")]
    return out


# NOTE: clamped to the input's extent by the op itself; ONNX writes INT64_MAX for "to the end"
_CLAMPED_ATTRS = {(Op.SLICE, "starts"), (Op.SLICE, "ends")}


def _check_attr_sizes(where: str, op: Op, attrs: dict) -> None:
    """Integer attributes (sizes, pads, dilations, axes, shapes) within +-Limits.dim: a
    checksummed file can still ask for a 1e12 hidden size or dilation."""
    for key, v in attrs.items():
        if (op, key) in _CLAMPED_ATTRS:
            continue
        for x in (v if isinstance(v, (list, tuple)) else (v,)):
            if isinstance(x, (int, np.integer)) and not isinstance(x, bool) \
                    and abs(int(x)) > LIMITS.dim:
                raise GraphError(f"{where}: attribute '{key}' = {v!r:.80} is beyond the limit "
                                 f"of {LIMITS.dim} (edgeseq.limits.Limits.dim)")


def _check_dims(what: str, shape) -> None:
    """Rank and every fixed dim within the stated maxima; a negative dim is never valid."""
    if len(shape) > LIMITS.rank:
        raise ShapeError(f"{what}: rank {len(shape)} is more than the limit of {LIMITS.rank}")
    for d in shape:
        if isinstance(d, (int, np.integer)) and not isinstance(d, bool) \
                and not 0 <= d <= LIMITS.dim:
            raise ShapeError(f"{what}: dim {d} of {tuple(shape)} is outside [0, {LIMITS.dim}]")


def _check_value(v: Value, what: str) -> None:
    """A graph input/output needs a name and dims that are sizes or symbol names; an input
    also a known dtype (an output's dtype is inferred)."""
    if not isinstance(v.name, str) or not v.name:
        raise GraphError(f"{what} name must be a non-empty string, got {v.name!r}")
    if what == "graph input" and v.dtype not in DTYPES:
        raise GraphError(f"{what} '{v.name}': dtype {v.dtype!r} is not one of {list(DTYPES)}")
    for d in v.shape:
        if isinstance(d, bool) or not ((isinstance(d, (int, np.integer)) and d >= 0)
                                       or (isinstance(d, str) and d)):
            raise ShapeError(f"{what} '{v.name}': each dim must be a size >= 0 or a symbol "
                             f"name, got {tuple(v.shape)}")
    _check_dims(f"{what} '{v.name}'", v.shape)


def _merge_shape(declared: Shape, inferred: Shape) -> Shape:
    """Prefer concrete inferred dims; keep declared symbols where inference has none."""
    if not declared:
        return tuple(inferred)
    if len(declared) != len(inferred) or any(
            isinstance(d, int) and isinstance(i, int) and d != i for d, i in zip(declared, inferred)):
        raise ShapeError(f"graph output declared as {tuple(declared)} but computes {tuple(inferred)}")
    return tuple(i if isinstance(i, int) else d for d, i in zip(declared, inferred))
