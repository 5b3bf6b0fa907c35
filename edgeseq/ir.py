"""The parts of the edgeseq IR: dims and shapes, named Values, Nodes, and how an int8
constant's scale is named. `edgeseq.graph` assembles them into a Graph (and re-exports them);
`edgeseq.shapes` infers Values from them without importing the graph.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from edgeseq.errors import GraphError
from edgeseq.ops import Op, SPECS

Dim = Union[int, str]            # a fixed size, or a symbol such as "T" or "N"
Shape = tuple[Dim, ...]

# An int8 constant "<name>" carries its per-row float32 scale as the constant "<name>.scale".
SCALE_SUFFIX = ".scale"


def scale_name(constant: str) -> str:
    """The name of the per-row scale of an int8 constant."""
    return constant + SCALE_SUFFIX


@dataclass
class Value:
    """A named tensor flowing through the graph."""
    name: str
    dtype: str
    shape: Shape

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, d: dict) -> "Value":
        return cls(d["name"], d["dtype"], tuple(d["shape"]))

    def describe(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        return f"({dims}) {self.dtype}"


@dataclass
class Node:
    """One op application."""
    name: str
    op: Op
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, str] = field(default_factory=dict)

    def input(self, slot: str) -> str:
        """The value name bound to the named positional input, or "" if absent."""
        names = SPECS[self.op].inputs
        i = names.index(slot)
        return self.inputs[i] if i < len(self.inputs) else ""

    def output(self, slot: str) -> str:
        names = SPECS[self.op].outputs
        i = names.index(slot)
        return self.outputs[i] if i < len(self.outputs) else ""

    def to_json(self) -> dict:
        # a Loop body (a Graph) is written as its own JSON (edgeseq/loop_op.py)
        attrs = {k: list(v) if isinstance(v, tuple) else v.to_json() if hasattr(v, "to_json")
                 else v for k, v in self.attrs.items()}
        return {"name": self.name, "op": self.op.value, "inputs": list(self.inputs),
                "outputs": list(self.outputs), "attrs": attrs, "weights": dict(self.weights)}

    @classmethod
    def from_json(cls, d: dict) -> "Node":
        try:
            op = Op(d["op"])
        except ValueError:
            raise GraphError(f"node '{d.get('name')}': unknown op '{d['op']}'") from None
        return cls(d["name"], op, list(d["inputs"]), list(d["outputs"]), dict(d.get("attrs", {})),
                   dict(d.get("weights", {})))
