"""Free the sequence length that a fixed-length export wrote into Reshape targets.

A Keras model exported with a fixed T (tf2onnx, the TF converter) carries T as a literal in
its Reshapes: the batch-1 transposes written as Reshape [T, 1, H], the Dense merge [T*N, H]
and split [N, T, O]. For the graph as converted (static input shapes) a Reshape target with
one entry replaced by -1 ("inferred") means exactly the same; with -1 in the place of T the
graph also runs chunk by chunk, so such models stream. The pass changes nothing else.
"""
from __future__ import annotations

import math

from edgeseq.errors import EdgeseqError
from edgeseq.graph import Graph
from edgeseq.ops import Op


def free_time_literals(graph: Graph) -> Graph:
    """Replace the first literal equal to the recurrent layers' fixed length in each Reshape
    target without a -1 (input shape static) by -1; returns `graph` (changed in place)."""
    _free_scan_lengths(graph)
    rec = next(iter(graph.recurrent_nodes()), None)
    loop = next((n for n in graph.nodes if n.op is Op.LOOP and n.inputs[0] in graph.constants),
                None)
    if rec is None and loop is None:
        return graph
    try:
        graph.validate()
    except EdgeseqError:
        return graph          # the converter's own validation reports what is wrong
    if rec is not None:
        x = graph.value(rec.inputs[0]).shape
        t0 = x[1 if rec.attrs.get("batch_first") else 0]
    else:     # a general Loop's constant trip count (a scan over time: its length)
        t0 = int(graph.constants[loop.inputs[0]].reshape(-1)[0])
    if not isinstance(t0, int) or t0 <= 1:
        return graph
    changed = False
    for n in graph.nodes:
        if n.op is not Op.RESHAPE:
            continue
        shape = list(n.attrs["shape"])
        src = graph.value(n.inputs[0]).shape
        if -1 in shape or not all(isinstance(d, int) for d in src) or t0 not in shape:
            continue
        k = shape.index(t0)
        if shape[k] == 0:
            continue
        shape[k] = -1
        n.attrs["shape"] = tuple(shape)
        changed = True
    if changed:
        graph.values = {}
        graph.validate()
    return graph


def _free_scan_lengths(graph: Graph) -> None:
    """A Reshape of a general Loop's stacked per-step outputs (leading dim '<loop>:trips', the
    other dims fixed) to a literal target: the target entry that holds the trips (the elements
    before and after it are exactly those around the trips axis) becomes -1. That means the
    same wherever the literal was right, and lets a Loop that scans time stream in chunks
    (runtime/loop_stream.py)."""
    if not any(n.op is Op.LOOP for n in graph.nodes):
        return
    try:
        graph.validate()
    except EdgeseqError:
        return
    changed = False
    for n in graph.nodes:
        if n.op is not Op.RESHAPE:
            continue
        shape, src = list(n.attrs["shape"]), graph.value(n.inputs[0]).shape
        sym = [k for k, d in enumerate(src) if not isinstance(d, int)]
        if len(sym) != 1 or not str(src[sym[0]]).endswith(":trips") or \
                any(d in (-1, 0) for d in shape):
            continue
        t = sym[0]
        before, after = math.prod(src[:t]), math.prod(src[t + 1:])
        k = next((k for k in range(len(shape)) if math.prod(shape[:k]) == before
                  and math.prod(shape[k + 1:]) == after), None)
        if k is not None:
            shape[k] = -1
            n.attrs["shape"] = tuple(shape)
            changed = True
    if changed:
        graph.values = {}
        graph.validate()
