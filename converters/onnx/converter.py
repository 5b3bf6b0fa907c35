"""ONNX -> edgeseq Graph: load, pin user-fixed inputs, infer shapes, fold, map every node.

The converter never executes the model. It walks the whole graph once: Constant nodes and
nodes whose operands are all known are folded (fold.py), Shape/Size of statically shaped
values become constants, and everything else goes to the handler registered for its op type
and opset. Every problem found on the way is collected and raised as ONE
UnsupportedModelError, so a user sees the full list of what stands in the way. A damaged
file (a field missing, of the wrong kind or out of range) is the same list raised as a
ModelFormatError (a subclass): no raw Python exception leaves the converter.
"""
from __future__ import annotations

import copy
import os
import re
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx

from edgeseq import input_checks
from edgeseq.errors import (EdgeseqError, GraphError, ModelFormatError, ShapeError,
                            UnsupportedModelError)
from edgeseq.graph import Graph, Node, Value, scale_name
from edgeseq.ops import Op
from edgeseq.converters.onnx import batchperm, registry
from edgeseq.converters.onnx.context import ONNX_TO_NP, Context, Unsupported, node_label
from edgeseq.converters.onnx.fold import constant_value, try_fold
from edgeseq.converters.onnx.symbolic import try_symbolic
from edgeseq.converters.options import parse_fix, parse_shape  # noqa: F401  (re-exported)
from edgeseq.converters.reroll import reroll
from edgeseq.converters.time_literals import free_time_literals

# Importing the handler modules registers them.
from edgeseq.converters.onnx import control as _control  # noqa: F401
from edgeseq.converters.onnx import layout as _layout  # noqa: F401
from edgeseq.converters.onnx import math as _math  # noqa: F401
from edgeseq.converters.onnx import norms as _norms  # noqa: F401
from edgeseq.converters.onnx import selection as _selection  # noqa: F401
from edgeseq.converters.onnx import spatial as _spatial  # noqa: F401
from edgeseq.converters.onnx import recurrent as _recurrent  # noqa: F401
from edgeseq.converters.onnx import logic as _logic  # noqa: F401
from edgeseq.converters.onnx.general_loop import Walker


def load_model(path_or_model) -> tuple[onnx.ModelProto, str]:
    """A ModelProto with external data (`.onnx.data`) loaded, and a name for messages."""
    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model, path_or_model.graph.name or "model"
    path = Path(path_or_model)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    try:
        # load_external_data resolves `.onnx.data` files relative to the model's folder.
        model = onnx.load(str(path), load_external_data=True)
    except (Exception, RecursionError) as e:  # noqa: BLE001 - protobuf raises many types
        raise ModelFormatError(f"not a readable ONNX model ({type(e).__name__}: "
                               f"{_brief(e)})", file=str(path)) from None
    return model, path.name


def _brief(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]


@contextmanager
def _stage(label: str, field: str, node: str | None = None):
    """Turn a raw exception from one conversion stage into a ModelFormatError saying where."""
    try:
        yield
    except EdgeseqError as e:
        if e.args and label not in str(e.args[0]):
            e.args = (f"{label}: {e.args[0]}",) + e.args[1:]   # keeps type and attributes
        raise
    except (Exception, RecursionError) as e:  # noqa: BLE001 - a damaged model, whatever broke
        raise ModelFormatError(f"malformed model: {type(e).__name__}: {_brief(e)}",
                               file=label, node=node, field=field) from None


def _elem_dtype(vi: onnx.ValueInfoProto) -> str | None:
    return ONNX_TO_NP.get(vi.type.tensor_type.elem_type)


def _dims(vi: onnx.ValueInfoProto) -> tuple | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    out = []
    for k, d in enumerate(t.shape.dim):
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.dim_param:
            out.append(d.dim_param)
        else:
            out.append(f"{vi.name}:{k}")
    return tuple(out)


