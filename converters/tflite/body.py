"""A small float64 interpreter of TFLite subgraphs: runs the cond and body of a WHILE loop, so
that a lifted recurrent node can be checked against the loop itself (converters/loops.py).

Quantised constants are used at their real (dequantised) values and QUANTIZE/DEQUANTIZE pass
values through, so the loop is run at float precision: the check is about structure, not
about TFLite's rounding. Ops outside `KERNELS` make the interpreter raise `BodyError`.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from edgeseq.converters.tflite import reader


class BodyError(Exception):
    """The subgraph uses an op or option this interpreter does not run."""


KERNELS: dict[str, Callable] = {}


def kernel(*names: str):
    def deco(fn):
        for n in names:
            KERNELS[n] = fn
        return fn
    return deco


_FUSED = {0: lambda v: v, 1: lambda v: np.maximum(v, 0), 2: lambda v: np.clip(v, -1, 1),
          3: lambda v: np.clip(v, 0, 6), 4: np.tanh}


def _fused(op, v):
    act = op.option("fusedActivationFunction", 0) or 0
    if act not in _FUSED:
        raise BodyError(f"fused activation {act}")
    return _FUSED[act](v)


for _name, _fn in (("ADD", np.add), ("SUB", np.subtract), ("MUL", np.multiply),
                   ("DIV", np.divide), ("MAXIMUM", np.maximum), ("MINIMUM", np.minimum),
                   ("LESS", np.less), ("LESS_EQUAL", np.less_equal), ("GREATER", np.greater),
                   ("GREATER_EQUAL", np.greater_equal), ("EQUAL", np.equal),
                   ("NOT_EQUAL", np.not_equal), ("LOGICAL_AND", np.logical_and),
                   ("LOGICAL_OR", np.logical_or), ("POW", np.power),
                   ("SQUARED_DIFFERENCE", lambda a, b: (a - b) ** 2)):
    KERNELS[_name] = (lambda f: lambda op, a, b: [_fused(op, f(a, b)) if op.name in
                                                   ("ADD", "SUB", "MUL", "DIV") else f(a, b)])(_fn)

for _name, _fn in (("LOGISTIC", lambda v: 1 / (1 + np.exp(-v))), ("TANH", np.tanh),
                   ("RELU", lambda v: np.maximum(v, 0)), ("RELU6", lambda v: np.clip(v, 0, 6)),
                   ("RELU_N1_TO_1", lambda v: np.clip(v, -1, 1)), ("NEG", np.negative),
                   ("ABS", np.abs), ("EXP", np.exp), ("SQRT", np.sqrt),
                   ("RSQRT", lambda v: 1 / np.sqrt(v)), ("LOGICAL_NOT", np.logical_not),
                   ("QUANTIZE", lambda v: v), ("DEQUANTIZE", lambda v: v),
                   ("HARD_SWISH", lambda v: v * np.clip(v + 3, 0, 6) / 6)):
    KERNELS[_name] = (lambda f: lambda op, a, *_: [f(a)])(_fn)


@kernel("FULLY_CONNECTED")
def _fc(op, x, w, b=None):
    y = x.reshape(-1, w.shape[1]) @ w.T
    if b is not None:
        y = y + b
    if op.option("keepNumDims", False):
        y = y.reshape(x.shape[:-1] + (w.shape[0],))
    return [_fused(op, y)]


@kernel("BATCH_MATMUL")
def _bmm(op, a, b):
    if op.option("adjX", False):
        a = np.swapaxes(a, -1, -2)
    if op.option("adjY", False):
        b = np.swapaxes(b, -1, -2)
    return [np.matmul(a, b)]


@kernel("RESHAPE")
def _reshape(op, x, shape=None):
    if shape is None:
        shape = np.asarray(op.option("newShape"))
    return [x.reshape([int(s) for s in np.asarray(shape).reshape(-1)])]


@kernel("SQUEEZE")
def _squeeze(op, x):
    dims = op.option("squeezeDims")
    return [np.squeeze(x, tuple(int(d) for d in dims)) if dims is not None and len(dims)
            else np.squeeze(x)]


@kernel("EXPAND_DIMS")
def _expand(op, x, axis):
    return [np.expand_dims(x, int(np.asarray(axis).reshape(-1)[0]))]


@kernel("GATHER")
def _gather(op, x, idx):
    if op.option("batchDims", 0):
        raise BodyError("GATHER batchDims")
    return [np.take(x, np.asarray(idx).astype(np.int64), axis=int(op.option("axis", 0)))]


@kernel("SPLIT")
def _split(op, axis, x):
    return list(np.split(x, int(op.option("numSplits")), axis=int(np.asarray(axis).reshape(-1)[0])))


@kernel("SPLIT_V")
def _split_v(op, x, sizes, axis):
    sizes = [int(s) for s in np.asarray(sizes).reshape(-1)]
    ax = int(np.asarray(axis).reshape(-1)[0])
    if -1 in sizes:
        sizes[sizes.index(-1)] = x.shape[ax] - (sum(sizes) + 1)
    return list(np.split(x, np.cumsum(sizes)[:-1], axis=ax))


@kernel("CONCATENATION")
def _concat(op, *xs):
    return [_fused(op, np.concatenate(xs, axis=int(op.option("axis", 0))))]


@kernel("PACK")
def _pack(op, *xs):
    return [np.stack(xs, axis=int(op.option("axis", 0)))]


@kernel("UNPACK")
def _unpack(op, x):
    ax = int(op.option("axis", 0))
    return [np.take(x, k, axis=ax) for k in range(x.shape[ax])]


@kernel("SLICE")
def _slice(op, x, begin, size):
    begin = [int(b) for b in np.asarray(begin).reshape(-1)]
    size = [int(s) for s in np.asarray(size).reshape(-1)]
    return [x[tuple(slice(b, x.shape[k] if s == -1 else b + s) for k, (b, s) in
                    enumerate(zip(begin, size)))]]


@kernel("STRIDED_SLICE")
def _strided(op, x, begin, end, strides):
    if op.option("ellipsisMask", 0) or op.option("newAxisMask", 0) or op.option("offset", False):
        raise BodyError("STRIDED_SLICE with ellipsis/new-axis/offset")
    bm, em, sm = (int(op.option(k, 0) or 0) for k in ("beginMask", "endMask", "shrinkAxisMask"))
    idx = []
    for k, (b, e, s) in enumerate(zip(*(np.asarray(v).reshape(-1) for v in (begin, end,
                                                                          strides)))):
        if sm >> k & 1:
            idx.append(int(b))
            continue
        idx.append(slice(None if bm >> k & 1 else int(b), None if em >> k & 1 else int(e),
                         int(s)))
    return [x[tuple(idx)]]


@kernel("TRANSPOSE")
def _transpose(op, x, perm):
    return [np.transpose(x, [int(p) for p in np.asarray(perm).reshape(-1)])]


@kernel("SELECT", "SELECT_V2")
def _select(op, c, a, b):
    return [np.where(c, a, b)]


@kernel("CAST")
def _cast(op, x):
    return [x]


@kernel("FILL")
def _fill(op, dims, v):
    return [np.full([int(d) for d in np.asarray(dims).reshape(-1)], v)]


@kernel("ZEROS_LIKE")
def _zeros_like(op, x):
    return [np.zeros_like(x)]


@kernel("REDUCE_ANY")
def _any(op, x, axes):
    return [np.any(x, axis=tuple(int(a) for a in np.asarray(axes).reshape(-1)),
                   keepdims=bool(op.option("keepDims", False)))]


@kernel("MEAN", "SUM")
def _reduce(op, x, axes):
    f = np.mean if op.name == "MEAN" else np.sum
    return [f(x, axis=tuple(int(a) for a in np.asarray(axes).reshape(-1)),
              keepdims=bool(op.option("keepDims", False)))]


@kernel("DYNAMIC_UPDATE_SLICE")
def _dus(op, x, upd, start):
    out = np.array(x, copy=True)
    st = [int(s) for s in np.asarray(start).reshape(-1)]
    out[tuple(slice(s, s + n) for s, n in zip(st, upd.shape))] = upd
    return [out]


class Subgraph:
    """One subgraph with its operators and constants, run on float64 values."""

    def __init__(self, loaded: reader.Loaded, index: int, ops: list):
        self.loaded = loaded
        self.sub = loaded.model.subgraphs[index]
        self.ops = ops
        self.inputs = [int(i) for i in self.sub.inputs]
        self.outputs = [int(i) for i in self.sub.outputs]
        self.consts: dict[int, np.ndarray] = {}
        for k, t in enumerate(self.sub.tensors):
            if not t.isVariable and reader.buffer_bytes(loaded, t) is not None:
                arr = reader.real_array(loaded, t)
                self.consts[k] = np.asarray(arr, np.float64) if arr.dtype.kind == "f" else arr
        for op in ops:
            if op.name not in KERNELS:
                raise BodyError(f"{op.name} (operator #{op.index} of subgraph {index})")

    def run(self, feeds: list, overrides: dict | None = None) -> dict:
        """All tensor values after running on `feeds` (in the subgraph's input order);
        `overrides` replace a tensor's computed value."""
        env = dict(self.consts)
        env.update(zip(self.inputs, feeds))
        overrides = overrides or {}
        env.update(overrides)
        for op in self.ops:
            args = [env[i] if i >= 0 else None for i in op.inputs]
            while args and args[-1] is None:
                args.pop()
            outs = KERNELS[op.name](op, *args)
            for k, v in zip(op.outputs, outs):
                env[k] = overrides.get(k, v)
        return env
