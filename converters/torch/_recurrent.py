"""PyTorch recurrent stacks (nn.LSTM / nn.GRU / nn.RNN) -> one IR node per layer, plus glue.

Shared by the torch.export lowering (aten.lstm / aten.gru / aten.rnn_* handlers) and the
state_dict converter. Weight mapping:
- LSTM gates: PyTorch i,f,g,o = IR i,f,c,o (same order); b = b_ih + b_hh; weight_hr -> w_proj.
- GRU gates: PyTorch r,z,n -> IR z,r,h; PyTorch is linear_before_reset = 1; b_x = b_ih,
  b_h = b_hh, both reordered.
- RNN: b = b_ih + b_hh; nonlinearity tanh or relu.
PyTorch states are [layers*D, N, P] whatever batch_first is; IR states follow the node layout
([D, N, P] time-major, [N, D, P] batch-first), so batch-first states are transposed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeseq.errors import ModelFormatError, UnsupportedModelError
from edgeseq.ops import Op
from edgeseq.converters.torch._lowering import V, handles

_OPS = {"lstm": Op.LSTM, "gru": Op.GRU, "rnn_tanh": Op.RNN, "rnn_relu": Op.RNN}
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


@dataclass
class Stack:
    """Hyper-parameters of one PyTorch recurrent module."""
    kind: str                 # lstm | gru | rnn_tanh | rnn_relu
    num_layers: int
    bidirectional: bool
    batch_first: bool

    @property
    def dirs(self) -> int:
        return 2 if self.bidirectional else 1


def split_params(kind: str, params: list, stack: Stack, has_biases: bool) -> list[dict]:
    """Group aten's flat weight list into one dict per (layer, direction)."""
    groups = stack.num_layers * stack.dirs
    per = len(params) // groups if groups else 0
    base = 4 if has_biases else 2
    if per * groups != len(params) or per not in (base, base + 1) or \
            (per == base + 1 and kind != "lstm"):
        raise UnsupportedModelError(f"{kind}: {len(params)} weights do not fit {stack.num_layers} "
                                    f"layer(s) x {stack.dirs} direction(s)")
    names = ["w_ih", "w_hh"] + (["b_ih", "b_hh"] if has_biases else []) + \
        (["w_hr"] if per == base + 1 else [])
    out = []
    for g in range(groups):
        chunk = params[g * per:(g + 1) * per]
        if any(isinstance(p, V) for p in chunk):
            raise UnsupportedModelError(f"{kind}: weights must be constants (parameters), "
                                        f"not computed tensors")
        out.append({n: np.asarray(p, dtype=np.float32) for n, p in zip(names, chunk)})
    return out


def _gru_rows(h: int) -> np.ndarray:
    """Row permutation PyTorch r,z,n -> IR z,r,h."""
    return np.concatenate([np.arange(h, 2 * h), np.arange(0, h), np.arange(2 * h, 3 * h)])


def _layer_weights(kind: str, dirs: list[dict], hidden: int) -> dict[str, np.ndarray]:
    """IR weight slots (with the leading direction axis) for one layer."""
    stack = lambda key, f=lambda a: a: np.stack([f(d[key]) for d in dirs]).astype(np.float32)
    has_b = "b_ih" in dirs[0]
    if kind == "gru":
        rows = _gru_rows(hidden)
        w = {"w_x": stack("w_ih", lambda a: a[rows]), "w_h": stack("w_hh", lambda a: a[rows])}
        if has_b:
            w["b_x"] = stack("b_ih", lambda a: a[rows])
            w["b_h"] = stack("b_hh", lambda a: a[rows])
        return w
    w = {"w_x": stack("w_ih"), "w_h": stack("w_hh")}
    if has_b:
        w["b"] = np.stack([d["b_ih"] + d["b_hh"] for d in dirs]).astype(np.float32)
    if "w_hr" in dirs[0]:
        w["w_proj"] = stack("w_hr")
    return w


