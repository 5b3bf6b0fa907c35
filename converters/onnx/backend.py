"""An `onnx.backend.base.Backend` for edgeseq: convert with the ONNX converter, then execute.

Execution defaults to the float64 reference interpreter; pass `engine=` to `prepare` (or
subclass and set `engine`) to run on something else, e.g. the Numba runtime. The converter
package does not import the runtime itself (layering: converters never import runtime).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from edgeseq.graph import Graph

Engine = Callable[[Graph, dict], dict]


def reference_engine(graph: Graph, feeds: dict) -> dict:
    from edgeseq import reference
    return reference.run(graph, feeds)


class EdgeseqRep(BackendRep):
    """A converted model, ready to run on lists or dicts of inputs.

    ONNX lets weights (LSTM W/R/B, Reshape shapes ...) be graph inputs; edgeseq needs them at
    conversion time. When the converter names such inputs (`needs_fix`), the model is converted
    per call with those inputs fixed to the values given, as `edgeseq convert --fix` would.
    """

    def __init__(self, model: onnx.ModelProto, engine: Engine):
        from edgeseq.converters.onnx import convert
        from edgeseq.errors import UnsupportedModelError
        self.model = model
        self.engine = engine
        init = {t.name for t in model.graph.initializer}
        self.onnx_inputs = [vi.name for vi in model.graph.input if vi.name not in init]
        self.output_names = [vi.name for vi in model.graph.output]
        self.fixed: list[str] = []
        try:
            self.graph: Graph | None = convert(model)
        except UnsupportedModelError as e:
            if not getattr(e, "needs_fix", None):
                raise
            self.graph, self.fixed = None, list(e.needs_fix)

    def _graph_for(self, feeds: dict) -> Graph:
        if self.graph is not None:
            return self.graph
        from edgeseq.converters.onnx import convert
        return convert(self.model, fix={n: feeds[n] for n in self.fixed})

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            feeds = dict(zip(self.onnx_inputs, inputs))
        feeds = {k: np.asarray(v) for k, v in feeds.items()}
        graph = self._graph_for(feeds)
        names = {v.name for v in graph.inputs}
        out = self.engine(graph, {k: v for k, v in feeds.items() if k in names})
        # The reference computes in float64; hand back the model's declared dtypes.
        dtypes = {v.name: v.dtype for v in graph.outputs}
        return tuple(np.asarray(out[n]).astype(dtypes.get(n, out[n].dtype), copy=False)
                     for n in self.output_names)


class EdgeseqBackend(Backend):
    engine: Engine = staticmethod(reference_engine)

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return device == "CPU"

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", engine: Engine | None = None,
                **kwargs: Any) -> EdgeseqRep:
        return EdgeseqRep(model, engine or cls.engine)

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU",
                  **kwargs: Any) -> tuple[np.ndarray, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Sequence[np.ndarray], device: str = "CPU",
                 outputs_info=None, **kwargs: Any) -> tuple[np.ndarray, ...]:
        from onnx import helper
        ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.asarray(a).dtype),
                                             np.asarray(a).shape)
               for n, a in zip(node.input, inputs) if n]
        outs = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                for n in node.output if n]
        model = helper.make_model(helper.make_graph([node], "node", ins, outs))
        return cls.run_model(model, [a for n, a in zip(node.input, inputs) if n], device)


prepare = EdgeseqBackend.prepare
run_model = EdgeseqBackend.run_model
run_node = EdgeseqBackend.run_node
supports_device = EdgeseqBackend.supports_device
