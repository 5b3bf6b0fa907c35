"""The runtime's general Loop kernel: the body's own plan (one kernel per body node, chosen
once at load) run once per iteration by `edgeseq.loop_op.run`, in float32 like every runtime
value. The generated whole-graph code has no emitter for Loop, so a model holding one runs
on the per-node interpreter (`Model.describe()` names the node)."""
from __future__ import annotations

import numpy as np

from edgeseq.graph import Graph, Node
from edgeseq.loop_op import run as run_loop
from edgeseq.ops import Op
from edgeseq.runtime.registry import Kernel, register


def _f32(a):
    a = np.asarray(a)
    return a.astype(np.float32) if a.dtype.kind == "f" and a.dtype != np.float32 else a


@register(Op.LOOP)
class LoopKernel(Kernel):
    """Runs the body plan per iteration; no state on self between calls (thread-safe)."""

    def __init__(self, graph: Graph, node: Node, **options) -> None:
        super().__init__(graph, node)
        from edgeseq.runtime.plan import build_plan    # the plan imports this module
        body = node.attrs["body"]
        self.plan = build_plan(body)
        self._inputs = [v.name for v in body.inputs]
        self._outputs = [v.name for v in body.outputs]
        # per step: (kernel, ((is_value, name_or_constant), ...), output names)
        self._steps = [(s.kernel, tuple((k == "v", x) for k, x in s.sources), s.outputs)
                       for s in self.plan.steps]
        n_body = len(self._steps)
        self.note = f"body of {n_body} node(s) on the interpreter, once per iteration"

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
        return run_loop(self.node, ins, self._body, np.float32)

    def warmup(self) -> None:
        for s in self.plan.steps:
            w = getattr(s.kernel, "warmup", None)
            if w is not None:
                w()
