"""Emitter of LSTM/GRU/RNN nodes: layout to time-major, initial states (carried, given or
zero), the input projection for all steps through the panel kernel, then the existing njit
sequence kernel per direction. This module is the only place that reads the dense kernel
families' prepared weights and spells the sequence kernels' signatures; other kernel
families (registered with `context.kernel_emitter`) reuse its frame, `emit_sequence`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgeseq.graph import Node
from edgeseq.ops import Op, num_directions
from edgeseq.runtime.codegen.context import (IMPORT_LINES, KERNEL_EMITTERS, Lowering,
                                             StateSlot, Unsupported, emitter)
from edgeseq.runtime.kernels import operands as cell
from edgeseq.runtime.kernels.panels import to_whole_panels

IMPORT_LINES.extend((
    "from edgeseq.runtime.kernels import gru as GRU",
    "from edgeseq.runtime.kernels import gru_plain as GRUP",
    "from edgeseq.runtime.kernels import lstm as LSTM",
    "from edgeseq.runtime.kernels import rnn as RNN",
))


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


# op -> (kernel entry, format of its arguments: x, w_x, weights, lens, states, y); the
# entries' signatures are in kernels/pointer_calls.py, the call is spelled by `lw.call`
CALLS = {
    Op.LSTM: ("lstm_sequence", "{x}, {wx}, np.int64(1), {w}, {lens}, {s0}[{d}], {s1}[{d}], {y}"),
    Op.GRU: ("gru_sequence", "{x}, {wx}, np.int64(1), {w}, {lens}, {s0}[{d}], {y}"),
    Op.RNN: ("rnn_sequence", "{x}, {wx}, np.int64(1), {w}, {lens}, {s0}[{d}], {y}"),
}
N_GATES = {Op.LSTM: 4, Op.GRU: 3, Op.RNN: 1}
# the default cell over full-length sequences (no sequence_lens input): one fused pass per
# step, and a much smaller call tree for Numba to compile into the generated function
# (a generated LSTM graph took ~5x longer to compile through the general _lstm_sequence)
PLAIN_CALLS = {
    # the flags are read from the packed operands by their named slots (kernels/operands.py)
    Op.LSTM: ("lstm_plain_sequence", "{x}, {w_h}, {aux}, {ip}[%d], ({ip}[%d] != 0), {t_len}, "
              "{s0}[{d}], {s1}[{d}], {y}" % (cell.LSTM_PEEPHOLE, cell.LSTM_REVERSE)),
    Op.GRU: ("gru_plain_sequence", "{x}, {w_h}, {aux}, {ip}[%d], ({ip}[%d] != 0), {t_len}, "
             "{s0}[{d}], {y}" % (cell.GRU_LINEAR_BEFORE_RESET, cell.GRU_REVERSE)),
}
PLAIN_ACTIVATIONS = {Op.LSTM: ("sigmoid", "tanh", "tanh"), Op.GRU: ("sigmoid", "tanh")}


def _plain(node: Node, has_lens: bool) -> bool:
    """The node's cell is the default one (LSTM peepholes allowed) and runs over full
    lengths."""
    a = node.attrs
    acts = PLAIN_ACTIVATIONS.get(node.op)
    if acts is None or has_lens or a.get("gate_clip", 0) > 0:
        return False
    k = len(acts)
    if any(tuple(a["activations"][i:i + k]) != acts for i in range(0, len(a["activations"]), k)):
        return False
    if node.op is Op.LSTM:
        return (a["coupled_gate"] == "none" and a["cell_clip"] <= 0
                and not (a.get("proj_size", 0)) and not any(
                    s in node.weights for s in ("layer_norm", "w_proj")))
    return True


def _copy_swap01(lw: Lowering, x: str, rank: int) -> str:
    """A C-contiguous copy of x with axes 0 and 1 swapped."""
    y = lw.fresh()
    if rank == 3:
        lw.emit(f"{y} = " + lw.call("permute3_ws", x, "np.int64(1)", "np.int64(0)",
                                    "np.int64(2)", "ws", "wsp"))
        return y
    d = lw.dims(x, rank)
    dims = [d[1], d[0]] + d[2:]
    idx = [f"i{k}" for k in range(rank)]
    src = [idx[1], idx[0]] + idx[2:]
    lw.emit(f"{y} = {lw.empty(dims)}")
    lw.loop_nest(dims, [f"{y}[{', '.join(idx)}] = {x}[{', '.join(src)}]"])
    return y


def _graph_input_index(lw: Lowering, name: str) -> int | None:
    for k, v in enumerate(lw.graph.inputs):
        if v.name == name:
            return k
    return None


def _source_kind(lw: Lowering, name: str) -> str:
    if not name:
        return "none"
    if name in {v.name for v in lw.graph.inputs}:
        return "input"
    return "const" if lw.is_const(name) else "value"


@dataclass
class Frame:
    """What a direction's emission reads (variables of the generated function)."""
    v: str              # prefix of the node's variables ({v}_T, {v}_N, {v}_lens, ...)
    x: str              # the input, time-major [T, N, I]
    lens: str           # int64 [N] lengths (full when the node has none)
    t_len: str          # T
    states: list        # [D, N, size] state variables (h, then c for LSTM)
    y: str              # this direction's output [T, N, P]
    d: int
    has_lens: bool


