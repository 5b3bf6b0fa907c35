"""Execution plan: one kernel per node, chosen once from a registry.

Kernel registry
---------------
Kernels are classes registered under a `KernelKey(op, wdtype, factored, delta)`:

    @register(Op.LSTM, wdtype="int8")                 # (op, weight dtype, factored, delta)
    class Int8Lstm(Kernel):
        def __init__(self, graph, node, **options): ...   # load-time weight preparation
        def __call__(self, ins): ...                       # -> list of outputs

* `wdtype` is the dtype shared by the node's matrix weights (w_x, w_h or w_h_u/w_h_v, w_proj);
  "mixed" when they differ. Glue ops register with wdtype "float32".
* `factored` is True when the node carries w_h_u/w_h_v instead of w_h.
* `delta` is True when the Model was asked for delta execution of that node
  (`Model(graph, delta={node_name: {...}})`); the options reach the kernel's __init__.
* Weight preparation (re-layout, transposition, packing, dequantisation) happens once in
  `__init__`, per kernel family; it must not modify the graph's (possibly read-only,
  memory-mapped) arrays.
* `__call__(ins)` gets the node's inputs in spec order (None for absent optional inputs) and
  returns every output of the spec in order, even those the graph leaves unnamed (a Stream
  reads final states from them). It must be thread-safe: no per-call state on `self`.
* Registering the same key twice is an error. When no kernel matches a recurrent node with
  float16/int8/mixed or factored weights, `FALLBACKS` lists keys to try instead (the float32
  dense kernel, with weights dequantised/multiplied out at load); `describe()` says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edgeseq.errors import GraphError
from edgeseq.graph import Graph, Node
from edgeseq.ops import Op, RECURRENT, SPECS


@dataclass(frozen=True)
class KernelKey:
    op: Op
    wdtype: str = "float32"
    factored: bool = False
    delta: bool = False

    def __str__(self) -> str:
        form = "factored" if self.factored else "dense"
        mode = "delta" if self.delta else "exact"
        return f"({self.op.value}, {self.wdtype}, {form}, {mode})"


class Kernel:
    """Base class of every kernel family (see the module docstring for the protocol)."""
    key: KernelKey
    note: str = ""

    def __init__(self, graph: Graph, node: Node, **options) -> None:
        self.node = node

    def __call__(self, ins: list) -> list:
        raise NotImplementedError


REGISTRY: dict[KernelKey, type[Kernel]] = {}


def register(op: Op, *, wdtype: str = "float32", factored: bool = False,
             delta: bool = False) -> Callable[[type[Kernel]], type[Kernel]]:
    """Class decorator: register a kernel family under (op, wdtype, factored, delta)."""
    key = KernelKey(op, wdtype, factored, delta)

    def deco(cls: type[Kernel]) -> type[Kernel]:
        if key in REGISTRY:
            raise AssertionError(f"kernel {key} registered twice: {REGISTRY[key].__name__} "
                                 f"and {cls.__name__}")
        REGISTRY[key] = cls
        cls.key = key
        return cls
    return deco


_MATRIX_SLOTS = ("w_x", "w_h", "w_h_u", "w_h_v", "w_proj")


def key_for(graph: Graph, node: Node, *, delta: bool = False) -> KernelKey:
    """The registry key a node asks for."""
    if node.op not in RECURRENT:
        return KernelKey(node.op)
    dtypes = {str(graph.constants[node.weights[s]].dtype) for s in _MATRIX_SLOTS
              if s in node.weights}
    wdtype = dtypes.pop() if len(dtypes) == 1 else "mixed"
    return KernelKey(node.op, wdtype, "w_h_u" in node.weights, delta)


def fallbacks(key: KernelKey) -> list[KernelKey]:
    """Keys to try when `key` has no kernel, best first (dense float32 is the last resort
    for recurrent ops: weights are dequantised / multiplied out once at load)."""
    out = []
    if key.op in RECURRENT:
        if key.wdtype != "float32":
            out.append(KernelKey(key.op, "float32", key.factored, key.delta))
        if key.factored:
            out.append(KernelKey(key.op, key.wdtype, False, key.delta))
        out.append(KernelKey(key.op, "float32", False, key.delta))
    return [k for k in dict.fromkeys(out) if k != key]


def select(graph: Graph, node: Node, *, delta: bool = False) -> tuple[type[Kernel], KernelKey]:
    """The kernel class for a node and the key it was asked for."""
    _load_builtin_kernels()
    key = key_for(graph, node, delta=delta)
    for k in [key] + fallbacks(key):
        if k in REGISTRY:
            return REGISTRY[k], key
    raise GraphError(f"node '{node.name}' ({node.op.value}): no runtime kernel for {key}; "
                     f"registered: {sorted(str(k) for k in REGISTRY if k.op is node.op)}")


def _load_builtin_kernels() -> None:
    # Importing the modules registers their kernels; done lazily so `edgeseq.runtime.plan`
    # can be imported (and extended) without compiling anything.
    import edgeseq.runtime.recurrent  # noqa: F401
    import edgeseq.runtime.glue  # noqa: F401
    import edgeseq.runtime.compressed  # noqa: F401  (int8/fp16/factored LSTM, quant issue)
    import edgeseq.runtime.kernels.delta_family  # noqa: F401  (delta kernels, issue 6)
    import edgeseq.runtime.sru  # noqa: F401  (SRU: one GEMM + elementwise recurrence)


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


def glue_constant(graph: Graph, name: str) -> np.ndarray:
    """A constant as a glue kernel reads it: an int8 weight with a per-row "<name>.scale"
    (quant int8 pass on a Gemm/MatMul head) is dequantised once at load, float16 widened."""
    c = graph.constants[name]
    scale = graph.constants.get(name + ".scale")
    if c.dtype == np.int8 and scale is not None:
        return c.astype(np.float32) * np.asarray(scale, np.float32)[..., None]
    return c.astype(np.float32) if c.dtype == np.float16 else c


def as_float32(a: np.ndarray) -> np.ndarray:
    """A C-contiguous, writable float32 copy-or-view (copies read-only memory maps once)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    return a if a.flags.writeable else a.copy()
