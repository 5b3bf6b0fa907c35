"""The ConvLSTM cell pattern of the loop lifter (converters/loops.py): a Keras ConvLSTM1D /
ConvLSTM2D loop body (TFLite WHILE, ONNX Loop) becomes one ConvLSTM node.

Dataflow: x_t and h are feature maps (channels last, `Step.x_shape` / `state_shapes`); four
convolutions read x_t and four read h (through layout ops only), and each x-convolution is
summed (ADD) with one h-convolution into a gate pre-activation. The weights are the
convolutions' own filter and bias values, read off the body (probing a convolution with unit
vectors would take one run per input position and channel, and tell nothing the constants do
not) in the layout the format names in `BodyOp.attrs`; the geometry comes from their padding
and dilation (the recurrent one must be 'same', stride 1, undilated, as Keras writes it).
Which sum is which gate is read from how the new c responds to overriding each one
(`_gate_order`); that assignment is proposed first, then every other, each with the activation
choices of `loops.GATE_ACTS` / `CELL_ACTS`; as for every pattern, a candidate is accepted only
when the ConvLSTM node run by the reference reproduces the loop on a probe (`loops.verify`).
"""
from __future__ import annotations

import itertools

import numpy as np

from edgeseq.converters.loops import (CELL_ACTS, GATE_ACTS, Candidate, NoMatch, Step, _act_attrs,
                                      cell)
from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import Op

# tf2onnx folds the +3 of Keras 3's hard_sigmoid, relu6(x + 3) / 6, into a constant added to
# the recurrent convolution; read into the bias, the gate activation left is clip(x / 6, 0, 1)
FOLDED_ACTS = (("hard_sigmoid", 1 / 6, 0.0),)
LAYOUT_OPS = frozenset({"RESHAPE", "EXPAND_DIMS", "SQUEEZE", "TRANSPOSE", "IDENTITY"})
CONV_KINDS = frozenset({"CONV_2D", "CONV"})
# filter layouts -> permutation to [O, I, *K] ("OI...": channels first, any rank)
LAYOUTS = {"OHWI": (0, 3, 1, 2)}


def _derived(step: Step, key) -> set:
    """`key` and every tensor computed from it by layout ops alone."""
    out, todo = {key}, [key]
    while todo:
        k = todo.pop()
        for op in step.consumers(k):
            if op.kind in LAYOUT_OPS and op.inputs[0] == k:
                for o in op.outputs:
                    if o not in out:
                        out.add(o)
                        todo.append(o)
    return out


def _back(step: Step, key):
    """The tensor `key` is a layout view of (following producers through layout ops)."""
    for _ in range(8):
        p = step.producer(key)
        if p is None or p.kind not in LAYOUT_OPS:
            return key
        key = p.inputs[0]
    return key


def _dependent(step: Step) -> set:
    """Every body tensor that depends on x_t or a state (the rest are constants)."""
    out = {step.x_key, *step.state_keys}
    for op in step.ops:                  # body ops are in execution order
        if any(k in out for k in op.inputs):
            out.update(op.outputs)
    return out


def _sum_with(step: Step, key, dependent: set):
    """(other operand, constant terms, sum) of the ADD that sums conv output `key` with
    another run-time value, following layout ops and ADDs of constants (a bias added apart)."""
    consts = []
    for _ in range(8):
        nxt = None
        for k in _derived(step, key):
            for op in step.consumers(k):
                if op.kind != "ADD" or len(op.inputs) != 2:
                    continue
                other = op.inputs[1] if op.inputs[0] == k else op.inputs[0]
                if other in dependent:
                    return other, consts, op.outputs[0]
                consts.append(other)
                nxt = op.outputs[0]
        if nxt is None:
            return None
        key = nxt
    return None


def _back_sum(step: Step, key, dependent: set):
    """(tensor, constant terms): `key` followed back through layout ops and ADDs of constants
    (tf2onnx folds constants onto the recurrent convolution's output)."""
    consts = []
    for _ in range(8):
        key = _back(step, key)
        p = step.producer(key)
        if p is None or p.kind != "ADD" or len(p.inputs) != 2:
            break
        live = [k for k in p.inputs if k in dependent]
        if len(live) != 1:
            break
        consts += [k for k in p.inputs if k not in dependent]
        key = live[0]
    return key, consts


