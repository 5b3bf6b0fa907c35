"""Emitter of LSTM/GRU/RNN nodes: layout to time-major, initial states (carried, given or
zero), the input projection for all steps through the panel kernel, then the existing njit
sequence kernel per direction. This module is the only place that reads the dense kernel
families' prepared weights and spells the sequence kernels' signatures."""
from __future__ import annotations

import numpy as np

from edgeseq.graph import Node
from edgeseq.ops import Op, num_directions
from edgeseq.runtime.codegen.lower import Lowering, StateSlot, Unsupported, emitter
from edgeseq.runtime.kernels.panels import to_panels

IMPORT_LINES = (
    "from edgeseq.runtime.kernels import gru as GRU",
    "from edgeseq.runtime.kernels import gru_plain as GRUP",
    "from edgeseq.runtime.kernels import lstm as LSTM",
    "from edgeseq.runtime.kernels import rnn as RNN",
)


def _dense_kernel_types() -> tuple:
    from edgeseq.runtime.recurrent import GruKernel, LstmKernel, RnnKernel
    return {Op.LSTM: LstmKernel, Op.GRU: GruKernel, Op.RNN: RnnKernel}


def _weights(lw: Lowering, op: Op, kernel, d: int) -> str:
    """The sequence kernel's weight arguments for direction d (after x, w_x, pre)."""
    def f32(a):
        return lw.pack("wf", a)

    def i64(a):
        return lw.pack("wi", a)

    def f64(a):
        return lw.pack("wd", a)
    if op is Op.LSTM:
        return (f"{f32(kernel.w_h[d])}, {f32(kernel.w_proj[d])}, {f32(kernel.aux[d])}, "
                f"{i64(kernel.ip[d])}, {f64(kernel.fp[d])}")
    if op is Op.GRU:
        zr, hn = kernel.w_h[d]
        return (f"{f32(zr)}, {f32(hn)}, {f32(kernel.aux[d])}, {i64(kernel.ip[d])}, "
                f"{f64(kernel.fp[d])}")
    return f"{f32(kernel.w_h[d])}, {f32(kernel.aux[d])}, {i64(kernel.ip[d])}, {f64(kernel.fp[d])}"


# op -> format of the sequence-kernel call (x, w_x, weights, lens, states, y)
CALLS = {
    Op.LSTM: "LSTM._lstm_sequence({x}, {wx}, 1, {w}, {lens}, {s0}[{d}], {s1}[{d}], {y})",
    # the default cell over full lengths takes the fused one-pass kernel (kernels/gru_plain)
    Op.GRU: "if GRUP.is_plain_gru({ip}, {fp}, {lens}, {x}.shape[0]):\n"
            "        GRUP.plain_gru_sequence({x}, {w_h}, {aux}, {ip}[0], {ip}[3], {s0}[{d}], {y})\n"
            "    else:\n"
            "        GRU._gru_sequence({x}, {wx}, 1, {w}, {lens}, {s0}[{d}], {y})",
    Op.RNN: "RNN._rnn_sequence({x}, {wx}, 1, {w}, {lens}, {s0}[{d}], {y})",
}
N_GATES = {Op.LSTM: 4, Op.GRU: 3, Op.RNN: 1}


def _copy_swap01(lw: Lowering, x: str, rank: int) -> str:
    """A C-contiguous copy of x with axes 0 and 1 swapped."""
    y = lw.fresh()
    d = lw.dims(x, rank)
    dims = [d[1], d[0]] + d[2:]
    idx = [f"i{k}" for k in range(rank)]
    src = [idx[1], idx[0]] + idx[2:]
    lw.emit(f"{y} = np.empty({lw.tup(dims)}, dtype=np.float32)")
    lw.loop_nest(dims, [f"{y}[{', '.join(idx)}] = {x}[{', '.join(src)}]"])
    return y


def _source_kind(lw: Lowering, name: str) -> str:
    if not name:
        return "none"
    if name in {v.name for v in lw.graph.inputs}:
        return "input"
    return "const" if lw.is_const(name) else "value"