def _pin_inputs(model: onnx.ModelProto, fix: Mapping, shapes: Mapping) -> dict[str, np.ndarray]:
    """Apply --shape to input declarations and turn --fix inputs into initializers."""
    g = model.graph
    by_name = {vi.name: vi for vi in g.input}
    init_names = {t.name for t in g.initializer}
    for name in list(fix) + list(shapes):
        if name not in by_name or name in init_names:
            raise UnsupportedModelError(
                f"--fix/--shape '{name}' is not a graph input; inputs: "
                f"{[v.name for v in g.input if v.name not in init_names]}")
    for name, dims in shapes.items():
        vi = by_name[name]
        old = _dims(vi)
        if old is not None and len(old) != len(dims):
            raise ShapeError(f"--shape {name}: model declares rank {len(old)} {old}, got {dims}")
        if old is not None:
            for o, d in zip(old, dims):
                if isinstance(o, int) and o != d:
                    raise ShapeError(f"--shape {name}: model declares {old}, got {dims}")
        tt = vi.type.tensor_type
        tt.shape.Clear()
        for d in dims:      # a symbol (--shape x=1,T,13) stays a dynamic dim of that name
            if isinstance(d, str):
                tt.shape.dim.add().dim_param = d
            else:
                tt.shape.dim.add().dim_value = d
    fixed: dict[str, np.ndarray] = {}
    for name, val in fix.items():
        vi = by_name[name]
        dt = _elem_dtype(vi) or "float32"
        arr = np.asarray(val, dtype=dt)
        want = _dims(vi)
        if want is not None and all(isinstance(d, int) for d in want) and arr.shape != want:
            if arr.size != int(np.prod(want)):
                raise ShapeError(f"--fix {name}: model declares shape {want}, "
                                 f"got {arr.size} value(s)")
            arr = arr.reshape(want)
        fixed[name] = arr
        g.initializer.append(onnx.numpy_helper.from_array(arr, name))
    keep = [vi for vi in g.input if vi.name not in fixed]
    del g.input[:]
    g.input.extend(keep)
    return fixed


def _infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx's shape inference, in a forked child where fork exists.

    NOTE: onnx's C++ shape inference aborts the process (SIGABRT from a failed assertion:
    std::vector::operator[], std::clamp) on some malformed graphs; a child that dies just
    leaves the declared shapes. Where fork does not exist it runs in-process."""
    if not hasattr(os, "fork"):
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                  # child: infer, send, exit without cleanup
        code = 1
        try:
            os.close(r)
            with os.fdopen(w, "wb") as f:
                f.write(onnx.shape_inference.infer_shapes(model, data_prop=True)
                        .SerializeToString())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeError(f"shape inference failed (wait status {status})")
    return onnx.ModelProto.FromString(data)


def _infer(model: onnx.ModelProto) -> dict[str, tuple[str | None, tuple | None]]:
    try:
        inferred = _infer_shapes(model)
    except Exception:  # noqa: BLE001 - fall back to the declared shapes only
        inferred = model
    out: dict[str, tuple[str | None, tuple | None]] = {}

    def collect(g: onnx.GraphProto) -> None:
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            out.setdefault(vi.name, (_elem_dtype(vi), _dims(vi)))
        for n in g.node:          # If branches and other sub-graphs
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    collect(a.g)

    collect(inferred.graph)
    return out


def _inline_if(ctx: Context, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    """The nodes of the branch an If takes when its condition is a constant (None if it is
    not). Branch initializers become constants; the If's outputs alias the branch outputs."""
    cond = ctx.const(node.input[0])
    if cond is None or cond.size != 1:
        return None
    branch = next(a.g for a in node.attribute
                  if a.name == ("then_branch" if bool(np.ravel(cond)[0]) else "else_branch"))
    for t in branch.initializer:
        ctx.consts[t.name] = onnx.numpy_helper.to_array(t)
    for out, bout in zip(node.output, branch.output):
        if out:
            ctx.alias[out] = bout.name
    return list(branch.node)


