"""The runtime's general Loop kernel: the body's own plan (one kernel per body node, chosen
once at load) run once per iteration by `edgeseq.loop_op.run`, in float32 like every runtime
value. The generated whole-graph code has no emitter for Loop, so a model holding one runs
on the per-node interpreter (`Model.describe()` names the node)."""
from __future__ import annotations

import numpy as np

from edgeseq.errors import GraphError, InputError
from edgeseq.graph import Graph, Node
from edgeseq.loop_op import run as run_loop
from edgeseq.ops import SPECS, Op
from edgeseq.runtime.glue import glue_constant
from edgeseq.runtime.registry import REGISTRY, Kernel, fallbacks, key_for, register


def _f32(a):
    a = np.asarray(a)
    return a.astype(np.float32) if a.dtype.kind == "f" and a.dtype != np.float32 else a


@register(Op.LOOP)
class LoopKernel(Kernel):
    """Runs the body plan per iteration; no state on self between calls (thread-safe)."""

    def __init__(self, graph: Graph, node: Node, **options) -> None:
        super().__init__(graph, node)
        body = node.attrs["body"]
        self._inputs = [v.name for v in body.inputs]
        self._outputs = [v.name for v in body.outputs]
        # per body node: (kernel, ((is_value, name_or_constant), ...), output names)
        self._steps = [(_kernel(body, n), _sources(body, n), tuple(n.outputs))
                       for n in body.nodes]
        self.note = f"body of {len(self._steps)} node(s) on the interpreter, once per iteration"

    def _body(self, values: list) -> list:
        env = dict(zip(self._inputs, values))     # float32 already (see __call__)
        for kernel, sources, outs in self._steps:
            res = kernel([env[x] if is_value else x for is_value, x in sources])
            for name, arr in zip(outs, res):
                if name:
                    env[name] = arr
        return [env[n] for n in self._outputs]

    def __call__(self, ins: list) -> list:
        ins = [None if a is None else _f32(a) for a in ins]
        for k in range(2, len(ins)):
            if ins[k] is None:     # an optional initial state left out (StatePrep): zeros
                ins[k] = self._zeros(k)
        return run_loop(self.node, ins, self._body, np.float32)

    def _zeros(self, k: int) -> np.ndarray:
        v = self.node.attrs["body"].inputs[k]
        if not all(isinstance(d, int) for d in v.shape):
            raise InputError(f"node '{self.node.name}' (Loop): input {k} "
                             f"('{self.node.inputs[k]}') not given, and its shape {v.shape} "
                             f"is not fixed, so it cannot start from zeros")
        return np.zeros(v.shape, np.float32 if v.dtype.startswith("float") else v.dtype)

    def warmup(self) -> None:
        for kernel, _, _ in self._steps:
            w = getattr(kernel, "warmup", None)
            if w is not None:
                w()


def _kernel(body: Graph, node: Node) -> Kernel:
    """The kernel the plan would choose (runtime/plan.py `select`, which imports this module
    to register it, so the body's steps are chosen here from the registry directly)."""
    key = key_for(body, node)
    for k in [key] + fallbacks(key):
        if k in REGISTRY:
            return REGISTRY[k](body, node)
    raise GraphError(f"Loop body node '{node.name}' ({node.op.value}): no runtime kernel for "
                     f"{key}")


def _sources(body: Graph, node: Node) -> tuple:
    names = list(node.inputs)
    if not SPECS[node.op].variadic_inputs:
        names += [""] * (len(SPECS[node.op].inputs) - len(names))
    return tuple((False, None) if not n else (False, glue_constant(body, n))
                 if n in body.constants else (True, n) for n in names)
