"""Make the sequence length (and optionally the batch size) of a converted graph symbolic.

torch.export (2.13) specialises the sequence length of aten.lstm/gru/rnn to the example's
value, so a program can only be exported with static shapes. We export twice, with T and
T + 1 steps, lower both, and compare: the node structure must be identical, and every attribute
that differs must depend on T in a way the IR can express symbolically (a Reshape dim becomes
0 = "copy" or -1 = "infer"; a Slice bound becomes relative to the end). Anything else is refused
with an error naming the node. The batch size ("N") works the same way with a trace one
sequence wider.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeseq.errors import UnsupportedModelError
from edgeseq.graph import Graph, Value
from edgeseq.ops import Op
from edgeseq.converters.torch._lowering import BIG


@dataclass
class Variant:
    """A second trace in which one kind of dim (sequence length or batch) grew by one."""
    graph: Graph
    axes: dict[str, int]          # input name -> axis that grew
    symbol: str                   # "T" or "N"
    what: str                     # "sequence length" / "batch size", for messages
    flag: str                     # the option that turns this off, for messages


def generalize(ga: Graph, variants: list[Variant]) -> Graph:
    """The graph `ga` with the grown input axes symbolic, checked against each variant."""
    ga.validate()
    for var in variants:
        _same_structure(ga, var)
    g = ga.copy()
    for k, (na, node) in enumerate(zip(ga.nodes, g.nodes)):
        for key, va in na.attrs.items():
            differ = [(var, var.graph.nodes[k]) for var in variants
                      if var.graph.nodes[k].attrs[key] != va]
            if not differ:
                continue
            fix = _FIXES.get((na.op, key))
            if fix is None:
                var, nb = differ[0]
                raise UnsupportedModelError(
                    f"node '{na.name}' ({na.op.value}): attribute '{key}' depends on the "
                    f"{var.what} ({va} vs {nb.attrs[key]}); convert with {var.flag}=False")
            node.attrs[key] = fix(ga, na, differ, key)
    for v in g.inputs:
        shape = list(v.shape)
        for var in variants:
            if v.name in var.axes:
                shape[var.axes[v.name]] = var.symbol
        v.shape = tuple(shape)
    g.outputs = [Value(v.name, v.dtype, ()) for v in g.outputs]
    g.values = {}
    _generalize_input_checks(g, ga, variants)
    g.validate()
    _check_fixed_reshapes(g, variants)
    return g


def _generalize_input_checks(g: Graph, ga: Graph, variants: list[Variant]) -> None:
    """A check that names a traced size ("longest_is:7" against 8 in the longer trace) names
    the symbol instead; anything else that differs between the traces is refused."""
    from edgeseq.input_checks import KEY
    listed = lambda c: [c] if isinstance(c, str) else list(c or [])
    table = {k: listed(v) for k, v in (ga.metadata.get(KEY) or {}).items()}
    for var in variants:
        other = {k: listed(v) for k, v in (var.graph.metadata.get(KEY) or {}).items()}
        if set(other) != set(table) or any(len(other[k]) != len(v) for k, v in table.items()):
            raise UnsupportedModelError(f"the input checks change with the {var.what}; "
                                        f"convert with {var.flag}=False")
        for name, checks in table.items():
            for j, (a, b) in enumerate(zip(checks, other[name])):
                if a == b:
                    continue
                (ka, _, va), (kb, _, vb) = a.partition(":"), b.partition(":")
                if ka != kb or not (va.isdigit() and vb.isdigit()) or int(vb) != int(va) + 1:
                    raise UnsupportedModelError(f"input check '{a}' of '{name}' depends on the "
                                                f"{var.what}; convert with {var.flag}=False")
                checks[j] = f"{ka}:{var.symbol}"
    if table:
        g.metadata[KEY] = {k: v[0] if len(v) == 1 else v for k, v in table.items()}


def _check_fixed_reshapes(g: Graph, variants: list[Variant]) -> None:
    """A Reshape to fixed sizes of a value whose size depends on a symbol is right for one
    length only: the two traces agreed by chance (e.g. a stride-2 pooling maps T and T + 1 to
    the same length). Refused, naming the node, instead of failing at run time."""
    # symbols that grow with the traced dims: the variants' own, and the lengths windowed ops
    # (Conv, MaxPool) derive from them (a Slice's fresh symbol may well be a fixed size)
    windowed = {n.name for n in g.nodes if n.op in (Op.CONV1D, Op.CONV2D, Op.MAX_POOL)}
    grows = lambda d: isinstance(d, str) and (d in {v.symbol for v in variants}
                                               or d.rsplit(":", 1)[0] in windowed)
    for n in g.nodes:
        if n.op is not Op.RESHAPE or any(d in (0, -1) for d in n.attrs["shape"]):
            continue
        src = g.value(n.inputs[0]).shape
        if any(grows(d) for d in src):
            var = variants[0]
            raise UnsupportedModelError(
                f"node '{n.name}' (Reshape): reshapes a value of shape {tuple(src)} to the fixed "
                f"shape {tuple(n.attrs['shape'])}, which holds for one {var.what} only (the "
                f"traces at two {var.what}s agreed by chance, e.g. after a stride-2 pooling); "
                f"convert with {var.flag}=False")


def _same_structure(ga: Graph, var: Variant) -> None:
    gb = var.graph.validate()
    if len(ga.nodes) != len(gb.nodes):
        raise UnsupportedModelError(
            f"the exported graph changes with the {var.what} ({len(ga.nodes)} vs "
            f"{len(gb.nodes)} nodes); convert with {var.flag}=False")
    for name, a in ga.constants.items():
        b = gb.constants.get(name)
        if b is None or a.shape != b.shape or not np.array_equal(a, b):
            raise UnsupportedModelError(
                f"constant '{name}' depends on the {var.what} (shape {a.shape} vs "
                f"{None if b is None else b.shape}); convert with {var.flag}=False")
    for na, nb in zip(ga.nodes, gb.nodes):
        if (na.op, na.inputs, na.outputs) != (nb.op, nb.inputs, nb.outputs):
            raise UnsupportedModelError(
                f"node '{na.name}' ({na.op.value}) differs between {var.what}s; "
                f"convert with {var.flag}=False")


def _in_shape(g: Graph, node) -> tuple:
    return g.value(node.inputs[0]).shape


def _fix_reshape(ga, na, differ, key):
    sa, ia = list(na.attrs["shape"]), _in_shape(ga, na)
    zero: dict[int, bool] = {}
    for var, nb in differ:
        sb, ib = list(nb.attrs["shape"]), _in_shape(var.graph, nb)
        for k, (u, w) in enumerate(zip(sa, sb)):
            if u != w:
                # copy (0) when the dim sits at the same position with the input's size
                ok = k < len(ia) and ia[k] == u and ib[k] == w
                zero[k] = zero.get(k, True) and ok
    out = list(sa)
    left = [k for k, ok in zero.items() if not ok]
    for k, ok in zero.items():
        if ok:
            out[k] = 0
    if len(left) == 1 and -1 not in out:
        out[left[0]] = -1
    elif left:
        raise UnsupportedModelError(
            f"node '{na.name}' (Reshape): target shape {sa} has {len(left)} dims that depend "
            f"on the {' and '.join(v.what for v, _ in differ)} and cannot be inferred; convert "
            f"with {' or '.join(v.flag + '=False' for v, _ in differ)}")
    return tuple(out)


def _fix_slice_bound(ga, na, differ, key):
    ia = _in_shape(ga, na)
    out = list(na.attrs[key])
    for var, nb in differ:
        ib = _in_shape(var.graph, nb)
        for j, (u, w, ax) in enumerate(zip(na.attrs[key], nb.attrs[key], na.attrs["axes"])):
            if u == w:
                continue
            da, db = ia[ax], ib[ax]
            if u >= da and w >= db:
                new = BIG
            elif u - da == w - db:
                new = u - da      # a fixed distance from the end
            else:
                raise UnsupportedModelError(
                    f"node '{na.name}' (Slice): {key} {u} vs {w} for sizes {da} vs {db} is not "
                    f"a fixed offset from the end; convert with {var.flag}=False")
            if out[j] != u and out[j] != new:
                raise UnsupportedModelError(f"node '{na.name}' (Slice): {key} depends on "
                                            f"more than one symbolic dim")
            out[j] = new
    return tuple(out)


_FIXES = {(Op.RESHAPE, "shape"): _fix_reshape,
          (Op.SLICE, "starts"): _fix_slice_bound,
          (Op.SLICE, "ends"): _fix_slice_bound}
