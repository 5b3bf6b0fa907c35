"""Lower a `torch.export` ExportedProgram (static shapes) to an edgeseq Graph.

One small handler per aten op, registered by decorator (`@handles("aten.linear.default")`).
A node whose inputs are all constants is folded by running it in PyTorch itself, so shape
arithmetic, `zeros` initial states and the like never reach the handlers. Every op that has no
handler is collected and reported at once, with the source line torch.export recorded.
"""
from __future__ import annotations

import operator
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edgeseq.errors import UnsupportedModelError
from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import Op

HANDLERS: dict[str, Callable] = {}


def handles(*targets: str):
    """Register `fn(cx, node, *args, **kwargs)` for aten ops named like 'aten.linear.default'."""
    def deco(fn):
        for t in targets:
            if t in HANDLERS:
                raise AssertionError(f"duplicate torch handler for {t}")
            HANDLERS[t] = fn
        return fn
    return deco


@dataclass(frozen=True)
class V:
    """An IR value produced while lowering, with its static (example) shape."""
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    @property
    def rank(self) -> int:
        return len(self.shape)


class _Poison:
    """Stands for the result of an op that could not be lowered (so errors do not cascade)."""


POISON = _Poison()
BIG = 2 ** 62          # "to the end" for Slice ends (shapes.py treats >= 2**61 as open-ended)


def target_name(target: Any) -> str:
    if target is operator.getitem:
        return "getitem"
    name = str(target)
    if name.startswith("<") and hasattr(target, "__name__"):
        # a Python function on sizes (math.ceil, operator.truediv, torch.sym_min): its own
        # name, not its repr (which lists as '<built-in' in the first line of a refusal)
        mod = (getattr(target, "__module__", None) or "").lstrip("_")
        return f"{mod}.{target.__name__}" if mod else target.__name__
    return name


def _torch_dir() -> str:
    import torch
    return os.path.dirname(os.path.abspath(torch.__file__)) + os.sep


def source_location(node) -> str:
    """The innermost frame of the user's code torch.export recorded for `node`, as
    'file:line: code' (frames inside torch itself, e.g. nn.Conv2d.forward, are skipped; the
    innermost frame when every frame is torch's)."""
    trace = (node.meta.get("stack_trace") or "").strip().splitlines()
    frames = [k for k in range(len(trace) - 1, -1, -1) if trace[k].strip().startswith("File ")]
    inside = _torch_dir()
    user = [k for k in frames
            if not os.path.abspath(trace[k].strip()[5:].split(",")[0].strip().strip('"'))
            .startswith(inside)]
    for k in user or frames:
        line = trace[k].strip()
        if line.startswith("File "):
            code = trace[k + 1].strip() if k + 1 < len(trace) else ""
            parts = line.split(",")
            where = parts[0][5:].strip().strip('"') + ":" + parts[1].replace("line", "").strip() \
                if len(parts) > 1 else line
            return f"{where}: {code}" if code else where
    return "<no source location recorded>"