def _layer_state(cx, state, layer: int, stack: Stack, base: str):
    """Initial state of one layer in the IR layout, or None when absent or all zero."""
    if state is None:
        return None
    lo, hi = layer * stack.dirs, (layer + 1) * stack.dirs
    if not isinstance(state, V):
        part = np.asarray(state, np.float32)[lo:hi]
        if not np.any(part):
            return None      # NOTE: an all-zero initial state is the IR's default; omit it
        return np.ascontiguousarray(part.transpose(1, 0, 2)) if stack.batch_first else part
    d, n, p = state.shape
    shp = (stack.dirs, n, p)
    part = cx.emit1(Op.SLICE, [state], base, shp, starts=[lo], ends=[hi], axes=[0], steps=[1])
    if stack.batch_first:
        part = cx.emit1(Op.TRANSPOSE, [part], base + "_bf", (n, stack.dirs, p), perm=[1, 0, 2])
    return part


def _check_state(state, field: str, stack: Stack, n, size: int, node: str) -> None:
    """An initial state must be [layers*D, N, P] as PyTorch checks at run time; the lowering
    only slices it, so a damaged program's [1000003, 1, 5] zeros would pass unnoticed (and
    make torch's own re-trace unbind a million layer states)."""
    if state is None:
        return
    shape, want = tuple(state.shape), (stack.num_layers * stack.dirs, n, size)
    fixed = lambda d: isinstance(d, (int, np.integer))
    if len(shape) != 3 or any(fixed(a) and fixed(b) and a != b for a, b in zip(shape, want)):
        raise ModelFormatError(f"initial state of shape {shape}, expected {want} (layers x "
                               f"directions, batch, state size)", node=node, field=field)


def build_stack(cx, stack: Stack, x: V, layers: list[list[dict]], hidden: int, *, h0=None,
                c0=None, need_y: bool = True, need_h: bool = True, need_c: bool = True,
                base: str = "rnn", sequence_lens: V | None = None):
    """Emit one IR node per layer; returns (y [.., D*P] in the module's layout, h_n, c_n);
    y is None when not needed (the last layer's output then feeds nothing)."""
    op = _OPS[stack.kind]
    kind = "rnn" if op is Op.RNN else stack.kind
    dirs = stack.dirs
    bf = stack.batch_first
    finals_h, finals_c = [], []
    w_hr = layers[0][0].get("w_hr") if layers and layers[0] else None
    n = x.shape[0] if bf else x.shape[1]
    _check_state(h0, "hx[0]" if op is Op.LSTM else "hx", stack, n,
                 hidden if w_hr is None else int(w_hr.shape[0]), base)
    _check_state(c0, "hx[1]", stack, n, hidden, base)
    for li, per_dir in enumerate(layers):
        w = _layer_weights(kind, per_dir, hidden)
        proj = int(w["w_proj"].shape[1]) if "w_proj" in w else 0
        p = proj or hidden
        name = f"{base}_l{li}"
        attrs = {"hidden_size": hidden, "direction": "bidirectional" if dirs == 2 else "forward",
                 "batch_first": bf}
        if op is Op.LSTM:
            attrs["proj_size"] = proj
        if op is Op.GRU:
            attrs["linear_before_reset"] = True
        if stack.kind == "rnn_relu":
            attrs["activations"] = ["relu"] * dirs
        n, t = (x.shape[0], x.shape[1]) if bf else (x.shape[1], x.shape[0])
        y_shape = (n, t, dirs, p) if bf else (t, dirs, n, p)
        st_shape = (n, dirs, p) if bf else (dirs, n, p)
        cell_shape = (n, dirs, hidden) if bf else (dirs, n, hidden)
        ins = [x, sequence_lens, _layer_state(cx, h0, li, stack, f"{name}_h0")]
        skip_y = li == len(layers) - 1 and not need_y
        outs = [None if skip_y else y_shape, st_shape if need_h else None]
        if op is Op.LSTM:
            ins.append(_layer_state(cx, c0, li, stack, f"{name}_c0"))
            outs.append(cell_shape if need_c else None)
        while ins and ins[-1] is None:
            ins.pop()
        weights = {slot: cx.const(arr, f"{name}.{slot}") for slot, arr in w.items()}
        res = cx.emit(op, ins, name, outs, attrs, weights)
        y = res[0]
        if skip_y:
            x = None
        elif bf:
            x = cx.emit1(Op.RESHAPE, [y], f"{name}_merge", (n, t, dirs * p), shape=[0, 0, dirs * p])
        elif dirs == 1:
            x = cx.emit1(Op.SQUEEZE, [y], f"{name}_merge", (t, n, p), axes=[1])
        else:
            yt = cx.emit1(Op.TRANSPOSE, [y], f"{name}_tnd", (t, n, dirs, p), perm=[0, 2, 1, 3])
            x = cx.emit1(Op.RESHAPE, [yt], f"{name}_merge", (t, n, dirs * p), shape=[0, 0, dirs * p])
        for k, finals in ((1, finals_h), (2, finals_c)):
            if k < len(res) and res[k] is not None:
                s = res[k]
                if bf:
                    s = cx.emit1(Op.TRANSPOSE, [s], f"{s.name}_dnp", (dirs, n, s.shape[2]),
                                 perm=[1, 0, 2])
                finals.append(s)
    out = [x]
    for finals in (finals_h, finals_c):
        if not finals:
            out.append(None)
        elif len(finals) == 1:
            out.append(finals[0])
        else:
            d, n, p = finals[0].shape
            out.append(cx.emit1(Op.CONCAT, finals, f"{base}_final", (d * len(finals), n, p), axis=0))
    return tuple(out)