def convert(path_or_model, *, fix: Mapping | None = None, shapes: Mapping | None = None,
            validate: bool = True) -> Graph:
    """Convert an ONNX model (path or ModelProto) into a validated edgeseq Graph.

    fix: input name -> value (array, number or list) baked in as a constant.
    shapes: input name -> dims, fixing dynamic dims so shape sub-graphs fold.
    """
    model, label = load_model(path_or_model)
    with _stage(label, "graph.input"):
        model = copy.deepcopy(model)
        fixed = _pin_inputs(model, dict(fix or {}), dict(shapes or {}))
    g = model.graph
    _check_references(g, label)
    with _stage(label, "opset_import"):
        opsets = {("" if o.domain == "ai.onnx" else o.domain): int(o.version)
                  for o in model.opset_import}
        opsets.setdefault("", 1)
        ctx = Context(opsets, _infer(model))
        ctx.walker = Walker(_walk, _initializers, _assemble)    # Loop bodies convert with it
    ctx.consts.update(_initializers(g, label))
    with _stage(label, "graph.node"):
        graph_inputs = [vi for vi in g.input if vi.name not in ctx.consts]
        ctx.graph_inputs = {vi.name for vi in graph_inputs}
        ctx.graph_outputs = {vi.name for vi in g.output}
        ctx.reserve(list(ctx.consts) + list(ctx.graph_inputs))
        for n in g.node:
            ctx.reserve(n.output)
            ctx.producers.update((o, n) for o in n.output if o)

    unsupported_ops, problems, malformed = _walk(ctx, g.node)
    if unsupported_ops or problems:
        raise _unsupported_error(label, unsupported_ops, problems, ctx, malformed)
    with _stage(label, "graph.output"):
        graph = _assemble(ctx, g, graph_inputs, label)
        graph.metadata = {"source_format": "onnx", "opsets": opsets,
                          "producer": f"{model.producer_name} {model.producer_version}".strip(),
                          "fixed_inputs": sorted(fixed)}
        for name, check in getattr(ctx, "input_checks", ()):   # e.g. a Keras mask's padding
            input_checks.add(graph.metadata, name, check)
    reroll(graph)                 # an unrolled cell becomes one node (converters/reroll.py)
    free_time_literals(graph)     # a fixed-length export streams (converters/time_literals.py)
    if validate:
        try:
            with _stage(label, "graph"):
                graph.validate()
        except (GraphError, ShapeError) as e:
            raise type(e)(f"{label}: converted graph is inconsistent: {e}") from None
    return graph


def _check_references(g: onnx.GraphProto, label: str) -> None:
    """Every node input names a graph input, an initializer or some node's output (nodes
    out of order are tolerated, as onnxruntime does).

    NOTE: onnx's C++ shape inference aborts the whole process (an assertion, not an
    exception) on some dangling references, so they are refused before it runs."""
    known = {vi.name for vi in g.input} | {t.name for t in g.initializer} | {""}
    known.update(o for node in g.node for o in node.output)
    bad = [(node.name or f"{node.op_type}_{k}", f"input[{j}]", name)
           for k, node in enumerate(g.node) for j, name in enumerate(node.input)
           if name not in known]
    bad += [("graph", f"output[{j}]", vi.name) for j, vi in enumerate(g.output)
            if vi.name not in known]
    if bad:
        lines = "\n".join(f"  - {n}: field '{f}' names '{v}', which no node, input or "
                          f"initializer provides" for n, f, v in bad[:20])
        err = ModelFormatError(f"{len(bad)} dangling reference(s):\n{lines}", file=label)
        err.node, err.field = bad[0][0], bad[0][1]
        raise err


