"""ONNX LSTM / GRU / RNN -> edgeseq recurrent nodes, every attribute and optional input.

Weights are re-laid out once here: ONNX stacks LSTM gates i,o,f,c and edgeseq i,f,c,o; ONNX
biases [Wb, Rb] are summed for LSTM/RNN and kept apart for GRU (whose reset-gate term needs
Rb separately); peepholes P[i,o,f] become [D, 3, H] in i,f,o order.
"""
from __future__ import annotations

import numpy as np

from edgeseq.graph import scale_name
from edgeseq.ops import ACTIVATIONS, Op
from edgeseq.converters.onnx import batchperm
from edgeseq.converters.onnx.context import Context, Unsupported
from edgeseq.converters.onnx.registry import handler
from edgeseq.converters.onnx.symdims import Filled

# ONNX activation names -> edgeseq names: ops.ACTIVATIONS holds ONNX's names in snake case
# ("LeakyRelu" -> "leaky_relu"); ONNX runtimes match them case-insensitively.
_ACT = {"".join(w.capitalize() for w in n.split("_")): n for n in ACTIVATIONS}
_ACT_LOWER = {k.lower(): v for k, v in _ACT.items()}

_COMMON = {"activation_alpha", "activation_beta", "activations", "clip", "direction",
           "hidden_size", "layout"}
_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}
_DEFAULT_ACTS = {Op.LSTM: ("Sigmoid", "Tanh", "Tanh"), Op.GRU: ("Sigmoid", "Tanh"),
                 Op.RNN: ("Tanh",)}
_N_GATES = {Op.LSTM: 4, Op.GRU: 3, Op.RNN: 1}
# ONNX LSTM gate blocks i,o,f,c -> edgeseq i,f,c,o: take ONNX blocks 0,2,3,1.
_LSTM_ORDER = (0, 2, 3, 1)


def _activations(op: Op, a: dict, d: int) -> tuple[tuple, tuple, tuple]:
    """Explicit per-function (names, alpha, beta); ONNX consumes alpha/beta lists in order,
    only by the functions that take the parameter (as onnxruntime does)."""
    k = len(_DEFAULT_ACTS[op])
    names = list(a.get("activations") or _DEFAULT_ACTS[op] * d)
    if len(names) == k and d == 2:
        names = names * 2
    if len(names) != k * d:
        raise Unsupported(f"activations: expected {k * d} names ({k} per direction), "
                          f"got {len(names)}: {names}")
    out_names = []
    for nm in names:
        if nm.lower() not in _ACT_LOWER:
            raise Unsupported(f"activation '{nm}' is not supported; supported: {sorted(_ACT)}")
        out_names.append(_ACT_LOWER[nm.lower()])
    alphas = list(a.get("activation_alpha") or [])
    betas = list(a.get("activation_beta") or [])
    al, be = [], []
    for nm in out_names:
        da, db = ACTIVATIONS[nm]
        al.append(float(alphas.pop(0)) if da is not None and alphas else float(da or 0.0))
        be.append(float(betas.pop(0)) if db is not None and betas else float(db or 0.0))
    if alphas or betas:
        raise Unsupported(f"activation_alpha/activation_beta have {len(alphas)}/{len(betas)} "
                          f"value(s) left over for activations {names}")
    return tuple(out_names), tuple(al), tuple(be)


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def _common(ctx: Context, node, op: Op, extra: set[str], wr=None):
    """Attributes, W and R ([D, G*H, *]; `wr` gives them when the caller has already decoded
    them, e.g. from int8), sizes, and the optional B and P constants."""
    a = ctx.attrs(node, _COMMON | extra)
    direction = a.get("direction", "forward")
    if direction not in _DIRECTIONS:
        raise Unsupported(f"direction '{direction}' is not one of {sorted(_DIRECTIONS)}")
    d = _DIRECTIONS[direction]
    layout = int(a.get("layout", 0))
    if layout not in (0, 1):
        raise Unsupported(f"layout must be 0 or 1, got {layout}")
    wanted = {1: "W", 2: "R", 3: "B"} if wr is None else {3: "B"}
    if op is Op.LSTM:
        wanted[7] = "P"
    ops = ctx.need_consts(node, wanted)
    w, r = wr if wr is not None else (ops[1], ops[2])
    if w.ndim != 3 or r.ndim != 3 or w.shape[0] != d or r.shape[0] != d:
        raise Unsupported(f"W {w.shape} / R {r.shape}: expected [num_directions={d}, G*H, *]")
    h = int(a.get("hidden_size", r.shape[-1]))
    g = _N_GATES[op]
    if w.shape[1] != g * h or r.shape[1:] != (g * h, h):
        raise Unsupported(f"W {w.shape} / R {r.shape} do not match hidden_size={h} "
                          f"({g} gate(s))")
    clip = a.get("clip")
    if clip is not None and not clip > 0:
        raise Unsupported(f"clip must be > 0, got {clip}")
    acts, alpha, beta = _activations(op, a, d)
    attrs = {"hidden_size": h, "direction": direction, "batch_first": layout == 1,
             "activations": acts, "activation_alpha": alpha, "activation_beta": beta,
             "gate_clip": float(clip or 0.0)}
    if wr is None:
        w, r = _f32(w), _f32(r)
    return a, attrs, w, r, d, h, ops.get(3), ops.get(7)


