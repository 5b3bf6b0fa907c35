"""The NumPy reference interpreter: the meaning of every edgeseq op, in float64.

Slow and obvious on purpose (the formulas of docs/design.md, the IR; ONNX semantics for glue ops). Every fast
kernel, converter and quant pass is checked against `run`. One small function per op,
registered in `_OPS` by op; recurrent ops share one masked time loop (`_run_direction`).
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Callable

import numpy as np

from edgeseq import input_checks
from edgeseq.errors import GraphError, InputError
from edgeseq.graph import Graph, Node
from edgeseq.ops import Op, conv_lstm_geometry, num_directions
from edgeseq.selection import COMPARE, arg_extremum
from edgeseq.windows import max_pool, sliding_windows

F64 = np.float64
_OPS: dict[Op, Callable] = {}


def implements(*ops: Op):
    """Register `fn(graph, node, ins) -> list[np.ndarray]` as the meaning of `ops`."""
    def deco(fn):
        for op in ops:
            if op in _OPS:
                raise AssertionError(f"duplicate reference implementation for {op}")
            _OPS[op] = fn
        return fn
    return deco


# ---- running a graph --------------------------------------------------------------------------
def run(graph: Graph, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run `graph` on `inputs` in float64; returns every graph output by name."""
    if not graph.values and graph.nodes:
        graph.validate()
    # NOTE: the per-step products are small GEMMs; multi-threaded OpenBLAS makes them 10-20x
    # slower on a busy 2-core machine (measured: bidirectional LSTMP H=256, T=200, N=4 took
    # 3.9-6.2 s with default threads, 0.34 s with one), so the oracle runs BLAS on one thread.
    with _one_blas_thread():
        return _run(graph, inputs)


def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:       # optional (test extra): only speed depends on it
        return nullcontext()
    return threadpool_limits(1, user_api="blas")


def _run(graph: Graph, inputs: dict) -> dict[str, np.ndarray]:
    env: dict[str, np.ndarray] = {}
    for name, c in graph.constants.items():
        env[name] = _to_compute(dequantize(c, graph.constant_scale(name)))
    env.update(_check_inputs(graph, inputs))
    return _run_nodes(graph, env)


def _run_nodes(graph: Graph, env: dict) -> dict[str, np.ndarray]:
    for node in graph.nodes:
        fn = _OPS.get(node.op)
        if fn is None:
            raise GraphError(f"node '{node.name}': no reference implementation for op "
                             f"{node.op.value}")
        outs = fn(graph, node, [env[n] if n else None for n in node.inputs])
        for name, v in zip(node.outputs, outs):
            if name:
                env[name] = v
    return {v.name: env[v.name] for v in graph.outputs}


def _check_inputs(graph: Graph, inputs: dict) -> dict[str, np.ndarray]:
    """Every graph input given, with the declared rank and fixed dims; symbols bound consistently."""
    declared = {v.name for v in graph.inputs}
    unknown = sorted(set(inputs) - declared)
    if unknown:
        raise InputError(f"unknown input(s) {unknown}; graph '{graph.name}' takes {sorted(declared)}")
    out: dict[str, np.ndarray] = {}
    symbols: dict[str, tuple[int, str]] = {}
    for v in graph.inputs:
        if v.name not in inputs:
            raise InputError(f"input '{v.name}' of graph '{graph.name}' is missing: "
                             f"expected {v.describe()}")
        arr = np.asarray(inputs[v.name])
        want = f"expected {v.describe()}, got {tuple(arr.shape)} {arr.dtype}"
        if arr.ndim != len(v.shape):
            raise InputError(f"input '{v.name}': rank {arr.ndim} but {want}")
        for k, (d, got) in enumerate(zip(v.shape, arr.shape)):
            if isinstance(d, int) and d != got:
                raise InputError(f"input '{v.name}': dim {k} is {got} but {want}")
            if isinstance(d, str):
                seen = symbols.setdefault(d, (got, v.name))
                if seen[0] != got:
                    raise InputError(f"input '{v.name}': dim {k} ('{d}') is {got} but input "
                                     f"'{seen[1]}' has '{d}' = {seen[0]}")
        is_float = v.dtype.startswith("float")
        if is_float != (arr.dtype.kind == "f"):
            raise InputError(f"input '{v.name}': dtype {arr.dtype} but {want}")
        out[v.name] = _to_compute(arr)
    input_checks.check(graph, out)
    return out