def _initializers(g: onnx.GraphProto, label: str) -> dict[str, np.ndarray]:
    """Every initializer as an array; all unreadable ones are reported in one error."""
    out, bad, names = {}, [], []
    for t in g.initializer:
        try:
            arr = onnx.numpy_helper.to_array(t)
            if arr.dtype.kind not in "biuf":
                raise ValueError(f"element type {arr.dtype} is not numeric")
            out[t.name] = arr
        except (Exception, RecursionError) as e:  # noqa: BLE001 - damaged tensor data
            bad.append(f"  - initializer '{t.name}': {type(e).__name__}: {_brief(e)}")
            names.append(t.name)
    if bad:
        err = ModelFormatError(f"{len(bad)} unreadable initializer(s):\n" + "\n".join(bad),
                               file=label)
        err.node, err.field = names[0], "initializer"
        raise err
    return out


def _walk(ctx: Context, nodes) -> tuple[dict[str, list[str]], list[str], list[tuple]]:
    """Fold or map every node; returns (op key -> node names without a handler, problems,
    (node, field) of the problems that are damage rather than something unsupported)."""
    problems: list[str] = []
    malformed: list[tuple[str, str | None]] = []
    unsupported_ops: dict[str, list[str]] = {}
    names_seen: set[str] = set()
    # A work list, not a plain loop: an If whose condition folds splices its taken branch in.
    pending = deque(nodes)
    k = -1
    while pending:
        node = pending.popleft()
        k += 1
        base = node.name or f"{node.op_type}_{k}"
        while base in names_seen:
            base += "_"
        names_seen.add(base)
        ctx.node, ctx.node_name = node, base
        try:
            if _fold(ctx, node) or try_symbolic(ctx, node):
                continue
            standard = node.domain in ("", "ai.onnx")
            if node.op_type == "If" and standard:
                branch = _inline_if(ctx, node)
                if branch is not None:
                    ctx.reserve(o for n in branch for o in n.output)
                    ctx.producers.update((o, n) for n in branch for o in n.output if o)
                    pending.extendleft(reversed(branch))
                    continue
            domain = "" if standard else node.domain
            opset = ctx.opsets.get(domain, 1)
            h = registry.lookup(node.op_type, domain, opset)
            if h is None:
                key = f"{domain + '::' if domain else ''}{node.op_type} (opset {opset})"
                unsupported_ops.setdefault(key, []).append(node.name or base)
                continue
            n_before = len(ctx.nodes)
            h.fn(ctx, node)
            batchperm.propagate(ctx, node, ctx.nodes[n_before:])
        except Unsupported as e:
            problems.append(f"node {node_label(node)}: {e}")
        except ModelFormatError as e:
            problems.append(f"node {node_label(node)}: {e}")
            malformed.append((node.name or base, e.field))
        except EdgeseqError:
            raise
        except (Exception, RecursionError) as e:  # noqa: BLE001 - a damaged node or attribute
            problems.append(f"node {node_label(node)}: malformed (or not understood): "
                            f"{type(e).__name__}: {_brief(e)}")
            malformed.append((node.name or base, None))
    return unsupported_ops, problems, malformed


def _fold(ctx: Context, node: onnx.NodeProto) -> bool:
    """Constant-fold `node` if its value is known at conversion time."""
    if node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type == "Constant":
        ctx.consts[node.output[0]] = constant_value(node)
        return True
    ins = [ctx.const(n) if n else None for n in node.input]
    if all(v is not None for n, v in zip(node.input, ins) if n):
        res = try_fold(node, ins, ctx.opsets, ctx.fold_errors)
        if res is not None:
            ctx.consts.update((name, arr) for name, arr in zip(node.output, res) if name)
            return True
    if node.op_type in ("Shape", "Size"):
        # only the input's (static) shape matters, not its values
        shp = ctx.shape(node.input[0])
        if shp is not None and all(isinstance(d, int) for d in shp):
            res = try_fold(node, [np.zeros(shp, dtype=np.float32)], ctx.opsets)
            if res is not None:
                ctx.consts[node.output[0]] = res[0]
                return True
    return False