class Emitter:
    """Builds IR nodes and constants with fresh names (shared by lowering and state_dict)."""

    def __init__(self, name: str):
        self.name = name
        self.nodes: list[Node] = []
        self.constants: dict[str, np.ndarray] = {}
        self.inputs: list[Value] = []
        self._used: set[str] = set()
        # parameters by identity: (array, preferred name, IR constant once registered)
        self._params: dict[int, list] = {}
        # constants derived from parameters (e.g. a cell's stacked weights), by source ids
        self.derived: dict[tuple, tuple] = {}
        self.metadata: dict = {}           # becomes graph.metadata (e.g. input_checks)

    def name_param(self, arr: np.ndarray, name: str) -> None:
        """Give a module parameter its own name (e.g. 'lstm.weight_ih_l0') and share it."""
        self._params[id(arr)] = [arr, name, None]

    # ---- emission ------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        base = base.replace(".", "_")
        name, k = base, 1
        while name in self._used:
            name = f"{base}_{k}"
            k += 1
        self._used.add(name)
        return name

    def const(self, arr, base: str) -> str:
        """Register a numpy constant under a fresh name; float tensors become float32."""
        a = np.asarray(arr)
        if a.dtype.kind == "f":
            a = a.astype(np.float32)
        name = self.fresh(base)
        self.constants[name] = np.ascontiguousarray(a)
        return name

    def name_of(self, x, base: str = "const") -> str:
        """IR name for a handler argument: an IR value, or a constant to register."""
        if isinstance(x, V):
            return x.name
        entry = self._params.get(id(x))
        if entry is not None and entry[0] is x:
            if entry[2] is None:
                entry[2] = self.const(x, entry[1])
            return entry[2]
        return self.const(np.asarray(x, dtype=np.float32) if np.isscalar(x) else x, base)

    def emit(self, op: Op, inputs: list, base: str, out_shapes: list[tuple], attrs=None,
             weights=None, dtype: str | None = None) -> list[V]:
        """Append one IR node; returns its outputs as V (None where out_shapes has None).
        Outputs take `dtype`, else the first IR input's dtype (Cast: its target)."""
        if dtype is None:
            dtype = (attrs or {}).get("to") if op is Op.CAST else \
                next((x.dtype for x in inputs if isinstance(x, V)), "float32")
        node_name = self.fresh(base)
        names = [self.name_of(x, f"{node_name}_in{k}") if x is not None else ""
                 for k, x in enumerate(inputs)]
        outs, out_names = [], []
        for k, shp in enumerate(out_shapes):
            if shp is None:
                outs.append(None)
                out_names.append("")
                continue
            n = self.fresh(f"{node_name}_out" if k == 0 else f"{node_name}_out{k}")
            outs.append(V(n, tuple(int(d) for d in shp), dtype))
            out_names.append(n)
        while out_names and not out_names[-1]:
            out_names.pop()
        self.nodes.append(Node(node_name, op, names, out_names, dict(attrs or {}),
                               dict(weights or {})))
        return outs

    def emit1(self, op: Op, inputs: list, base: str, out_shape: tuple, /, **attrs) -> V:
        return self.emit(op, inputs, base, [out_shape], attrs)[0]

    def input(self, name: str, shape: tuple[int, ...], dtype: str = "float32") -> V:
        v = V(self.fresh(name), tuple(int(d) for d in shape), dtype)
        self.inputs.append(Value(v.name, dtype, v.shape))
        return v

    def finish(self, results: list) -> Graph:
        """The Graph whose outputs are `results` (named output / output_k)."""
        names = ["output"] if len(results) == 1 else [f"output_{k}" for k in range(len(results))]
        outputs = []
        renamed: dict[str, str] = {}
        for want, r in zip(names, results):
            if not isinstance(r, V):        # a constant output: carry it through Identity
                r = self.emit1(Op.IDENTITY, [r], "const_output", np.shape(r))
            r = V(renamed.get(r.name, r.name), r.shape, r.dtype)
            if not self._renamable(r.name):
                r = self.emit1(Op.IDENTITY, [r], want + "_copy", r.shape)
            renamed[r.name] = want
            self._rename(r.name, want)
            outputs.append(Value(want, r.dtype, ()))
        return Graph(self.name, self.inputs, outputs, self.nodes, self.constants,
                     metadata=dict(self.metadata))

    def _renamable(self, name: str) -> bool:
        """Produced by a node (not a graph input) and not already a graph output name."""
        return any(name in n.outputs for n in self.nodes) and not name.startswith("output")

    def _rename(self, old: str, new: str) -> None:
        if old == new:
            return
        if new in self._used:
            # some value already uses the wanted name; move it out of the way first
            self._rename(new, self.fresh(new + "_renamed"))
        for n in self.nodes:
            n.inputs = [new if x == old else x for x in n.inputs]
            n.outputs = [new if x == old else x for x in n.outputs]
        self._used.add(new)