def _kernel(op, w: np.ndarray, n_spatial: int) -> tuple[np.ndarray, tuple, tuple, tuple]:
    """(filter [O, I, *K], pads begin, pads end, dilations) of a convolution op, its spatial
    axes reduced to `n_spatial` (a 1-D conv written 2-D over a unit axis)."""
    a = op.attrs
    perm = tuple(range(w.ndim)) if a.get("layout") == "OI..." else LAYOUTS.get(a.get("layout"))
    if a.get("group", 1) != 1:
        raise NoMatch("a grouped convolution")
    if perm is None or w.ndim != len(perm):
        raise NoMatch(f"convolution filter layout {a.get('layout')} of rank {w.ndim}")
    w = np.transpose(w, perm)
    k = w.shape[2:]
    dil = tuple(a.get("dilations") or (1,) * len(k))
    strides = tuple(a.get("strides") or (1,) * len(k))
    if any(s != 1 for s in strides):
        raise NoMatch("a strided convolution")
    if "pads" in a:                          # explicit (ONNX): begins then ends
        pads = tuple(a["pads"]) or (0,) * 2 * len(k)
        begin, end = pads[:len(k)], pads[len(k):]
    else:                                    # SAME / VALID (TFLite, ONNX auto_pad), stride 1
        same = a.get("padding") in ("SAME", "SAME_LOWER")
        total = [d * (kk - 1) if same else 0 for d, kk in zip(dil, k)]
        # SAME: the odd one at the end (TF, ONNX SAME_UPPER); SAME_LOWER: at the start
        begin = tuple((t + (a.get("padding") == "SAME_LOWER")) // 2 for t in total)
        end = tuple(t - b for t, b in zip(total, begin))
    if len(k) > n_spatial:                   # drop unit spatial axes the body added
        keep = [j for j in range(len(k)) if k[j] != 1 or begin[j] or end[j]]
        keep = (keep + [j for j in range(len(k)) if j not in keep])[:n_spatial]
        keep.sort()
        drop = [j for j in range(len(k)) if j not in keep]
        if any(k[j] != 1 or begin[j] or end[j] for j in drop):
            raise NoMatch("a convolution over more spatial axes than the feature map has")
        w = w.reshape(w.shape[:2] + tuple(k[j] for j in keep))
        begin, end, dil = (tuple(v[j] for j in keep) for v in (begin, end, dil))
    return w, begin, end, dil


def _gate_pairs(step: Step, x_keys: set, h_keys: set, dependent: set) -> list[tuple]:
    """(x-conv, h-conv, constant terms, pre-activation) per gate, in body order of the
    x-convolutions."""
    x_convs = [op for op in step.ops if op.kind in CONV_KINDS and op.inputs[0] in x_keys]
    h_convs = {op.outputs[0]: op for op in step.ops
               if op.kind in CONV_KINDS and op.inputs[0] in h_keys}
    if len(x_convs) != 4 or len(h_convs) != 4:
        raise NoMatch(f"{len(x_convs)} convolutions of x_t and {len(h_convs)} of h "
                      f"(a ConvLSTM body has 4 and 4)")
    pairs = []
    for xc in x_convs:
        found = _sum_with(step, xc.outputs[0], dependent)
        src, consts = _back_sum(step, found[0], dependent) if found else (None, [])
        if src not in h_convs:
            raise NoMatch("an x_t convolution is not added to an h convolution")
        pairs.append((xc, h_convs[src], found[1] + consts, found[2]))
    if len({id(p[1]) for p in pairs}) != 4:
        raise NoMatch("two gates share a recurrent convolution")
    return pairs


def _weights(step: Step, env: dict, pairs: list, n_spatial: int, hidden: int) -> dict:
    """Per gate (body order): w_x [F, C, *K], w_h [F, F, *K], b [F]; and the input geometry."""
    out = {"w_x": [], "w_h": [], "b": [], "geometry": None}
    for xc, hc, consts, _ in pairs:
        wx, bx0, bx1, dil = _kernel(xc, np.asarray(env[xc.inputs[1]], np.float64), n_spatial)
        wh, bh0, bh1, dh = _kernel(hc, np.asarray(env[hc.inputs[1]], np.float64), n_spatial)
        k_h = wh.shape[2:]
        if any(d != 1 for d in dh) or bh0 != tuple((k - 1) // 2 for k in k_h) or \
                tuple(a + b for a, b in zip(bh0, bh1)) != tuple(k - 1 for k in k_h):
            raise NoMatch("the recurrent convolution is not 'same' and undilated")
        if wx.shape[0] != hidden or wh.shape[:2] != (hidden, hidden):
            raise NoMatch(f"gate convolutions of {wx.shape[0]} / {wh.shape[:2]} channels for a "
                          f"state of {hidden}")
        geometry = (bx0 + bx1, dil)
        if out["geometry"] not in (None, geometry):
            raise NoMatch("the gates' input convolutions differ in padding or dilation")
        out["geometry"] = geometry
        bias = np.zeros(hidden)
        terms = [c.inputs[2] for c in (xc, hc) if len(c.inputs) > 2 and
                 c.inputs[2] not in ("", None, -1)] + consts
        for key in terms:
            v = np.asarray(env[key], np.float64)
            if v.size not in (1, hidden):
                raise NoMatch(f"a bias of shape {v.shape} for {hidden} channels")
            bias = bias + v.reshape(-1)
        out["w_x"].append(wx)
        out["w_h"].append(wh)
        out["b"].append(bias)
    return out


def _run(x_shape: tuple, state_shape: tuple):
    """run(candidate, xs [T, N, I], init [N, S] each) for loops.verify: the ConvLSTM node by
    the float64 reference, in and out flattened channels last as the loop body holds them."""
    def run(cand: Candidate, xs, init):
        from edgeseq import reference
        t_len, h_index = xs.shape[0], cand.h_index
        x = np.moveaxis(xs.reshape((t_len,) + tuple(x_shape)), -1, 2)
        states = [np.moveaxis(s.reshape(state_shape), -1, 1)[None] for s in init]
        g = Graph("probe", [Value("x", "float32", x.shape),
                            Value("h0", "float32", states[0].shape),
                            Value("c0", "float32", states[0].shape)],
                  [Value(o, "float32", ()) for o in ("y", "y_h", "y_c")],
                  [Node("lifted", Op.CONV_LSTM, ["x", "", "h0", "c0"], ["y", "y_h", "y_c"],
                        dict(cand.attrs), {s: f"w.{s}" for s in cand.weights})],
                  {f"w.{s}": np.asarray(w, np.float32)[None] for s, w in cand.weights.items()}
                  ).validate()
        out = reference.run(g, {"x": x.astype(np.float32),
                                "h0": states[h_index].astype(np.float32),
                                "c0": states[1 - h_index].astype(np.float32)})
        y = np.moveaxis(out["y"][:, 0], 2, -1).reshape(t_len, xs.shape[1], -1)
        fin = [np.moveaxis(out[k][0], 1, -1).reshape(xs.shape[1], -1) for k in ("y_h", "y_c")]
        return y, ([fin[0], fin[1]] if h_index == 0 else [fin[1], fin[0]])
    return run


@cell("conv_lstm")
def _conv_lstm(step: Step):
    """Keras ConvLSTM1D/2D: gates i, f, c, o from convolutions of x_t plus 'same'
    convolutions of h (both feature maps, channels last)."""
    if step.x_shape is None or len(step.x_shape) < 3 or len(step.state_keys) != 2 or \
            step.state_shapes is None:
        raise NoMatch("a ConvLSTM body carries two feature-map states and reads a feature map")
    n_spatial = len(step.x_shape) - 2
    x_keys = _derived(step, step.x_key)
    zeros = [np.zeros((step.n_batch, s)) for s in step.state_sizes]
    env = step.run(np.zeros((step.n_batch, step.n_input)), zeros, {})
    dependent = _dependent(step)
    found, reasons = [], []
    for h_index in (0, 1):
        state_shape = tuple(step.state_shapes[h_index])
        try:
            pairs = _gate_pairs(step, x_keys, _derived(step, step.state_keys[h_index]),
                                dependent)
            w = _weights(step, env, pairs, n_spatial, state_shape[-1])
        except NoMatch as e:
            reasons.append(str(e))
            continue
        found.append((h_index, state_shape, w, _gate_order(step, [p[3] for p in pairs], h_index)))
    if not found:
        raise NoMatch("; ".join(dict.fromkeys(reasons)))
    return _candidates(found, step)


def _gate_order(step: Step, zs: list, h_index: int) -> tuple | None:
    """Which pre-activation is which gate, from how the new c responds to each (overrides of
    one run): with c_{t-1} random only o leaves c_t alone; with c_{t-1} = 0 f does too; and
    with i forced open (+40) and the candidate at 0, c_t = g(0) = 0. Returns the body indices
    of (i, f, c, o), or None (then the candidates try the body order first)."""
    c_index = 1 - h_index
    rng = np.random.default_rng(5)
    x = rng.standard_normal((step.n_batch, step.n_input))
    states = [rng.standard_normal((step.n_batch, n)) for n in step.state_sizes]
    zero_c = list(states)
    zero_c[c_index] = np.zeros_like(states[c_index])
    key = step.new_state_keys[c_index]

    def still(sts, k, over=None):
        env = step.run(x, sts, dict(over or {}))
        base = np.asarray(env[key])
        moved = dict(over or {})
        moved[zs[k]] = np.asarray(env[zs[k]]) + 1.0
        return np.allclose(np.asarray(step.run(x, sts, moved)[key]), base, atol=1e-12)
    try:
        o = [k for k in range(4) if still(states, k)]
        f = [k for k in range(4) if still(zero_c, k) and k not in o]
        rest = [k for k in range(4) if k not in o + f]
        if len(o) != 1 or len(f) != 1:
            return None
        env = step.run(x, zero_c, {})
        for i, c in (rest, rest[::-1]):
            over = {zs[i]: np.full_like(np.asarray(env[zs[i]]), 40.0),
                    zs[c]: np.zeros_like(np.asarray(env[zs[c]]))}
            if np.allclose(np.asarray(step.run(x, zero_c, over)[key]), 0.0, atol=1e-9):
                return i, f[0], c, o[0]
    except Exception:  # noqa: BLE001 - a body the overrides upset: fall back to the order
        return None
    return None


def _candidates(found: list, step: Step) -> list[Candidate]:
    """The gate order read by `_gate_order` first, then every other assignment."""
    out = []
    for h_index, state_shape, w, first in found:
        pads, dil = w["geometry"]
        hidden = state_shape[-1]
        run = _run(step.x_shape, state_shape)
        perms = [first] if first else []
        for perm in perms + [p for p in itertools.permutations(range(4)) if p != first]:
            weights = {s: np.concatenate([w[s][g] for g in perm]) for s in ("w_x", "w_h", "b")}
            for g in GATE_ACTS + FOLDED_ACTS:
                for c in CELL_ACTS[:2]:
                    attrs = {"hidden_size": hidden, "pads": pads, "dilations": dil,
                             **_act_attrs([g, c, c])}
                    out.append(Candidate(Op.CONV_LSTM, attrs, weights, h_index, 1 - h_index,
                                         f"ConvLSTM{len(state_shape) - 2}D({g[0]}/{c[0]})",
                                         run=run))
    return out


def channels_perm(rank: int, lead: int, to_last: bool = False) -> tuple:
    """Transpose perm moving the channel axis of a feature map with `lead` leading axes
    ([*lead, *L, C] -> [*lead, C, *L]; `to_last`: back)."""
    if to_last:
        return tuple(range(lead)) + tuple(range(lead + 1, rank)) + (lead,)
    return tuple(range(lead)) + (rank - 1,) + tuple(range(lead, rank - 1))