@emitter(Op.LSTM, Op.GRU, Op.RNN)
def _recurrent(lw: Lowering, node: Node) -> None:
    kernel = lw.kernels.get(node.name)
    want = _dense_kernel_types()[node.op]
    if type(kernel) is not want:
        raise Unsupported(f"kernel {type(kernel).__name__} (compressed or delta weights) is "
                          f"not emitted")
    a = node.attrs
    n_dir = num_directions(a)
    bf = a["batch_first"]
    hidden = kernel.hidden
    sizes = {"h": kernel.out_size, "c": hidden}
    lw.comment(node)
    ins = list(node.inputs) + [""] * (4 - len(node.inputs))
    x = lw.value(ins[0])
    if bf:
        x = _copy_swap01(lw, x, 3)
    v = lw.fresh()
    lw.emit(f"{v}_T, {v}_N = {x}.shape[0], {x}.shape[1]")
    if ins[1]:
        lens = lw.value(ins[1])
        lw.emit(f"if {lens}.shape[0] != {v}_N:")
        lw.emit(f"    raise ValueError(\"node '{node.name}': sequence_lens must have one value "
                f"per batch row\")")
        lw.emit(f"for b in range({v}_N):")
        lw.emit(f"    if {lens}[b] < 0 or {lens}[b] > {v}_T:")
        lw.emit(f"        raise ValueError(\"node '{node.name}': sequence_lens out of [0, T]\")")
        lw.emit(f"{v}_lens = {lens}.copy()")
    else:
        lw.emit(f"{v}_lens = np.full({v}_N, {v}_T, dtype=np.int64)")
    slots = ["h", "c"] if node.op is Op.LSTM else ["h"]
    svars = []
    for k, slot in enumerate(slots):
        src = ins[2 + k]
        st = StateSlot(node.name, slot, _source_kind(lw, src), src, bf)
        st.flag = len(lw.states)
        st.arg = f"st{st.flag}"
        lw.states.append(st)
        s = f"{v}_{slot}"
        size = sizes[slot]
        lw.emit(f"{s} = np.zeros(({n_dir}, {v}_N, {size}), dtype=np.float32)")
        lw.emit(f"if flags[{st.flag}] == 1:")
        lw.emit(f"    if {st.arg}.shape[0] != {n_dir} or {st.arg}.shape[1] != {v}_N:")
        lw.emit(f"        raise ValueError(\"stream: carried state of node '{node.name}' has "
                f"another batch size; call reset() to change batch\")")
        lw.emit(f"    {s}[:] = {st.arg}")
        if st.source != "none":
            sv = lw.value(src)
            d0, d1 = (1, 0) if bf else (0, 1)
            lw.emit(f"elif flags[{st.flag}] == 0:")
            lw.emit(f"    if {sv}.shape[{d0}] != {n_dir} or {sv}.shape[{d1}] != {v}_N:")
            lw.emit(f"        raise ValueError(\"node '{node.name}': initial state shape does "
                    f"not match the batch\")")
            lw.emit(f"    {s}[:] = {sv}.transpose((1, 0, 2))" if bf else f"    {s}[:] = {sv}")
        lw.emit(f"{st.arg}_out = {s}")
        svars.append(s)
    p = kernel.out_size
    g = N_GATES[node.op] * hidden
    wx = lw.pack("wf", np.zeros((g, 0), np.float32), key=("wx_shape", g))
    y = f"{v}_y"
    if n_dir == 1:
        lw.emit(f"{y} = np.empty(({v}_T, 1, {v}_N, {p}), dtype=np.float32)")
    else:
        lw.emit(f"{y} = np.empty(({v}_T, 2, {v}_N, {p}), dtype=np.float32)")
    for d in range(n_dir):
        wxp = lw.pack("wf", to_panels(kernel.w_x[d]))
        xp = f"{v}_x{d}"
        lw.emit(f"{xp} = P.project_panels({x}, {wxp})")
        yd = f"{v}_y{d}"
        if n_dir == 1:
            lw.emit(f"{yd} = {y}.reshape(({v}_T, {v}_N, {p}))")
        else:
            lw.emit(f"{yd} = np.empty(({v}_T, {v}_N, {p}), dtype=np.float32)")
        w = _weights(lw, node.op, kernel, d)
        parts = [p.strip() for p in w.split(",")]
        lw.emit(CALLS[node.op].format(x=xp, wx=wx, w=w, lens=f"{v}_lens", s0=svars[0],
                                      s1=svars[1] if len(svars) > 1 else "", d=d, y=yd,
                                      w_h=", ".join(parts[:2]), aux=parts[-3], ip=parts[-2],
                                      fp=parts[-1]))
        if n_dir == 2:
            lw.emit(f"{y}[:, {d}] = {yd}")
    outs = list(node.outputs) + [""] * 3
    if outs[0]:
        lw.bind(outs[0], _copy_swap4(lw, y) if bf else y)
    for k, slot in enumerate(slots):
        name = outs[1 + k]
        if name:
            lw.bind(name, _copy_swap01(lw, svars[k], 3) if bf else _copy(lw, svars[k]))


def _copy(lw: Lowering, x: str) -> str:
    y = lw.fresh()
    lw.emit(f"{y} = {x}.copy()")
    return y


def _copy_swap4(lw: Lowering, y: str) -> str:
    """[T, D, N, P] -> batch-first [N, T, D, P], one copy."""
    out = lw.fresh()
    d = lw.dims(y, 4)
    dims = [d[2], d[0], d[1], d[3]]
    lw.emit(f"{out} = np.empty({lw.tup(dims)}, dtype=np.float32)")
    lw.loop_nest(dims, [f"{out}[i0, i1, i2, i3] = {y}[i1, i2, i0, i3]"])
    return out