def kernel_emitter_for(kernel) -> Callable | None:
    """The emitter registered for the kernel's class or the nearest base class of it
    (compressed kernels are registered per weight dtype as subclasses)."""
    for cls in type(kernel).__mro__:
        fn = KERNEL_EMITTERS.get(cls.__name__)
        if fn is not None:
            return fn
    return None


@emitter(Op.LSTM, Op.GRU, Op.RNN)
def _recurrent(lw: Lowering, node: Node) -> None:
    kernel = lw.kernels.get(node.name)
    other = kernel_emitter_for(kernel)
    if other is not None:
        return other(lw, node, kernel)
    want = _dense_kernel_types()[node.op]
    if type(kernel) is not want:
        raise Unsupported(f"kernel {type(kernel).__name__} (compressed or delta weights) is "
                          f"not emitted")
    # NOTE: the plain kernels run every row to T and take no lengths: no full-lengths
    # array then (its kernel was one more compile of a cold start)
    emit_sequence(lw, node, kernel, kernel.w_x[0].shape[1], _dense_direction,
                  full_lengths=not _plain(node, False))


def _dense_direction(lw: Lowering, node: Node, kernel, f: Frame) -> None:
    """Direction f.d of the dense family: the input projection for all steps through the
    panels, then the sequence kernel."""
    d = f.d
    g = N_GATES[node.op] * kernel.hidden
    wx = lw.pack("wf", np.zeros((g, 0), np.float32), key=("wx_shape", g))
    # NOTE: only the panels that hold rows (the interpreter's to_panels pads to 64 rows): a
    # 25-unit GRU's 75 rows in 5 panels, not 8; a 25-unit LSTM's 100 in 7, not 8
    wxp = lw.pack("wf", to_whole_panels(kernel.w_x[d]))
    xp = f"{f.v}_x{d}"
    lw.emit(f"{xp} = {lw.call('project_panels', f.x, wxp)}")
    w = _weights(lw, node.op, kernel, d)
    parts = [p.strip() for p in w.split(",")]
    entry, call = PLAIN_CALLS[node.op] if _plain(node, f.has_lens) else CALLS[node.op]
    w_h = parts[0] if node.op is Op.LSTM else ", ".join(parts[:2])
    s = f.states
    lw.emit(lw.call(entry, call.format(x=xp, wx=wx, w=w, lens=f.lens, s0=s[0],
                                       s1=s[1] if len(s) > 1 else "", d=d, y=f.y,
                                       w_h=w_h, aux=parts[-3], ip=parts[-2],
                                       t_len=f.t_len, fp=parts[-1])))