def _used_outputs(node) -> set[int]:
    import operator
    return {u.args[1] for u in node.users if u.target is operator.getitem and u.users}


def _aten_rnn(kind: str):
    def fn(cx, node, x, hx, params, has_biases, num_layers, dropout, train, bidirectional,
           batch_first):
        if train and dropout:
            raise UnsupportedModelError("recurrent dropout in training mode; call module.eval()")
        stack = Stack(kind, int(num_layers), bool(bidirectional), bool(batch_first))
        groups = split_params(kind if kind == "lstm" else "gru" if kind == "gru" else "rnn",
                              list(params), stack, bool(has_biases))
        hidden = int(groups[0]["w_ih"].shape[0]) // GATES[kind]
        layers = [groups[k * stack.dirs:(k + 1) * stack.dirs] for k in range(stack.num_layers)]
        h0, c0 = (hx[0], hx[1]) if kind == "lstm" else (hx, None)
        used = _used_outputs(node)
        return build_stack(cx, stack, x, layers, hidden, h0=h0, c0=c0, need_y=0 in used,
                           need_h=1 in used, need_c=2 in used, base=node.name)
    return fn


handles("aten.lstm.input")(_aten_rnn("lstm"))
handles("aten.gru.input")(_aten_rnn("gru"))
handles("aten.rnn_tanh.input")(_aten_rnn("rnn_tanh"))
handles("aten.rnn_relu.input")(_aten_rnn("rnn_relu"))


@handles("edgeseq.sorted_lengths.default")
def _sorted_lengths(cx, node, lengths):
    """enforce_sorted=True: the graph checks its lengths input on every call (as PyTorch)."""
    from edgeseq import input_checks
    if not any(v.name == lengths.name for v in cx.inputs):
        raise UnsupportedModelError("pack_padded_sequence(enforce_sorted=True) on computed "
                                    "lengths: only a lengths input can be checked; pass "
                                    "enforce_sorted=False")
    input_checks.add(cx.metadata, lengths.name, "non_increasing")
    return lengths


@handles("edgeseq.longest_is_length.default")
def _longest_is_length(cx, node, y, lengths):
    """pad_packed_sequence without total_length: the graph returns y's full length, which is
    PyTorch's answer only when max(lengths) equals it; every call checks that."""
    from edgeseq import input_checks
    if not isinstance(lengths, V) or not any(v.name == lengths.name for v in cx.inputs):
        raise UnsupportedModelError("pad_packed_sequence without total_length on lengths that "
                                    "are not a graph input; pass total_length=x.shape[time]")
    input_checks.add(cx.metadata, lengths.name, f"longest_is:{y.shape[0]}")
    return y