def _io(ctx: Context, node, n_states: int) -> tuple[list[str], list[str]]:
    """edgeseq inputs [x, sequence_lens, initial_h(, initial_c)] and outputs."""
    def state(i: int) -> str:
        # zeros of a run-time shape (ConstantOfShape of Shape(x) pieces) = no initial state
        sym = ctx.symbolic.get(ctx.resolve(ctx.input_name(node, i)))
        if isinstance(sym, Filled) and sym.value == 0.0:
            return ""
        return ctx.inp(node, i)

    lens = batchperm.sequence_lens(ctx, node, 4)    # sorted lengths -> the original ones
    ins = [ctx.inp(node, 0), lens if lens is not None else ctx.inp(node, 4), state(5)]
    if n_states == 2:
        ins.append(state(6))
    while ins and not ins[-1]:
        ins.pop()
    outs = list(node.output)
    while outs and not outs[-1]:
        outs.pop()
    return ins, outs


@handler("LSTM", since=7)
def lstm(ctx: Context, node) -> None:
    _lstm(ctx, node, *_common(ctx, node, Op.LSTM, {"input_forget"}))


def _lstm(ctx: Context, node, a, attrs, w, r, d, h, b, p, scales=None) -> None:
    """Emit an LSTM from ONNX-ordered (i,o,f,c) weights; `scales` = (w_scale, r_scale), each
    [D, 4H] or None, for int8 W/R."""
    order = np.concatenate([np.arange(k * h, (k + 1) * h) for k in _LSTM_ORDER])
    w_x, w_h = w[:, order], r[:, order]
    w_s, r_s = (s[:, order] if s is not None else None for s in (scales or (None, None)))
    if b is not None:
        b = _f32(b)
        if b.shape != (d, 8 * h):
            raise Unsupported(f"B: expected ({d}, {8 * h}), got {b.shape}")
        b = (b[:, :4 * h] + b[:, 4 * h:])[:, order]
    if p is not None:
        p = _f32(p)
        if p.shape != (d, 3 * h):
            raise Unsupported(f"P: expected ({d}, {3 * h}), got {p.shape}")
        p = p.reshape(d, 3, h)[:, [0, 2, 1]].copy()   # i,o,f -> i,f,o
    coupled = int(a.get("input_forget", 0))
    if coupled not in (0, 1):
        raise Unsupported(f"input_forget must be 0 or 1, got {coupled}")
    if coupled:
        # NOTE: onnxruntime couples as f = 1 - i (the reverse of TFLite CIFG); the derived
        # forget gate's rows are ignored by edgeseq and zeroed so nothing reads stale weights.
        attrs["coupled_gate"] = "forget"
        fr = slice(h, 2 * h)
        w_x, w_h = w_x.copy(), w_h.copy()
        w_x[:, fr] = 0
        w_h[:, fr] = 0
        if b is not None:
            b[:, fr] = 0
        if p is not None:
            p[:, 1] = 0
    base = ctx.node_name
    weights = {"w_x": ctx.add_const(f"{base}/w_x", w_x), "w_h": ctx.add_const(f"{base}/w_h", w_h)}
    for slot, sc in (("w_x", w_s), ("w_h", r_s)):
        if sc is not None:      # int8 weight: per-row float32 scale "<tensor>.scale"
            ctx.consts[scale_name(weights[slot])] = np.ascontiguousarray(sc, dtype=np.float32)
    if b is not None:
        weights["b"] = ctx.add_const(f"{base}/b", b)
    if p is not None:
        weights["peephole"] = ctx.add_const(f"{base}/peephole", p)
    ins, outs = _io(ctx, node, 2)
    ctx.emit(Op.LSTM, ins, outs, attrs, weights)