def emit_sequence(lw: Lowering, node: Node, kernel, n_input: int,
                  direction: Callable[[Lowering, Node, object, Frame], None],
                  full_lengths: bool = True) -> None:
    """The frame of a recurrent node, shared by every kernel family: layout to time-major,
    the input width check, lengths (given or full), the initial states (carried, given or
    zero: one StateSlot each), y [T, D, N, P] with direction(lw, node, kernel, frame)
    emitting each direction's kernel calls, then the outputs and final states in the
    graph's layout. `kernel` needs hidden and out_size. full_lengths=False: a node without
    lengths gets none (frame.lens is "": its direction must not read it)."""
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
    lw.emit(f"if {x}.shape[2] != {n_input}:")
    lw.emit(f"    raise ValueError(\"node '{node.name}': input has the wrong number of features "
            f"(expected {n_input})\")")
    lw.emit(f"{v}_T, {v}_N = {x}.shape[0], {x}.shape[1]")
    if ins[1]:
        lens = lw.value(ins[1])
        # NOTE: an optional graph input left out arrives as an empty dummy; its presence flag
        # (runtime/codegen/__init__.py, `present`) says so, and then every row is full length
        k_in = _graph_input_index(lw, ins[1])
        indent = ""
        if k_in is not None:
            lw.emit(f"if flags[flags.shape[0] - {len(lw.graph.inputs) - k_in}] == 0:")
            lw.emit(f"    {v}_lens = " + lw.call("full_lengths_ws", f"{v}_N", f"{v}_T", "ws", "wsp"))
            lw.emit("else:")
            indent = "    "
        lw.emit(f"{indent}if {lens}.shape[0] != {v}_N:")
        lw.emit(f"{indent}    raise ValueError(\"node '{node.name}': sequence_lens must have one "
                f"value per batch row\")")
        lw.emit(f"{indent}for b in range({v}_N):")
        lw.emit(f"{indent}    if {lens}[b] < 0 or {lens}[b] > {v}_T:")
        lw.emit(f"{indent}        raise ValueError(\"node '{node.name}': sequence_lens out of "
                f"[0, T]\")")
        lw.emit(f"{indent}{v}_lens = " + lw.call("lengths_ws", lens, "ws", "wsp"))
    elif full_lengths:
        lw.emit(f"{v}_lens = " + lw.call("full_lengths_ws", f"{v}_N", f"{v}_T", "ws", "wsp"))
    lens = f"{v}_lens" if ins[1] or full_lengths else ""
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
        given = lw.value(src) if st.source != "none" else st.arg
        lw.emit(f"{s}, {s}_ok = " + lw.call("state3", f"np.int64({n_dir})", f"{v}_N",
                                            f"np.int64({size})", st.arg, given, str(bf),
                                            f"flags[{st.flag}]"))
        lw.emit(f"if not {s}_ok:")
        lw.emit(f"    raise ValueError(\"node '{node.name}': the initial or carried {slot} state "
                f"does not match the batch (a Stream changes batch only after reset())\")")
        lw.emit(f"{st.arg}_out = {s}")
        svars.append(s)
    p = kernel.out_size
    y = f"{v}_y"
    if n_dir == 1:
        # NOTE: a 3-D take and a 4-D view of it (a 4-D take was one more kernel to compile)
        lw.emit(f"{v}_y0 = {lw.empty([f'{v}_T', f'{v}_N', str(p)])}")
        lw.emit(f"{y} = {v}_y0.reshape(({v}_T, 1, {v}_N, {p}))")
    else:
        lw.emit(f"{y} = {lw.empty([f'{v}_T', str(n_dir), f'{v}_N', str(p)])}")
    for d in range(n_dir):
        yd = f"{v}_y{d}"
        if n_dir == 2:
            lw.emit(f"{yd} = {lw.empty([f'{v}_T', f'{v}_N', str(p)])}")
        direction(lw, node, kernel, Frame(v, x, lens, f"{v}_T", svars, yd, d, bool(ins[1])))
        if n_dir == 2:
            lw.emit(lw.call("put_axis1", f"{y}.reshape(({v}_T, 2, {v}_N * {p}))",
                            f"{yd}.reshape(({v}_T, 1, {v}_N * {p}))", str(d)))
    outs = list(node.outputs) + [""] * 3
    if outs[0]:
        lw.bind(outs[0], _copy_swap4(lw, y) if bf else y)
    for k, slot in enumerate(slots):
        name = outs[1 + k]
        # NOTE: a named but unread y_h / y_c (ONNX exports name them) costs no copy
        if name and (lw.readers.get(name) or name in lw.graph_outputs):
            lw.bind(name, _copy_swap01(lw, svars[k], 3) if bf else _copy(lw, svars[k]))


def _copy(lw: Lowering, x: str) -> str:
    y = lw.fresh()
    lw.emit(f"{y} = {x}.copy()")
    lw.owned.add(y)
    return y


def _copy_swap4(lw: Lowering, y: str) -> str:
    """[T, D, N, P] -> batch-first [N, T, D, P], one copy."""
    out = lw.fresh()
    d = lw.dims(y, 4)
    dims = [d[2], d[0], d[1], d[3]]
    lw.emit(f"{out} = {lw.empty(dims)}")
    lw.loop_nest(dims, [f"{out}[i0, i1, i2, i3] = {y}[i1, i2, i0, i3]"])
    return out