class Lowering(Emitter):
    """One lowering of an ExportedProgram: the fx node -> value map and the problems found."""

    def __init__(self, ep, name: str):
        import torch
        super().__init__(name)
        self.torch = torch
        self.ep = ep
        self.env: dict[Any, Any] = {}
        self.problems: list[str] = []
        # fx nodes a handler has already lowered as part of a pattern (fx node -> value)
        self.claimed: dict[Any, Any] = {}

    # ---- walking ---------------------------------------------------------------------------
    def _placeholder_values(self) -> dict[str, tuple[Any, str]]:
        """(tensor, state_dict key) of parameters, buffers and lifted constants by placeholder."""
        sig = self.ep.graph_signature
        out: dict[str, tuple[Any, str]] = {}
        sd, consts = self.ep.state_dict, getattr(self.ep, "constants", {})
        for src in (sig.inputs_to_parameters, sig.inputs_to_buffers,
                    getattr(sig, "inputs_to_lifted_tensor_constants", {})):
            for ph, key in src.items():
                out[ph] = (sd[key] if key in sd else consts[key], key)
        return out

    def run(self) -> Graph:
        torch = self.torch
        params = self._placeholder_values()
        user_inputs = list(self.ep.graph_signature.user_inputs)
        for node in self.ep.graph.nodes:
            if node.op == "placeholder":
                if node.name in params:
                    tensor, key = params[node.name]
                    arr = tensor.detach().cpu().numpy()
                    self.name_param(arr, key)
                    self.env[node] = arr
                elif node.name in user_inputs:
                    val = node.meta.get("val")
                    if not isinstance(val, torch.Tensor):
                        raise UnsupportedModelError(
                            f"input '{node.name}' is not a tensor ({type(val).__name__}); "
                            f"only tensor inputs can become graph inputs")
                    self.env[node] = self.input(node.name, val.shape, _np_dtype(val.dtype))
                else:
                    raise UnsupportedModelError(f"placeholder '{node.name}' is neither a user "
                                                f"input nor a parameter/buffer/constant")
            elif node.op == "call_function":
                self.env[node] = self._call(node)
            elif node.op == "output":
                return self._finish(node)
        raise UnsupportedModelError("exported program has no output node")

    def _call(self, node):
        if node in self.claimed:
            return self.claimed[node]
        args = _map(node.args, self.env)
        kwargs = _map(node.kwargs, self.env)
        flat = list(_flatten((args, kwargs)))
        key = target_name(node.target)
        fn = HANDLERS.get(key) or _inplace(key, node)
        if node.target is not operator.getitem and fn is None and \
                any(isinstance(x, (V, _Poison)) for x in flat):
            # keep walking past an unsupported op so that every one is reported
            self.problems.append(f"{key} (node '{node.name}') at {source_location(node)}")
            return POISON
        if any(x is POISON for x in flat):
            return POISON
        if node.target is operator.getitem:
            return args[0][args[1]]
        if not any(isinstance(x, V) for x in flat):
            try:
                return self._fold(node, args, kwargs)
            except Exception as e:     # whatever the op raised: report it with the others
                self.problems.append(f"{key} (node '{node.name}') at {source_location(node)}: "
                                     f"constant folding failed: {type(e).__name__}: {e}")
                return POISON
        try:
            return fn(self, node, *args, **kwargs)
        except UnsupportedModelError as e:
            self.problems.append(f"{key} (node '{node.name}') at {source_location(node)}: {e}")
            return POISON

    def _fold(self, node, args, kwargs):
        """Run a node whose inputs are all constants in PyTorch (constant folding)."""
        torch = self.torch
        t_args = _map(args, {}, to_torch=torch)
        t_kwargs = _map(kwargs, {}, to_torch=torch)
        with torch.no_grad():
            out = node.target(*t_args, **t_kwargs)
        return _map(out, {})

    def _finish(self, out_node) -> Graph:
        if self.problems:
            ops = sorted({p.split(" ", 1)[0] for p in self.problems})
            raise UnsupportedModelError(
                f"{len(self.problems)} op(s) of '{self.name}' cannot be converted "
                f"({', '.join(ops)}):\n  "
                + "\n  ".join(self.problems)
                + ("\n(aten.item reads a tensor's value as a Python number: shapes or slices "
                   "computed from it depend on the data, and edgeseq needs them at conversion)"
                   if "aten.item.default" in ops else "")
                + f"\nsupported aten ops: {', '.join(sorted(HANDLERS))}")
        results = list(_flatten(_map(out_node.args[0], self.env)))
        kinds = [str(getattr(s.kind, "name", s.kind)) for s in self.ep.graph_signature.output_specs]
        if len(kinds) == len(results):      # drop buffer mutations, keep what the user returns
            results = [r for r, k in zip(results, kinds) if k == "USER_OUTPUT"]
        return self.finish(results)


