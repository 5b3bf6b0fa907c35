"""The kernel registry: kernel families register under a key; the plan (`runtime/plan.py`)
selects one per node. Importing this module compiles and registers nothing.

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

from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgeseq.graph import Graph, Node
from edgeseq.ops import Op, RECURRENT


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


def as_float32(a: np.ndarray) -> np.ndarray:
    """A C-contiguous, writable float32 copy-or-view (copies read-only memory maps once)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    return a if a.flags.writeable else a.copy()