@handles("edgeseq.padded_rnn.default")
def _padded_rnn(cx, node, x, lengths, h0, c0, params, mode, has_biases, num_layers,
                bidirectional, batch_first):
    """pack_padded_sequence -> RNN -> pad_packed_sequence (see _packed.py): sequence_lens."""
    stack = Stack(mode, int(num_layers), bool(bidirectional), bool(batch_first))
    groups = split_params(mode if mode in ("lstm", "gru") else "rnn", list(params), stack,
                          bool(has_biases))
    hidden = int(groups[0]["w_ih"].shape[0]) // GATES[mode]
    layers = [groups[k * stack.dirs:(k + 1) * stack.dirs] for k in range(stack.num_layers)]
    if not isinstance(lengths, V):
        lengths = V(cx.const(np.asarray(lengths, np.int64), f"{node.name}_lengths"),
                    np.shape(lengths), "int64")
    used = _used_outputs(node)
    y, h, c = build_stack(cx, stack, x, layers, hidden, h0=h0, c0=c0, need_y=0 in used,
                          need_h=1 in used, need_c=2 in used and mode == "lstm", base=node.name,
                          sequence_lens=lengths)
    if batch_first and y is not None:       # the op's y is time-major, like pad_packed_sequence's default
        n, t, f = y.shape
        y = cx.emit1(Op.TRANSPOSE, [y], f"{node.name}_time_major", (t, n, f), perm=[1, 0, 2])
    return y, h, c


def _cell_weights(cx, kind: str, w_ih, w_hh, b_ih, b_hh, hidden: int, base: str) -> dict:
    """IR weight constants of one cell (D = 1), shared when a traced loop reuses the cell."""
    key = (kind, id(w_ih), id(w_hh), id(b_ih), id(b_hh))
    hit = cx.derived.get(key)
    if hit is not None and hit[0] == (w_ih, w_hh, b_ih, b_hh):
        return hit[1]
    d = {"w_ih": np.asarray(w_ih, np.float32), "w_hh": np.asarray(w_hh, np.float32)}
    if b_ih is not None:
        d["b_ih"] = np.asarray(b_ih, np.float32)
        d["b_hh"] = np.asarray(b_hh, np.float32)
    w = _layer_weights("gru" if kind == "gru" else "lstm" if kind == "lstm" else "rnn", [d], hidden)
    names = {slot: cx.const(arr, f"{base}.{slot}") for slot, arr in w.items()}
    cx.derived[key] = ((w_ih, w_hh, b_ih, b_hh), names)
    return names


def _aten_cell(kind: str):
    # NOTE: a cell is one time step: IR node with T = 1, time-major, initial states given
    def fn(cx, node, x, hx, w_ih, w_hh, b_ih=None, b_hh=None):
        if any(isinstance(w, V) for w in (w_ih, w_hh, b_ih, b_hh)):
            raise UnsupportedModelError(f"{kind} cell: weights must be constants (parameters)")
        if not isinstance(x, V) or x.rank != 2:
            raise UnsupportedModelError(f"{kind} cell: expected a batched input [N, I]")
        n = x.shape[0]
        hidden = int(np.shape(w_ih)[0]) // GATES[kind]
        op = _OPS[kind]
        states = list(hx) if kind == "lstm" else [hx]
        ins = [cx.emit1(Op.UNSQUEEZE, [x], f"{node.name}_x", (1, n, x.shape[1]), axes=[0]), None]
        for k, s in enumerate(states):
            if isinstance(s, V):
                ins.append(cx.emit1(Op.UNSQUEEZE, [s], f"{node.name}_s{k}", (1, n, hidden), axes=[0]))
            elif s is None or not np.any(s):
                ins.append(None)
            else:
                ins.append(np.asarray(s, np.float32)[None])
        while ins[-1] is None:
            ins.pop()
        attrs = {"hidden_size": hidden}
        if kind == "gru":
            attrs["linear_before_reset"] = True
        if kind == "rnn_relu":
            attrs["activations"] = ["relu"]
        outs = [None, (1, n, hidden)] + ([(1, n, hidden)] if kind == "lstm" else [])
        weights = _cell_weights(cx, kind, w_ih, w_hh, b_ih, b_hh, hidden, node.name)
        res = cx.emit(op, ins, node.name, outs, attrs, weights)
        new = [cx.emit1(Op.SQUEEZE, [r], f"{node.name}_out{k}", (n, hidden), axes=[0])
               for k, r in enumerate(res[1:])]
        return tuple(new) if kind == "lstm" else new[0]
    return fn


handles("aten.lstm_cell.default")(_aten_cell("lstm"))
handles("aten.gru_cell.default")(_aten_cell("gru"))
handles("aten.rnn_tanh_cell.default")(_aten_cell("rnn_tanh"))
handles("aten.rnn_relu_cell.default")(_aten_cell("rnn_relu"))