# ops that return a view of their first argument: an in-place op on such a view writes
# through to the viewed tensor, which a value-by-value lowering cannot follow
_VIEWS = ("view", "reshape", "slice", "select", "transpose", "permute", "t", "unsqueeze",
          "squeeze", "expand", "narrow", "as_strided", "unbind", "split", "chunk", "alias",
          "diagonal", "unfold", "_unsafe_view", "flatten")


def _inplace(key: str, node):
    """The handler of an in-place aten op (`aten.relu_.default`): its functional form's
    (`aten.relu.default`), with the mutated tensor rebound to the result for the nodes that
    read it afterwards. None when there is no functional handler."""
    parts = key.split(".")
    if len(parts) != 3 or not parts[1].endswith("_") or parts[1].startswith("_"):
        return None
    fn = HANDLERS.get(f"{parts[0]}.{parts[1][:-1]}.{parts[2]}")
    if fn is None:
        return None

    def run(cx, node, *args, **kwargs):
        target = node.args[0]
        src = getattr(target, "target", None)
        if src is not None and getattr(target, "op", "") == "call_function" and \
                target_name(src).split(".")[1:2] and target_name(src).split(".")[1] in _VIEWS:
            raise UnsupportedModelError(f"in-place {parts[1]} on a view ({target_name(src)}) "
                                        f"writes through to another tensor; use the "
                                        f"out-of-place form")
        out = fn(cx, node, *args, **kwargs)
        cx.env[target] = out
        return out
    return run


def _np_dtype(tdtype) -> str:
    s = str(tdtype).replace("torch.", "")
    if s in ("float32", "float64", "float16", "bfloat16"):
        return "float32"
    if s in ("int64", "int32"):
        return s
    raise UnsupportedModelError(f"input dtype {s} is not supported (float or int32/int64 only)")


def _map(x, env, to_torch=None):
    """Replace fx Nodes by env entries, recursively; tensors become numpy arrays unless
    `to_torch` (the torch module) is given, which turns numpy arrays into tensors."""
    import torch
    import torch.fx as fx
    if isinstance(x, fx.Node):
        return env[x]
    if isinstance(x, list):
        return [_map(y, env, to_torch) for y in x]
    if isinstance(x, tuple):       # plain tuple also for torch.Size and torch.return_types
        return tuple(_map(y, env, to_torch) for y in x)
    if isinstance(x, dict):
        return {k: _map(y, env, to_torch) for k, y in x.items()}
    if to_torch is not None and isinstance(x, np.ndarray):
        return to_torch.from_numpy(np.array(x))
    if to_torch is None and isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return x


def _flatten(x):
    if isinstance(x, (list, tuple)):
        for y in x:
            yield from _flatten(y)
    elif isinstance(x, dict):
        for y in x.values():
            yield from _flatten(y)
    else:
        yield x