def dequantize(w: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """float64 view of a stored weight: int8 times its per-row scale, float16/32 upcast."""
    if w.dtype == np.int8 and scale is not None:
        return w.astype(F64) * np.asarray(scale, F64)[..., None]
    return w.astype(F64) if w.dtype.kind == "f" else w


# ---- int8 activations: the exact integer semantics of the int8 product kernels -----------
# Graph metadata INT8_ACTIVATIONS = "int8" (set by the int8 pass) makes every int8 matrix of
# the slots below multiply int8-quantised activations; the runtime's integer kernels
# (runtime/kernels/s8dot.py) produce exactly these float32 bits per product. Without it
# ("int16", the default of older artifacts) the products are the dequantised float64 ones.
INT8_ACTIVATIONS = "int8_activations"
# (w_h_u, w_h_v: a factored W_h, multiplied as U (V h) with V h quantised again; both or none)
INT8_ACTIVATION_SLOTS = {Op.LSTM: ("w_x", "w_h", "w_h_u", "w_h_v", "w_proj"),
                         Op.GRU: ("w_x", "w_h", "w_h_u", "w_h_v"),
                         Op.RNN: ("w_x", "w_h", "w_h_u", "w_h_v")}


# "int8_asymmetric": TFLite's hybrid kernels with asymmetric_quantize_inputs (a zero point
# per vector, `quantize_activations8_asymmetric`), for the same slots
INT8_ASYMMETRIC = "int8_asymmetric"
# "int7": symmetric with |q| <= 63 (`quantize_activations8(v, INT7_MAX)`): on AVX2, u = q + 64
# and w·u pairs never saturate vpmaddubsw, so the kernels are exact at its 3 ops per 32 bytes
INT7 = "int7"
INT7_MAX = 63
INT8_MODES = ("int8", INT8_ASYMMETRIC, INT7)


def int8_activation_slots(graph: Graph, node: Node) -> tuple[str, ...]:
    """The weight slots of `node` whose products use int8 activations."""
    if graph.metadata.get(INT8_ACTIVATIONS) not in INT8_MODES:
        return ()
    slots = tuple(s for s in INT8_ACTIVATION_SLOTS.get(node.op, ())
                  if s in node.weights and graph.constants[node.weights[s]].dtype == np.int8)
    if ("w_h_u" in slots) != ("w_h_v" in slots):
        slots = tuple(s for s in slots if s not in ("w_h_u", "w_h_v"))
    return slots


def quantize_activations8(v: np.ndarray, qmax: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """(q int64 [..., K], step float32 [..., 1]) of each vector along the last axis, in
    float32 as the kernels compute it: step = max|v| / qmax (1 for a zero vector),
    q = clip(rint(v · (1 / step)), ±qmax), half to even (qmax 127: "int8", 63: "int7")."""
    v = np.asarray(v, np.float32)
    mx = np.max(np.abs(v), axis=-1, keepdims=True)
    step = np.where(mx > 0, mx / np.float32(qmax), np.float32(1)).astype(np.float32)
    inv = (np.float32(1) / step).astype(np.float32)
    q = np.clip(np.rint((v * inv).astype(np.float32)), -qmax, qmax)
    return q.astype(np.int64), step


def int8_product(v: np.ndarray, q_w: np.ndarray, scale: np.ndarray,
                 qmax: int = 127) -> np.ndarray:
    """W v per vector with int8 activations: float32(float32(Σ_k q_w[j, k]·q[k]) ·
    scale[j]) · step, the integer sum exact (int64); float64 result of float32 values.
    qmax: the activations' largest |q| (`quantize_activations8`)."""
    q, step = quantize_activations8(v, qmax)
    total = np.matmul(q, q_w.astype(np.int64).T)
    y = (total.astype(np.float32) * np.asarray(scale, np.float32)).astype(np.float32)
    return (y * step).astype(np.float32).astype(F64)


def delta_absorb8(v: np.ndarray, vhat: np.ndarray, theta: float, q_w: np.ndarray,
                  mem: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """One delta step of one vector against an int8 W [R, K] with int8 activations (docs/
    quant.md, "Delta kernels with int8 activations"), float32 as the kernels compute it:
    d = v - v̂; kept K = {k: |d_k| > θ}; (q, s) = `quantize_activations8` of the kept deltas
    as one vector (zeros elsewhere); columns with q_k = 0 leave K; v̂_k += float32(q_k·s);
    mem_j += float32(float32(Σ_{k∈K} q_w[j, k]·q_k) · s), the sum exact. mem holds W v̂ in
    units of W's row scales (read as scale ⊙ mem). Returns (v̂, mem, |K|), new arrays."""
    v, vhat = np.asarray(v, np.float32), np.array(vhat, np.float32)
    mem = np.array(mem, np.float32)
    d = (v - vhat).astype(np.float32)
    keep = np.abs(d) > np.float32(theta)
    if not keep.any():
        return vhat, mem, 0
    q, step = quantize_activations8(np.where(keep, d, np.float32(0)))
    keep &= q != 0
    s = step[0]
    vhat[keep] = (vhat[keep] + (q[keep].astype(np.float32) * s).astype(np.float32))
    total = q_w[:, keep].astype(np.int64) @ q[keep]
    mem = (mem + (total.astype(np.float32) * s).astype(np.float32)).astype(np.float32)
    return vhat, mem, int(keep.sum())


def _round_away(x: np.ndarray) -> np.ndarray:
    """Round half away from zero (C's round / std::round, TFLite's TfLiteRound)."""
    t = np.trunc(x)                 # x - t is exact: no rounding before the comparison
    return np.where(np.abs(x - t) >= 0.5, t + np.sign(x), t)


def quantize_activations8_asymmetric(v: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                              np.ndarray]:
    """(q int64 [..., K], step float32 [..., 1], zero point int64 [..., 1]) of each vector
    along the last axis, as TFLite's AsymmetricQuantizeFloats computes them (its hybrid
    kernels with asymmetric_quantize_inputs; tensor_utils): rmin = min(0, min v),
    rmax = max(0, max v) in float32; scale = float32(rmax - rmin) / 255 in float64; the zero
    point from rmin or rmax, whichever adds the smaller terms, nudged into [-128, 127] and
    rounded half away from zero; step = float32(scale), inv = float32(1 / step);
    q = clip(zp + round(float32(v · inv)), -128, 127), half away from zero. A vector with
    rmin == rmax: q = 0, step 1, zp 0."""
    v = np.asarray(v, np.float32)
    rmin = np.minimum(np.float32(0), np.min(v, axis=-1, keepdims=True))
    rmax = np.maximum(np.float32(0), np.max(v, axis=-1, keepdims=True))
    flat = rmin == rmax
    span = np.where(flat, np.float32(1), (rmax - rmin).astype(np.float32)).astype(F64)
    scale = span / 255.0
    lo, hi = rmin.astype(F64) / scale, rmax.astype(F64) / scale
    zd = np.where(128.0 + np.abs(lo) < 127.0 + np.abs(hi), -128.0 - lo, 127.0 - hi)
    zp = np.where(zd <= -128.0, -128.0, np.where(zd >= 127.0, 127.0, _round_away(zd)))
    step = scale.astype(np.float32)
    inv = (1.0 / step.astype(F64)).astype(np.float32)
    r = _round_away((v * inv).astype(np.float32))
    q = np.clip(zp + r.astype(F64), -128, 127)
    q, zp = np.where(flat, 0, q), np.where(flat, 0, zp)
    return q.astype(np.int64), np.where(flat, np.float32(1), step), zp.astype(np.int64)


def int8_product_asymmetric(v: np.ndarray, q_w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """`int8_product` with `quantize_activations8_asymmetric`: the integer sum is
    Σ_k q_w[j, k]·(q[k] − zp) = Σ_k q_w[j, k]·q[k] − zp·Σ_k q_w[j, k], exact."""
    q, step, zp = quantize_activations8_asymmetric(v)
    w = q_w.astype(np.int64)
    total = np.matmul(q, w.T) - zp * w.sum(axis=1)
    y = (total.astype(np.float32) * np.asarray(scale, np.float32)).astype(np.float32)
    return (y * step).astype(np.float32).astype(F64)


def int7_product(v: np.ndarray, q_w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """`int8_product` with 7-bit activations: step = max|v| / 63, |q| <= 63."""
    return int8_product(v, q_w, scale, INT7_MAX)


INT8_PRODUCTS = {"int8": int8_product, INT8_ASYMMETRIC: int8_product_asymmetric,
                 INT7: int7_product}


def _int8_products(graph: Graph, node: Node) -> dict:
    """slot -> [per direction: v -> W v] for the slots with int8 activations; factors U, V
    become "w_h": v -> U (V v)."""
    product = INT8_PRODUCTS.get(graph.metadata.get(INT8_ACTIVATIONS), int8_product)
    out = {s: [lambda v, w=w, sc=sc: product(v, w, sc)
               for w, sc in zip(graph.weight(node, s), graph.scale(node, s))]
           for s in int8_activation_slots(graph, node)}
    if "w_h_u" in out:
        out["w_h"] = [lambda v, u=u, w=w: u(w(v)) for u, w in zip(out.pop("w_h_u"),
                                                                   out.pop("w_h_v"))]
    return out


def _to_compute(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.astype(F64) if a.dtype.kind == "f" else a


# ---- activations (ONNX formulas; alpha/beta explicit per activation) -------------------------
def _sigmoid(x, a, b):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def _elu(x, a, b):
    with np.errstate(over="ignore"):
        return np.where(x >= 0, x, a * np.expm1(np.minimum(x, 0.0)))


ACTIVATION_FNS: dict[str, Callable] = {
    "sigmoid": _sigmoid,
    "tanh": lambda x, a, b: np.tanh(x),
    "relu": lambda x, a, b: np.maximum(x, 0.0),
    "affine": lambda x, a, b: a * x + b,
    "leaky_relu": lambda x, a, b: np.where(x >= 0, x, a * x),
    "thresholded_relu": lambda x, a, b: np.where(x > a, x, 0.0),
    "scaled_tanh": lambda x, a, b: a * np.tanh(b * x),
    "hard_sigmoid": lambda x, a, b: np.clip(a * x + b, 0.0, 1.0),
    "elu": _elu,
    "softsign": lambda x, a, b: x / (1.0 + np.abs(x)),
    "softplus": lambda x, a, b: np.logaddexp(0.0, x),
}


def _activations(node: Node, d: int, k: int) -> list[Callable]:
    """The k activation functions of direction d, with their alpha/beta bound."""
    a = node.attrs
    fns = []
    for j in range(d * k, d * k + k):
        fn, al, be = ACTIVATION_FNS[a["activations"][j]], a["activation_alpha"][j], \
            a["activation_beta"][j]
        fns.append(lambda x, fn=fn, al=al, be=be: fn(x, al, be))
    return fns


# ---- recurrent: shared plumbing --------------------------------------------------------------
def recurrent_weight(graph: Graph, node: Node, slot: str) -> np.ndarray | None:
    """float64 weight of a slot (all directions), dequantised; w_h rebuilt from its factors."""
    if slot == "w_h" and "w_h" not in node.weights and "w_h_u" in node.weights:
        return np.matmul(recurrent_weight(graph, node, "w_h_u"),
                         recurrent_weight(graph, node, "w_h_v"))
    w = graph.weight(node, slot)
    return None if w is None else dequantize(w, graph.scale(node, slot))


def _clip(x: np.ndarray, bound: float) -> np.ndarray:
    return np.clip(x, -bound, bound) if bound > 0 else x


def _reverse_index(lens: np.ndarray, t_len: int) -> np.ndarray:
    """idx[t, n]: time index that the reverse pass of batch n reads at its step t.

    Inside each sequence's valid part the order is flipped (len-1 .. 0); positions past the
    end are left in place (they are masked). The map is its own inverse."""
    t = np.arange(t_len)[:, None]
    return np.where(t < lens[None, :], lens[None, :] - 1 - t, t)


def _run_direction(step: Callable, xw: np.ndarray, states: tuple, lens: np.ndarray,
                   reverse: bool) -> tuple[np.ndarray, tuple]:
    """Run one direction over time with per-batch lengths.

    xw: [T, N, G] input contributions (W_x x_t, precomputed); states: tuple of [N, *] arrays,
    states[0] is the output state. Steps past a sequence's end leave its state unchanged and
    emit zeros. Returns y [T, N, P] and the final states."""
    t_len, n = xw.shape[:2]
    cols = np.arange(n)
    if reverse:
        idx = _reverse_index(lens, t_len)
        xw = xw[idx, cols]
    ys = np.zeros((t_len,) + states[0].shape)
    for t in range(t_len):
        active = (t < lens)[:, None]
        new = step(xw[t], states)
        states = tuple(np.where(active, s_new, s_old) for s_new, s_old in zip(new, states))
        ys[t] = np.where(active, states[0], 0.0)
    if reverse:
        ys = ys[idx, cols]
    return ys, states


def _sequence_lengths(node: Node, seq_lens, n: int, t_len: int) -> np.ndarray:
    """Per-batch lengths (all t_len when absent), checked to lie in [0, t_len]."""
    lens = np.full(n, t_len, dtype=np.int64) if seq_lens is None else np.asarray(seq_lens, np.int64)
    if lens.shape != (n,) or np.any(lens < 0) or np.any(lens > t_len):
        raise InputError(f"node '{node.name}' ({node.op.value}): sequence_lens must be {n} values "
                         f"in [0, {t_len}], got {lens.tolist()}")
    return lens


def _recurrent(graph: Graph, node: Node, ins: list, n_states: int, make_step: Callable) -> list:
    """Layout, lengths, initial states and directions common to LSTM/GRU/RNN.

    make_step(d) -> (input weight [G, I] of direction d, step fn). Returns [y, y_h, (y_c)]."""
    a = node.attrs
    ins = list(ins) + [None] * (4 - len(ins))
    x, seq_lens = ins[0], ins[1]
    bf = a["batch_first"]
    x = x.transpose(1, 0, 2) if bf else x                      # [T, N, I]
    t_len, n = x.shape[:2]
    lens = _sequence_lengths(node, seq_lens, n, t_len)
    n_dir = num_directions(a)
    h_size = a["hidden_size"]
    p_size = a.get("proj_size", 0) or h_size
    init = []
    for k, size in zip(range(2, 2 + n_states), (p_size, h_size)):
        s = ins[k]
        if s is None:
            s = np.zeros((n_dir, n, size))
        elif bf:
            s = s.transpose(1, 0, 2)
        init.append(s)
    ys, finals = [], [[] for _ in range(n_states)]
    for d in range(n_dir):
        w_x, step = make_step(d)
        reverse = a["direction"] == "reverse" or d == 1
        xw = w_x(x) if callable(w_x) else x @ w_x.T         # callable: int8 activations
        y, st = _run_direction(step, xw, tuple(s[d] for s in init), lens, reverse)
        ys.append(y)
        for k in range(n_states):
            finals[k].append(st[k])
    y = np.stack(ys, axis=1)                                    # [T, D, N, P]
    states = [np.stack(f, axis=0) for f in finals]              # [D, N, *]
    if bf:
        y = y.transpose(2, 0, 1, 3)
        states = [s.transpose(1, 0, 2) for s in states]
    return [y] + states


# ---- LSTM ------------------------------------------------------------------------------------
def _layer_norm(a: np.ndarray, gamma: np.ndarray, eps: float) -> np.ndarray:
    mean = a.mean(axis=-1, keepdims=True)
    var = ((a - mean) ** 2).mean(axis=-1, keepdims=True)
    return gamma * (a - mean) / np.sqrt(var + eps)


def lstm_step(xw: np.ndarray, h: np.ndarray, c: np.ndarray, w: dict, attrs: dict,
              acts: list[Callable]) -> tuple[np.ndarray, np.ndarray]:
    """One LSTM step for a batch. xw = W_x x_t [N, 4H]; w holds one direction's float64
    weights (w_h [4H, P], b [4H], peephole [3, H], layer_norm [4, H], w_proj, b_proj)."""
    f_act, g_act, h_act = acts
    hs = c.shape[-1]
    pre = xw + (w["w_h"](h) if callable(w["w_h"]) else h @ w["w_h"].T)
    a_i, a_f, a_c, a_o = (pre[:, k * hs:(k + 1) * hs] for k in range(4))
    p = w.get("peephole")
    if p is not None:
        a_i, a_f = a_i + p[0] * c, a_f + p[1] * c

    def gate_input(a_g, k):
        ln, b = w.get("layer_norm"), w.get("b")
        z = _layer_norm(a_g, ln[k], attrs["layer_norm_epsilon"]) if ln is not None else a_g
        z = z + b[k * hs:(k + 1) * hs] if b is not None else z
        return _clip(z, attrs["gate_clip"])

    coupled = attrs["coupled_gate"]
    f = f_act(gate_input(a_f, 1)) if coupled != "forget" else None
    i = f_act(gate_input(a_i, 0)) if coupled != "input" else 1.0 - f
    if f is None:
        f = 1.0 - i
    g = g_act(gate_input(a_c, 2))
    c_new = _clip(f * c + i * g, attrs["cell_clip"])
    # NOTE: the output peephole reads the new cell state (Android NN / TFLite), not c_{t-1}
    if p is not None:
        a_o = a_o + p[2] * c_new
    o = f_act(gate_input(a_o, 3))
    m = o * h_act(c_new)
    if "w_proj" not in w:
        return m, c_new
    h_new = w["w_proj"](m) if callable(w["w_proj"]) else m @ w["w_proj"].T
    if w.get("b_proj") is not None:
        h_new = h_new + w["b_proj"]
    return _clip(h_new, attrs["proj_clip"]), c_new


_LSTM_SLOTS = ("w_h", "b", "peephole", "layer_norm", "w_proj", "b_proj")


@implements(Op.LSTM)
def _lstm(graph, node, ins):
    full = {s: recurrent_weight(graph, node, s) for s in ("w_x",) + _LSTM_SLOTS}

    int8 = _int8_products(graph, node)

    def make_step(d):
        w = {s: full[s][d] for s in _LSTM_SLOTS if full[s] is not None}
        w.update({s: f[d] for s, f in int8.items() if s in w})
        acts = _activations(node, d, 3)
        w_x = int8["w_x"][d] if "w_x" in int8 else full["w_x"][d]
        return w_x, lambda xw, st: lstm_step(xw, st[0], st[1], w, node.attrs, acts)
    return _recurrent(graph, node, ins, 2, make_step)


# ---- GRU -------------------------------------------------------------------------------------
def gru_step(xw: np.ndarray, h: np.ndarray, w: dict, attrs: dict,
             acts: list[Callable]) -> np.ndarray:
    """One GRU step (ONNX, gates z, r, h). xw = W_x x_t + b_x [N, 3H]."""
    f_act, g_act = acts
    hs = h.shape[-1]
    w_h, b_h, clip = w["w_h"], w["b_h"], attrs["gate_clip"]

    def product(v, r0, r1):
        # W_h[r0:r1] v; a callable w_h (int8 activations) quantises v once for all its rows,
        # and rows are independent, so taking the rows after the product is exact
        return w_h(v)[:, r0:r1] if callable(w_h) else v @ w_h[r0:r1].T
    rec = product(h, 0, 2 * hs) + b_h[:2 * hs]
    z = f_act(_clip(xw[:, :hs] + rec[:, :hs], clip))
    r = f_act(_clip(xw[:, hs:2 * hs] + rec[:, hs:], clip))
    if attrs["linear_before_reset"]:
        h_rec = r * (product(h, 2 * hs, 3 * hs) + b_h[2 * hs:])
    else:
        h_rec = product(r * h, 2 * hs, 3 * hs) + b_h[2 * hs:]
    h_tilde = g_act(_clip(xw[:, 2 * hs:] + h_rec, clip))
    return (1.0 - z) * h_tilde + z * h


@implements(Op.GRU)
def _gru(graph, node, ins):
    hs3 = 3 * node.attrs["hidden_size"]
    n_dir = num_directions(node.attrs)
    w_x, w_h = recurrent_weight(graph, node, "w_x"), recurrent_weight(graph, node, "w_h")
    zeros = np.zeros((n_dir, hs3))
    b_x = recurrent_weight(graph, node, "b_x")
    b_h = recurrent_weight(graph, node, "b_h")
    b_x, b_h = (zeros if b is None else b for b in (b_x, b_h))

    int8 = _int8_products(graph, node)

    def make_step(d):
        w = {"w_h": int8["w_h"][d] if "w_h" in int8 else w_h[d], "b_h": b_h[d]}
        acts = _activations(node, d, 2)
        # the input bias rides on the precomputed input contribution: append it as a column
        w_xb = _int8_with_bias(int8["w_x"][d], b_x[d]) if "w_x" in int8 else \
            np.concatenate([w_x[d], b_x[d][:, None]], axis=1)
        return w_xb, lambda xw, st: (gru_step(xw, st[0], w, node.attrs, acts),)
    return _recurrent(graph, node, _with_ones_column(ins), 1, make_step)


def _int8_with_bias(product: Callable, bias: np.ndarray) -> Callable:
    """[x; 1] -> W_x x + b with W_x x in int8 activations: the ones column that carries the
    bias on the float path must not enter the quantised vector (it would change max|v|)."""
    return lambda xo: product(xo[..., :-1]) + bias


def _with_ones_column(ins: list) -> list:
    """Append a column of ones to x so that [W_x | b] @ [x; 1] = W_x x + b."""
    x = ins[0]
    return [np.concatenate([x, np.ones(x.shape[:-1] + (1,))], axis=-1)] + list(ins[1:])


# ---- RNN -------------------------------------------------------------------------------------
@implements(Op.RNN)
def _rnn(graph, node, ins):
    a = node.attrs
    n_dir, hs = num_directions(a), a["hidden_size"]
    w_x, w_h = recurrent_weight(graph, node, "w_x"), recurrent_weight(graph, node, "w_h")
    b = recurrent_weight(graph, node, "b")
    b = np.zeros((n_dir, hs)) if b is None else b

    int8 = _int8_products(graph, node)

    def make_step(d):
        (act,) = _activations(node, d, 1)
        w_xb = _int8_with_bias(int8["w_x"][d], b[d]) if "w_x" in int8 else \
            np.concatenate([w_x[d], b[d][:, None]], axis=1)
        rec = int8["w_h"][d] if "w_h" in int8 else (lambda v, w=w_h[d]: v @ w.T)
        return w_xb, lambda xw, st: (act(_clip(xw + rec(st[0]), a["gate_clip"])),)
    return _recurrent(graph, node, _with_ones_column(ins), 1, make_step)


# ---- ConvLSTM (1-D and 2-D) -----------------------------------------------------------------
def conv_spatial(x: np.ndarray, w: np.ndarray, begin: tuple, end: tuple,
                 dilations: tuple | None = None) -> np.ndarray:
    """Cross-correlation of x [..., C, *L] (zero-padded by begin/end per spatial axis) with
    w [O, C, *K] at stride 1 and `dilations` -> [..., O, *L']; any number of spatial axes."""
    s = w.ndim - 2
    win = sliding_windows(x, w.shape[2:], (1,) * s, dilations or (1,) * s,
                          tuple(begin) + tuple(end), 0.0)             # [..., C, *L', *K]
    pos, ker = "abcd"[:s], "pqrs"[:s]
    return np.einsum(f"...z{pos}{ker},oz{ker}->...o{pos}", win, w)


def same_pads(kernel: tuple) -> tuple[tuple, tuple]:
    """'same' padding at stride 1 for each kernel size: (K-1)//2 at the start, the rest after."""
    return tuple((k - 1) // 2 for k in kernel), tuple(k - 1 - (k - 1) // 2 for k in kernel)


def conv_lstm_step(x_conv: np.ndarray, h: np.ndarray, c: np.ndarray, w: dict,
                   acts: list[Callable]) -> tuple[np.ndarray, np.ndarray]:
    """One ConvLSTM step. x_conv = w_x * x_t [N, 4H, *L]; h, c [N, H, *L]; w holds one
    direction's w_h [4H, H, *K], b [4H], peephole [3, H, *L] (or None)."""
    f_act, g_act, h_act = acts
    kernel = w["w_h"].shape[2:]
    bias = w["b"].reshape((-1,) + (1,) * len(kernel))
    pre = x_conv + conv_spatial(h, w["w_h"], *same_pads(kernel)) + bias
    a_i, a_f, a_c, a_o = np.split(pre, 4, axis=1)
    p = w["peephole"]
    if p is not None:
        a_i, a_f = a_i + p[0] * c, a_f + p[1] * c
    c_new = f_act(a_f) * c + f_act(a_i) * g_act(a_c)
    if p is not None:
        a_o = a_o + p[2] * c_new
    return f_act(a_o) * h_act(c_new), c_new


@implements(Op.CONV_LSTM)
def _conv_lstm(graph, node, ins):
    a = node.attrs
    x, seq_lens, h0, c0 = (list(ins) + [None] * 4)[:4]
    bf = a["batch_first"]
    x = np.swapaxes(x, 0, 1) if bf else x                      # [T, N, C, *L]
    t_len, n = x.shape[:2]
    lens = _sequence_lengths(node, seq_lens, n, t_len)
    n_dir, hs = num_directions(a), a["hidden_size"]
    w = {s: recurrent_weight(graph, node, s) for s in ("w_x", "w_h", "b", "peephole")}
    begin, end, dil = conv_lstm_geometry(a, x.ndim - 3)
    ys, finals = [], []
    for d in range(n_dir):
        x_conv = conv_spatial(x, w["w_x"][d], begin, end, dil)  # [T, N, 4H, *L']
        out_sp = x_conv.shape[3:]
        wd = {"w_h": w["w_h"][d], "b": np.zeros(4 * hs) if w["b"] is None else w["b"][d],
              "peephole": None if w["peephole"] is None else w["peephole"][d]}
        acts = _activations(node, d, 3)
        state = [np.zeros((n, hs) + out_sp) if s is None else
                 (np.swapaxes(s, 0, 1) if bf else s)[d] for s in (h0, c0)]
        reverse = a["direction"] == "reverse" or d == 1
        y = np.zeros((t_len, n, hs) + out_sp)
        for s in range(t_len):
            active = s < lens                                   # rows still inside their length
            t = np.where(reverse, np.maximum(lens - 1 - s, 0), s)
            h_new, c_new = conv_lstm_step(x_conv[t, np.arange(n)], state[0], state[1], wd, acts)
            keep = active.reshape((n,) + (1,) * (1 + len(out_sp)))
            state = [np.where(keep, h_new, state[0]), np.where(keep, c_new, state[1])]
            y[t[active], np.arange(n)[active]] = state[0][active]
        ys.append(y)
        finals.append(state)
    y = np.stack(ys, axis=1)                                    # [T, D, N, H, *L']
    h_fin = np.stack([f[0] for f in finals])                    # [D, N, H, *L']
    c_fin = np.stack([f[1] for f in finals])
    if bf:
        y = np.moveaxis(y, 2, 0)
        h_fin, c_fin = np.swapaxes(h_fin, 0, 1), np.swapaxes(c_fin, 0, 1)
    return [y, h_fin, c_fin]


# ---- SRU -------------------------------------------------------------------------------------
def sru_step(feats: np.ndarray, c: np.ndarray, v: np.ndarray, b: np.ndarray, skip: bool,
             g: Callable) -> tuple[np.ndarray, np.ndarray]:
    """One SRU step for a batch. feats = [W x_t | W_f x_t | W_r x_t | x'_t] [N, 4H];
    v, b: [2, H] cell weights and biases of f and r. Returns (h_t, c_t)."""
    u, u_f, u_r, x_skip = np.split(feats, 4, axis=-1)
    f = _sigmoid(u_f + v[0] * c + b[0], None, None)
    r = _sigmoid(u_r + v[1] * c + b[1], None, None)
    c_new = f * c + (1.0 - f) * u
    h = r * g(c_new) + (1.0 - r) * x_skip if skip else r * g(c_new)
    return h, c_new


@implements(Op.SRU)
def _sru(graph, node, ins):
    a = node.attrs
    x, seq_lens, c0 = (list(ins) + [None] * 3)[:3]
    bf = a["batch_first"]
    x = x.transpose(1, 0, 2) if bf else x                      # [T, N, I]
    t_len, n = x.shape[:2]
    lens = _sequence_lengths(node, seq_lens, n, t_len)
    n_dir, hs = num_directions(a), a["hidden_size"]
    w = {s: recurrent_weight(graph, node, s)
         for s in ("w_x", "w_x_proj", "v", "b", "ln_gain", "ln_bias")}
    ln_bias = 0.0 if w["ln_bias"] is None else w["ln_bias"]
    eps = a["layer_norm_epsilon"]
    x_gemm = _layer_norm(x, w["ln_gain"], eps) + ln_bias if a["layer_norm"] == "before" else x
    if w["w_x_proj"] is not None:
        x_gemm = x_gemm @ w["w_x_proj"][0].T
    if c0 is None:
        c0 = np.zeros((n_dir, n, hs))
    elif bf:
        c0 = c0.transpose(1, 0, 2)
    ys, finals = [], []
    for d in range(n_dir):
        u = x_gemm @ w["w_x"][d].T                              # [T, N, G*H]
        x_skip = {"input": lambda: a["skip_scale"] * x[..., d * hs:(d + 1) * hs],
                  "projected": lambda: u[..., 3 * hs:],
                  "none": lambda: np.zeros(u.shape[:2] + (hs,))}[a["skip"]]()
        feats = np.concatenate([u[..., :3 * hs], x_skip], axis=-1)
        v = np.zeros((2, hs)) if w["v"] is None else w["v"][d]
        b = np.zeros((2, hs)) if w["b"] is None else w["b"][d]
        (g,) = _activations(node, d, 1)
        skip = a["skip"] != "none"
        # states (h, c): h is only the output the masked loop writes; the recurrence reads c
        y, (_, c) = _run_direction(
            lambda ft, st: sru_step(ft, st[1], v, b, skip, g), feats,
            (np.zeros((n, hs)), c0[d]), lens, a["direction"] == "reverse" or d == 1)
        ys.append(y)
        finals.append(c)
    y = np.concatenate(ys, axis=-1)                              # [T, N, D*H]
    if a["layer_norm"] == "after":
        # NOTE: also at steps past a sequence's end (zeros in, ln_bias out), as the package does
        y = _layer_norm(y, w["ln_gain"], eps) + ln_bias
    c = np.stack(finals, axis=0)                                # [D, N, H]
    if bf:
        y, c = y.transpose(1, 0, 2), c.transpose(1, 0, 2)
    return [y, c]


# ---- glue: linear ----------------------------------------------------------------------------
@implements(Op.MATMUL)
def _matmul(graph, node, ins):
    return [np.matmul(ins[0], ins[1])]


@implements(Op.GEMM)
def _gemm(graph, node, ins):
    at = node.attrs
    a = ins[0].T if at["trans_a"] else ins[0]
    b = ins[1].T if at["trans_b"] else ins[1]
    y = at["alpha"] * (a @ b)
    c = ins[2] if len(ins) > 2 else None
    return [y + at["beta"] * c if c is not None else y]


@implements(Op.CONV1D)
def _conv1d(graph, node, ins):
    at = node.attrs
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    x = np.pad(x, ((0, 0), (0, 0), tuple(at["pads"])))
    n_out, c_per_group, k = w.shape
    g = at["group"]
    out_len = (x.shape[2] - at["dilation"] * (k - 1) - 1) // at["stride"] + 1
    taps = np.arange(out_len)[:, None] * at["stride"] + np.arange(k)[None, :] * at["dilation"]
    win = x[:, :, taps]                                         # [N, C, L_out, K]
    o_per_group = n_out // g
    y = np.concatenate([
        np.einsum("nclk,ock->nol", win[:, j * c_per_group:(j + 1) * c_per_group],
                  w[j * o_per_group:(j + 1) * o_per_group]) for j in range(g)], axis=1)
    return [y + b[None, :, None] if b is not None else y]


# ---- glue: elementwise -----------------------------------------------------------------------
def _int_div(a, b):
    return np.trunc(np.true_divide(a, b)).astype(np.result_type(a, b))


_BINARY = {Op.ADD: np.add, Op.SUB: np.subtract, Op.MUL: np.multiply, Op.POW: np.power}


@implements(*_BINARY)
def _binary(graph, node, ins):
    return [_BINARY[node.op](ins[0], ins[1])]


@implements(Op.DIV)
def _div(graph, node, ins):
    a, b = ins
    rounding = node.attrs.get("rounding", "none")
    if rounding == "floor":
        return [np.floor_divide(a, b)]     # Python's (and torch's) floor division
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        return [_int_div(a, b)]    # ONNX integer Div truncates toward zero
    q = np.true_divide(a, b)
    return [np.trunc(q) if rounding == "trunc" else q]


_UNARY = {
    Op.RELU: lambda x: np.maximum(x, 0),
    Op.SIGMOID: lambda x: _sigmoid(x, None, None),
    Op.TANH: np.tanh,
    Op.SQRT: np.sqrt,
    Op.EXP: np.exp,
    Op.LOG: np.log,
    Op.NEG: np.negative,
    Op.ABS: np.abs,
    Op.IDENTITY: lambda x: x,
}


@implements(*_UNARY)
def _unary(graph, node, ins):
    return [_UNARY[node.op](ins[0])]


@implements(Op.CLIP)
def _clip_op(graph, node, ins):
    return [np.clip(ins[0], node.attrs["min"], node.attrs["max"])]


@implements(Op.LEAKY_RELU)
def _leaky_relu(graph, node, ins):
    x = ins[0]
    return [np.where(x >= 0, x, node.attrs["alpha"] * x)]


@implements(Op.CAST)
def _cast(graph, node, ins):
    # a cast to a narrower float rounds there first, then computation goes on in float64
    return [_to_compute(ins[0].astype(node.attrs["to"]))]


# ---- glue: normalising / reducing ------------------------------------------------------------
@implements(Op.SOFTMAX, Op.LOG_SOFTMAX)
def _softmax(graph, node, ins):
    x, ax = ins[0], node.attrs["axis"]
    shifted = x - x.max(axis=ax, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=ax, keepdims=True))
    log_p = shifted - log_sum
    return [log_p if node.op is Op.LOG_SOFTMAX else np.exp(log_p)]


@implements(Op.REDUCE_MEAN, Op.REDUCE_SUM)
def _reduce(graph, node, ins):
    axes = tuple(node.attrs["axes"]) or None
    fn = np.mean if node.op is Op.REDUCE_MEAN else np.sum
    return [fn(ins[0], axis=axes, keepdims=node.attrs["keepdims"])]


@implements(Op.LP_NORMALIZATION)
def _lp_normalization(graph, node, ins):
    x, at = ins[0], node.attrs
    ax = at["axis"] % x.ndim
    norm = np.sum(np.abs(x), axis=ax, keepdims=True) if at["p"] == 1 else \
        np.sqrt(np.sum(x * x, axis=ax, keepdims=True))
    norm = np.maximum(norm, at["epsilon"])
    # a zero vector (norm 0 with epsilon 0) maps to zeros, as onnxruntime does
    return [np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)]


# ---- glue: layout ----------------------------------------------------------------------------
@implements(Op.CONCAT)
def _concat(graph, node, ins):
    return [np.concatenate(ins, axis=node.attrs["axis"])]


@implements(Op.SPLIT)
def _split(graph, node, ins):
    cuts = np.cumsum(node.attrs["split"])[:-1]
    return np.split(ins[0], cuts, axis=node.attrs["axis"])


@implements(Op.SLICE)
def _slice(graph, node, ins):
    x = ins[0]
    at = node.attrs
    for st, en, ax, sp in zip(at["starts"], at["ends"], at["axes"], at["steps"]):
        ax = ax % x.ndim
        # range(*slice.indices) gives ONNX clamping, including negative steps to index 0
        x = np.take(x, np.arange(*slice(st, en, sp).indices(x.shape[ax])), axis=ax)
    return [x]


@implements(Op.TRANSPOSE)
def _transpose(graph, node, ins):
    perm = node.attrs["perm"] or None
    return [np.transpose(ins[0], perm)]


@implements(Op.RESHAPE)
def _reshape(graph, node, ins):
    x = ins[0]
    shape = [x.shape[k] if d == 0 else d for k, d in enumerate(node.attrs["shape"])]
    return [x.reshape(shape)]


@implements(Op.SQUEEZE)
def _squeeze(graph, node, ins):
    x = ins[0]
    axes = tuple(a % x.ndim for a in node.attrs["axes"]) or \
        tuple(k for k, d in enumerate(x.shape) if d == 1)
    return [np.squeeze(x, axis=axes)]


@implements(Op.UNSQUEEZE)
def _unsqueeze(graph, node, ins):
    x = ins[0]
    rank = x.ndim + len(node.attrs["axes"])
    return [np.expand_dims(x, tuple(sorted(a % rank for a in node.attrs["axes"])))]


@implements(Op.PAD)
def _pad(graph, node, ins):
    x, at = ins[0], node.attrs
    r = x.ndim
    begin, end = at["pads"][:r], at["pads"][r:]
    # negative pads crop (ONNX); positive ones pad
    crop = tuple(slice(max(-b, 0), x.shape[k] - max(-e, 0)) for k, (b, e) in enumerate(zip(begin, end)))
    x = x[crop]
    widths = tuple((max(b, 0), max(e, 0)) for b, e in zip(begin, end))
    if at["mode"] == "constant":
        return [np.pad(x, widths, mode="constant", constant_values=at["value"])]
    return [np.pad(x, widths, mode=at["mode"])]


@implements(Op.GATHER)
def _gather(graph, node, ins):
    x, idx = ins
    ax = node.attrs["axis"] % x.ndim
    if np.any(idx >= x.shape[ax]) or np.any(idx < -x.shape[ax]):
        raise InputError(f"node '{node.name}' (Gather): indices out of range for axis {ax} "
                         f"of size {x.shape[ax]}")
    return [np.take(x, idx, axis=ax)]


# ---- glue: spatial, selection, comparison ----------------------------------------------------
@implements(Op.CONV2D)
def _conv2d(graph, node, ins):
    at = node.attrs
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    win = sliding_windows(x, w.shape[2:], at["strides"], at["dilations"], at["pads"], 0.0)
    g = at["group"]                                 # win: [N, C, H', W', kH, kW]
    cg, og = w.shape[1], w.shape[0] // g
    y = np.concatenate([
        np.einsum("nchwij,ocij->nohw", win[:, j * cg:(j + 1) * cg], w[j * og:(j + 1) * og])
        for j in range(g)], axis=1)
    return [y + b[None, :, None, None] if b is not None else y]


@implements(Op.MAX_POOL)
def _max_pool(graph, node, ins):
    return [max_pool(ins[0], node.attrs)]


@implements(Op.ARG_MAX, Op.ARG_MIN)
def _arg_extremum(graph, node, ins):
    return [arg_extremum(ins[0], node.op, node.attrs)]


@implements(*COMPARE)
def _compare(graph, node, ins):
    return [COMPARE[node.op](ins[0], ins[1])]


@implements(Op.NOT)
def _not(graph, node, ins):
    return [np.logical_not(ins[0])]


_ERF = np.frompyfunc(math.erf, 1, 1)


@implements(Op.ERF)
def _erf(graph, node, ins):
    return [_ERF(ins[0]).astype(F64)]


@implements(Op.WHERE)
def _where(graph, node, ins):
    return [np.where(ins[0].astype(bool), ins[1], ins[2])]


@implements(Op.TILE)
def _tile(graph, node, ins):
    return [np.tile(ins[0], node.attrs["repeats"])]


@implements(Op.LOOP)
def _loop(graph, node, ins):
    from edgeseq.loop_op import run as run_loop
    body = node.attrs["body"]
    consts = {name: _to_compute(dequantize(c, body.constant_scale(name)))
              for name, c in body.constants.items()}

    def run_body(values: list) -> list:
        env = dict(consts)
        env.update((v.name, _to_compute(a)) for v, a in zip(body.inputs, values))
        res = _run_nodes(body, env)
        return [res[v.name] for v in body.outputs]
    return run_loop(node, ins, run_body, F64)


def _check_complete() -> None:
    missing = set(Op) - set(_OPS)
    if missing:
        raise AssertionError(f"reference lacks ops: {sorted(o.value for o in missing)}")


_check_complete()
