"""Make the sequence length of a converted graph symbolic ("T").

torch.export (2.13) specialises the sequence length of aten.lstm/gru/rnn to the example's
value, so a program can only be exported with static shapes. We export twice, with T and
T + 1 steps, lower both, and compare: the node structure must be identical, and every attribute
that differs must depend on T in a way the IR can express symbolically (a Reshape dim becomes
0 = "copy" or -1 = "infer"; a Slice bound becomes relative to the end). Anything else is refused
with an error naming the node.
"""
from __future__ import annotations

from edgeseq.errors import UnsupportedModelError
from edgeseq.graph import Graph, Value
from edgeseq.ops import Op
from edgeseq.converters.torch._lowering import BIG

import numpy as np


def generalize_time(ga: Graph, gb: Graph, time_axes: dict[str, int]) -> Graph:
    """The graph `ga` with the time axes of its inputs symbolic, checked against `gb`."""
    ga.validate()
    gb.validate()
    if len(ga.nodes) != len(gb.nodes):
        raise UnsupportedModelError(
            f"the exported graph changes with the sequence length ({len(ga.nodes)} vs "
            f"{len(gb.nodes)} nodes); convert with dynamic_time=False")
    for name, a in ga.constants.items():
        b = gb.constants.get(name)
        if b is None or a.shape != b.shape or not np.array_equal(a, b):
            raise UnsupportedModelError(
                f"constant '{name}' depends on the sequence length (shape {a.shape} vs "
                f"{None if b is None else b.shape}); convert with dynamic_time=False")
    g = ga.copy()
    for na, nb, node in zip(ga.nodes, gb.nodes, g.nodes):
        if (na.op, na.inputs, na.outputs) != (nb.op, nb.inputs, nb.outputs):
            raise UnsupportedModelError(
                f"node '{na.name}' ({na.op.value}) differs between sequence lengths; "
                f"convert with dynamic_time=False")
        for key, va in na.attrs.items():
            vb = nb.attrs[key]
            if va == vb:
                continue
            fix = _FIXES.get((na.op, key))
            if fix is None:
                raise UnsupportedModelError(
                    f"node '{na.name}' ({na.op.value}): attribute '{key}' depends on the "
                    f"sequence length ({va} vs {vb}); convert with dynamic_time=False")
            node.attrs[key] = fix(ga, gb, na, nb, key)
    for v in g.inputs:
        if v.name in time_axes:
            shape = list(v.shape)
            shape[time_axes[v.name]] = "T"
            v.shape = tuple(shape)
    g.outputs = [Value(v.name, v.dtype, ()) for v in g.outputs]
    g.values = {}
    return g.validate()


def _in_shape(g: Graph, node) -> tuple:
    return g.value(node.inputs[0]).shape


def _fix_reshape(ga, gb, na, nb, key):
    sa, sb = list(na.attrs["shape"]), list(nb.attrs["shape"])
    ia, ib = _in_shape(ga, na), _in_shape(gb, nb)
    out = list(sa)
    left = []
    for k, (u, w) in enumerate(zip(sa, sb)):
        if u == w:
            continue
        if k < len(ia) and ia[k] == u and ib[k] == w:
            out[k] = 0              # same position, same size as the input: copy it
        else:
            left.append(k)
    if len(left) == 1 and -1 not in out:
        out[left[0]] = -1
    elif left:
        raise UnsupportedModelError(
            f"node '{na.name}' (Reshape): target shape {sa} has {len(left)} dims that depend "
            f"on the sequence length and cannot be inferred; convert with dynamic_time=False")
    return tuple(out)


def _fix_slice_bound(ga, gb, na, nb, key):
    ia, ib = _in_shape(ga, na), _in_shape(gb, nb)
    out = []
    for u, w, ax in zip(na.attrs[key], nb.attrs[key], na.attrs["axes"]):
        da, db = ia[ax], ib[ax]
        if u == w:
            out.append(u)
        elif u >= da and w >= db:
            out.append(BIG)
        elif u - da == w - db:
            out.append(u - da)    # a fixed distance from the end
        else:
            raise UnsupportedModelError(
                f"node '{na.name}' (Slice): {key} {u} vs {w} for lengths {da} vs {db} is not a "
                f"fixed offset from the end; convert with dynamic_time=False")
    return tuple(out)


_FIXES = {(Op.RESHAPE, "shape"): _fix_reshape,
          (Op.SLICE, "starts"): _fix_slice_bound,
          (Op.SLICE, "ends"): _fix_slice_bound}
