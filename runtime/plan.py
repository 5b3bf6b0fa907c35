"""Execution plan: one kernel per node, chosen once from the registry (`runtime/registry.py`,
which documents the kernel protocol). Importing this module imports the built-in kernel
families, which registers them; the families import only the registry and `kernels/`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import edgeseq.runtime.compressed  # noqa: F401  (the built-in kernel families register
import edgeseq.runtime.delta  # noqa: F401       themselves when imported)
import edgeseq.runtime.glue  # noqa: F401
import edgeseq.runtime.recurrent  # noqa: F401
import edgeseq.runtime.sru  # noqa: F401
import edgeseq.runtime.conv_lstm  # noqa: F401
import edgeseq.runtime.loop  # noqa: F401
from edgeseq.errors import GraphError
from edgeseq.graph import Graph, Node
from edgeseq.ops import Op, SPECS
from edgeseq.runtime.glue import glue_constant
from edgeseq.runtime.registry import REGISTRY, Kernel, KernelKey, fallbacks, key_for


def select(graph: Graph, node: Node, *, delta: bool = False) -> tuple[type[Kernel], KernelKey]:
    """The kernel class for a node and the key it was asked for."""
    key = key_for(graph, node, delta=delta)
    for k in [key] + fallbacks(key):
        if k in REGISTRY:
            return REGISTRY[k], key
    raise GraphError(f"node '{node.name}' ({node.op.value}): no runtime kernel for {key}; "
                     f"registered: {sorted(str(k) for k in REGISTRY if k.op is node.op)}")


@dataclass
class Step:
    """One node of the plan: its kernel and where its inputs come from."""
    node: Node
    kernel: Kernel
    asked: KernelKey
    # per input: ("v", value name) | ("c", constant array) | ("-", None)
    sources: tuple
    outputs: tuple[str, ...]


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)

    def describe(self) -> str:
        """One line per node: op, the kernel asked for and the kernel that runs."""
        lines = []
        for s in self.steps:
            got = s.kernel.key
            fb = "" if got == s.asked else f"  (fallback from {s.asked})"
            note = f"  [{s.kernel.note}]" if s.kernel.note else ""
            lines.append(f"{s.node.name}: {type(s.kernel).__name__} {got}{fb}{note}")
        return "\n".join(lines)


def build_plan(graph: Graph, *, delta: dict | None = None) -> Plan:
    """Choose and prepare one kernel per node of a validated graph."""
    delta = delta or {}
    unknown = set(delta) - {n.name for n in graph.recurrent_nodes()}
    if unknown:
        raise GraphError(f"delta options name unknown recurrent node(s) {sorted(unknown)}")
    plan = Plan()
    for node in graph.nodes:
        cls, asked = select(graph, node, delta=node.name in delta)
        opts = delta.get(node.name, {})
        kernel = cls(graph, node, **opts)
        n_in = len(SPECS[node.op].inputs)
        names = list(node.inputs)
        if not SPECS[node.op].variadic_inputs:
            names += [""] * (n_in - len(names))
        sources = tuple(("-", None) if not n else
                        ("c", glue_constant(graph, n)) if n in graph.constants else ("v", n)
                        for n in names)
        plan.steps.append(Step(node, kernel, asked, sources, tuple(node.outputs)))
    fuse_activations(graph, plan)
    return plan


def fuse_activations(graph: Graph, plan: Plan) -> None:
    """Fold a Relu/Sigmoid into the kernel before it when that kernel can apply it to its own
    output (a `fuse(op, node_name)` method) and nothing else reads the intermediate value: the
    producer then writes the activation's output and the activation's step is dropped.
    Measured on silero-vad's frame (five Conv1d -> Relu/Sigmoid pairs): one NumPy call and
    one plan step less each."""
    readers: dict[str, int] = {}
    for n in graph.nodes:
        for name in n.inputs:
            if name:
                readers[name] = readers.get(name, 0) + 1
    graph_outputs = {v.name for v in graph.outputs}
    producer = {s.outputs[0]: s for s in plan.steps if s.outputs}
    drop = set()
    for s in plan.steps:
        if s.node.op not in (Op.RELU, Op.SIGMOID) or not s.sources or s.sources[0][0] != "v":
            continue
        src = s.sources[0][1]
        prev = producer.get(src)
        if prev is None or readers.get(src, 0) != 1 or src in graph_outputs \
                or len(prev.outputs) != 1 or getattr(prev.kernel, "fuse", None) is None \
                or getattr(prev.kernel, "post", 1):
            continue
        prev.kernel.fuse(s.node.op, s.node.name)
        prev.outputs = s.outputs
        drop.add(id(s))
    plan.steps = [s for s in plan.steps if id(s) not in drop]