@handler("DynamicQuantizeLSTM", since=1, domain="com.microsoft")
def dynamic_quantize_lstm(ctx: Context, node) -> None:
    """onnxruntime's quantize_dynamic LSTM: int8/uint8 W [D, I, 4H] and R [D, H, 4H] with
    per-tensor ([D]) or per-column ([D, 4H]) scales and zero points. Symmetric int8 stays int8
    (edgeseq's per-row scales); anything with a zero point is dequantized to float32.
    NOTE: onnxruntime also quantizes X and H to uint8 at run time; edgeseq keeps activations
    in float (hybrid), so outputs differ from onnxruntime by that activation rounding."""
    q = ctx.need_consts(node, {1: "W", 2: "R", 8: "W_scale", 9: "W_zero_point",
                               10: "R_scale", 11: "R_zero_point"})
    decoded, scales = [], []
    for wq, sc, zp, what in ((q[1], q[8], q[9], "W"), (q[2], q[10], q[11], "R")):
        if wq.ndim != 3:
            raise Unsupported(f"{what}: expected [D, in, 4H], got {wq.shape}")
        d, rows = wq.shape[0], wq.shape[2]
        sc = np.broadcast_to(np.asarray(sc, np.float32).reshape(d, -1), (d, rows))
        zp = np.broadcast_to(np.asarray(zp).reshape(d, -1), (d, rows))
        wt = np.transpose(wq, (0, 2, 1))                       # -> [D, 4H, in]
        if wq.dtype == np.int8 and not zp.any():
            decoded.append(np.ascontiguousarray(wt))
            scales.append(sc.copy())
        else:
            deq = (wt.astype(np.float32) - zp[:, :, None].astype(np.float32)) * sc[:, :, None]
            decoded.append(deq.astype(np.float32))
            scales.append(None)
    if (scales[0] is None) != (scales[1] is None):    # one int8 and one float: make both float
        decoded = [w.astype(np.float32) * s[:, :, None] if s is not None else w
                   for w, s in zip(decoded, scales)]
        scales = [None, None]
    common = _common(ctx, node, Op.LSTM, {"input_forget"}, wr=tuple(decoded))
    _lstm(ctx, node, *common, scales=None if scales[0] is None else tuple(scales))


def _gru_or_rnn(ctx: Context, node, op: Op, extra: set[str]) -> dict:
    """Shared by GRU and RNN: weights, bias ([D, 2*G*H] = [Wb, Rb]) and the emitted node."""
    a, attrs, w, r, d, h, b, _ = _common(ctx, node, op, extra)
    g = _N_GATES[op]
    base = ctx.node_name
    weights = {"w_x": ctx.add_const(f"{base}/w_x", w), "w_h": ctx.add_const(f"{base}/w_h", r)}
    if b is not None:
        b = _f32(b)
        if b.shape != (d, 2 * g * h):
            raise Unsupported(f"B: expected ({d}, {2 * g * h}), got {b.shape}")
        wb, rb = b[:, :g * h], b[:, g * h:]
        if op is Op.GRU:
            # NOTE: GRU keeps Rb apart: with linear_before_reset it sits inside r * (...).
            weights["b_x"] = ctx.add_const(f"{base}/b_x", wb)
            weights["b_h"] = ctx.add_const(f"{base}/b_h", rb)
        else:
            weights["b"] = ctx.add_const(f"{base}/b", wb + rb)
    if op is Op.GRU:
        attrs["linear_before_reset"] = bool(int(a.get("linear_before_reset", 0)))
    ins, outs = _io(ctx, node, 1)
    ctx.emit(op, ins, outs, attrs, weights)
    return attrs


@handler("GRU", since=7)
def gru(ctx: Context, node) -> None:
    _gru_or_rnn(ctx, node, Op.GRU, {"linear_before_reset"})


@handler("RNN", since=7)
def rnn(ctx: Context, node) -> None:
    _gru_or_rnn(ctx, node, Op.RNN, set())