def _unsupported_error(label: str, unsupported_ops: dict, problems: list[str],
                       ctx: Context, malformed: list[tuple] = ()) -> UnsupportedModelError:
    # the first line names the ops, so a one-line summary (CLI, logs) says what stands in the way
    ops = [k.split(" (opset")[0] for k in unsupported_ops]
    ops += sorted({m.group(1) for p in problems
                   for m in [re.match(r"node .*? \(([^()]+)\): ", p)] if m} - set(ops))
    # a malformed node comes first: nodes downstream of it (shapes it left unknown) fail too
    bad = "".join(f"node '{n}' is malformed" + (f" (field '{f}')" if f else "") + "; "
                  for n, f in malformed[:1])
    lines = [f"{label}: {bad}cannot convert {len(unsupported_ops)} unsupported op type(s) and "
             f"{len(problems)} node problem(s) ({', '.join(ops)}):"]
    for key, nodes in unsupported_ops.items():
        shown = ", ".join(f"'{n}'" for n in nodes[:8]) + (" ..." if len(nodes) > 8 else "")
        lines.append(f"  - op {key}: no handler; nodes {shown}")
    lines += [f"  - {p}" for p in problems]
    lines.append("  supported ONNX ops: " + ", ".join(registry.supported()))
    lines.append("  (any op whose operands are all constants is folded, whatever its type)")
    if malformed:
        err = ModelFormatError("\n".join(lines), file=label)
        err.node, err.field = malformed[0]
    else:
        err = UnsupportedModelError("\n".join(lines))
    # Graph inputs that would have to be fixed (--fix) for conversion to go through.
    err.needs_fix = sorted({n for n in ctx.wanted_const if n in ctx.graph_inputs})
    return err


def _assemble(ctx: Context, g: onnx.GraphProto, graph_inputs, label: str) -> Graph:
    """The edgeseq Graph (not yet validated) from the emitted nodes."""
    inputs = []
    for vi in graph_inputs:
        dt = _elem_dtype(vi)
        if dt is None:
            raise UnsupportedModelError(f"{label}: graph input '{vi.name}' has an unsupported "
                                        f"element type {vi.type.tensor_type.elem_type}")
        shp = _dims(vi)
        inputs.append(Value(vi.name, dt, shp if shp is not None else ()))
    outputs = []
    for vi in g.output:
        src = ctx.resolve(vi.name)
        if src in ctx.symbolic:
            raise UnsupportedModelError(f"{label}: graph output '{vi.name}' is computed from "
                                        f"dynamic dims only; fix them with --shape")
        if vi.name in ctx.batch_perm:
            raise UnsupportedModelError(f"{label}: graph output '{vi.name}' is in the order of "
                                        f"pack_padded_sequence's sort and is never un-sorted")
        if src != vi.name:
            # an output that is another value under a new name (Identity, Dropout ...)
            ctx.nodes.append(Node(ctx.fresh(f"{vi.name}/identity"), Op.IDENTITY, [src], [vi.name]))
        elif src in ctx.consts:
            # an output that folded to a constant still needs a producing node
            ctx.nodes.append(Node(ctx.fresh(f"{vi.name}/identity"), Op.IDENTITY,
                                  [ctx.add_const(vi.name + "/value", ctx.consts[src])], [vi.name]))
        shp = _dims(vi)
        outputs.append(Value(vi.name, _elem_dtype(vi) or "float32", shp or ()))
    # Only constants some node still reads go into the graph (handlers may have replaced one,
    # e.g. re-laid-out recurrent weights or a 0-d operand made 1-d).
    referenced = {n for node in ctx.nodes for n in list(node.inputs) + list(node.weights.values())}
    referenced |= {scale_name(n) for n in referenced}
    constants = {k: v for k, v in ctx.consts.items() if k in referenced}
    return Graph(g.name or Path(label).stem, inputs, outputs, ctx.nodes, constants)
