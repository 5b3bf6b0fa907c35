"""Conversion state shared by the ONNX handlers: known constants, inferred shapes, emitted nodes.

Handlers read operands through the context (`inp`, `const`, `need_const`, `attrs`) and emit
edgeseq nodes with `emit`. A handler that meets something it cannot map raises `Unsupported`;
the converter collects every such problem and reports them all at once.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper

from edgeseq.graph import Node
from edgeseq.ops import Op


class Unsupported(Exception):
    """Raised by a handler: this node (or one of its attribute values) cannot be mapped."""


ONNX_TO_NP = {
    onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.DOUBLE: "float64", onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.BOOL: "bool",
}


def _n_static(shape) -> int:
    return sum(isinstance(d, int) for d in shape)


def node_label(node: onnx.NodeProto) -> str:
    return f"'{node.name}' ({node.op_type})" if node.name else f"<unnamed> ({node.op_type})"


class Context:
    def __init__(self, opsets: dict[str, int], shapes: dict[str, tuple[str, tuple]]):
        self.opsets = opsets
        self.consts: dict[str, np.ndarray] = {}
        self.shapes = shapes                    # ONNX name -> (dtype, shape) from shape inference
        self.nodes: list[Node] = []
        self.alias: dict[str, str] = {}
        self.graph_inputs: set[str] = set()
        self.producers: dict[str, onnx.NodeProto] = {}   # ONNX value name -> producing node
        self.inferred: dict = {}                  # name -> edgeseq Value of emitted outputs
        self.symbolic: dict[str, object] = {}
        self.batch_perm: dict[str, tuple[str, int]] = {}   # batch-sorted values (batchperm.py)   # shape values with dynamic dims (symbolic.py)
        self._names: set[str] = set()
        self.node: onnx.NodeProto | None = None  # the ONNX node being converted
        self.node_name = ""
        self.wanted_const: list[str] = []        # operands that had to be constants but were not
        self.fold_errors: dict[str, str] = {}    # value -> why its all-constant producer failed

    # ---- operands ----------------------------------------------------------------------
    def resolve(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def const(self, name: str) -> np.ndarray | None:
        """The constant value of an operand, or None if it is computed at run time."""
        return self.consts.get(self.resolve(name)) if name else None

    def input_name(self, node: onnx.NodeProto, i: int) -> str:
        return node.input[i] if i < len(node.input) else ""

    def need_const(self, node: onnx.NodeProto, i: int, what: str) -> np.ndarray:
        """Operand i, which must be known at conversion time."""
        name = self.input_name(node, i)
        v = self.const(name)
        if v is None:
            self.wanted_const.append(self.resolve(name))
            raise Unsupported(
                f"input {i} ('{what}' = '{name}') must be a constant after folding but is computed "
                f"at run time; fix the input it depends on with --fix NAME=VALUE or its shape with "
                f"--shape NAME=DIMS" + self._fold_hint([name]))
        return v

    def _fold_hint(self, names: list[str]) -> str:
        """Why an upstream node with constant operands did not fold (an invalid model, e.g. a
        Concat of mixed ranks), so the user is not sent to --fix in vain."""
        seen, todo = set(), [self.resolve(n) for n in names if n]
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            if n in self.fold_errors:
                return f" (node {self.fold_errors[n]})"
            node = self.producers.get(n)
            if node is not None:
                todo += [self.resolve(i) for i in node.input if i]
        return ""

    def need_consts(self, node: onnx.NodeProto, operands: dict[int, str]) -> dict[int, np.ndarray | None]:
        """Several operands that must be constants when present (absent ones give None);
        reports all that are not, in one problem."""
        out, missing = {}, []
        for i, what in operands.items():
            name = self.input_name(node, i)
            out[i] = self.const(name) if name else None
            if name and out[i] is None:
                self.wanted_const.append(self.resolve(name))
                missing.append(f"input {i} ('{what}' = '{name}')")
        if missing:
            raise Unsupported(f"{', '.join(missing)} must be constant(s) after folding but are "
                              f"computed at run time; fix the graph inputs they depend on with "
                              f"--fix NAME=VALUE (or their shapes with --shape NAME=DIMS)"
                              + self._fold_hint([self.input_name(node, i) for i in operands]))
        return out

    def opt_const(self, node: onnx.NodeProto, i: int, what: str) -> np.ndarray | None:
        """Optional operand i: None if absent, else it must be a constant."""
        return self.need_const(node, i, what) if self.input_name(node, i) else None

    def inp(self, node: onnx.NodeProto, i: int) -> str:
        """Name of operand i for an emitted node ("" if absent); constants are recorded."""
        name = self.resolve(self.input_name(node, i))
        if name in self.symbolic:
            raise Unsupported(f"input {i} ('{name}') is computed from dynamic dims and is used "
                              f"as data, so it must fold" + self.shape_request(name, all_dims=True))
        return name

    def shape_request(self, name: str, all_dims: bool = False) -> str:
        """'; it is computed from the shape of graph input(s) 'x': give sizes to all but one
        dynamic dim, e.g. --shape x=1,T,6' (every dynamic dim with `all_dims`: --shape
        x=<batch>,<seq>,6), naming the graph inputs whose shapes `name` comes from."""
        _, via_shape = self.input_ancestors(name)
        asks = []
        for inp in sorted(via_shape):
            dims = list((self.shapes.get(inp) or (None, None))[1] or ())
            syms = [k for k, d in enumerate(dims) if isinstance(d, str)]
            if not syms:
                continue
            for k in (syms if all_dims else syms[:-1]):
                dims[k] = f"<{dims[k]}>" if all_dims else 1    # 1: an example size
            asks.append(f"--shape {inp}={','.join(str(d) for d in dims)}")
        if not asks:
            return "; fix the dims of the graph inputs it depends on with --shape NAME=DIMS"
        how = "give every dynamic dim a size" if all_dims else \
            "give sizes to all but one dynamic dim, e.g."
        return (f"; it is computed from the shape of graph input(s) "
                f"{', '.join(repr(i) for i in sorted(via_shape))}: {how} " + " ".join(asks))

    def add_const(self, base: str, arr: np.ndarray) -> str:
        """Register a new constant (e.g. re-ordered weights) and return its unique name."""
        name = self.fresh(base)
        self.consts[name] = np.ascontiguousarray(arr)
        return name

    def dtype(self, name: str) -> str | None:
        name = self.resolve(name)
        if name in self.consts:
            return str(self.consts[name].dtype)
        return self.shapes.get(name, (None, None))[0]

    def shape(self, name: str) -> tuple | None:
        """Shape from ONNX shape inference or, where that knows less (e.g. inside inlined If
        branches), from edgeseq's own inference on the nodes emitted so far (None if unknown)."""
        name = self.resolve(name)
        if name in self.consts:
            return tuple(self.consts[name].shape)
        a = self.shapes.get(name, (None, None))[1]
        b = self.inferred[name].shape if name in self.inferred else None
        if a is None or (b is not None and _n_static(b) > _n_static(a)):
            return b
        return a

    def input_ancestors(self, name: str) -> tuple[set[str], set[str]]:
        """Graph inputs that `name` depends on through their values, and through their shapes
        only (reached via Shape/Size), following the ONNX producers."""
        seen, values, shapes = set(), set(), set()
        todo = [(name, False)]
        while todo:
            n, via_shape = todo.pop()
            if not n or (n, via_shape) in seen:
                continue
            seen.add((n, via_shape))
            if n in self.graph_inputs:
                (shapes if via_shape else values).add(n)
            node = self.producers.get(n)
            if node is not None:
                through = via_shape or node.op_type in ("Shape", "Size")
                todo.extend((i, through) for i in node.input)
        return values, shapes - values

    # ---- attributes --------------------------------------------------------------------
    @staticmethod
    def attrs(node: onnx.NodeProto, known: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
        """Attributes as Python values (strings decoded); names outside `known` are refused."""
        out = {}
        for a in node.attribute:
            v = helper.get_attribute_value(a)
            if isinstance(v, bytes):
                v = v.decode()
            elif isinstance(v, list) and v and isinstance(v[0], bytes):
                v = [s.decode() for s in v]
            out[a.name] = v
        extra = set(out) - set(known)
        if extra:
            raise Unsupported(f"unsupported attribute(s) {sorted(extra)}; this converter "
                              f"understands {sorted(known) or 'none'}")
        return out

    # ---- output ------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self._names or name in self.consts:
            name = f"{base}_{k}"
            k += 1
        self._names.add(name)
        return name

    def reserve(self, names) -> None:
        self._names.update(n for n in names if n)

    def emit(self, op: Op, inputs: list[str], outputs: list[str], attrs: dict | None = None,
             weights: dict[str, str] | None = None, suffix: str = "") -> Node:
        """Append an edgeseq node (named after the ONNX node being converted)."""
        n = Node(self.fresh(self.node_name + suffix), op, list(inputs), list(outputs),
                 dict(attrs or {}), dict(weights or {}))
        self.reserve(outputs)
        self.nodes.append(n)
        self._infer(n)
        return n

    def _infer(self, n: Node) -> None:
        """Track output shapes with edgeseq's shape rules (best effort: Graph.validate has the
        last word and reports what is wrong)."""
        from edgeseq.errors import EdgeseqError
        from edgeseq.graph import Graph, Value
        from edgeseq.ops import normalize_attrs
        from edgeseq.shapes import infer_node

        ins = []
        for name in n.inputs:
            if not name:
                ins.append(None)
            elif name in self.consts:
                c = self.consts[name]
                ins.append(Value(name, str(c.dtype), tuple(c.shape)))
            elif name in self.inferred:
                ins.append(self.inferred[name])
            else:
                dt, shp = self.shapes.get(name, (None, None))
                if dt is None or shp is None:
                    return
                ins.append(Value(name, dt, shp))
        try:
            n.attrs = normalize_attrs(n.op, n.attrs)
            outs = infer_node(Graph("infer", [], [], [], self.consts), n, ins)
        except (EdgeseqError, KeyError, ValueError, TypeError, IndexError):
            return
        for name, v in zip(n.outputs, outs):
            if name:
                self.inferred[name] = Value(name, v.dtype, v.shape)

    def tmp(self, base: str) -> str:
        """A fresh intermediate value name."""
        return self.fresh(base)
