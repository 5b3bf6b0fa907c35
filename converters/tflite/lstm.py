"""Handlers for the fused LSTM ops: UNIDIRECTIONAL_SEQUENCE_LSTM, BIDIRECTIONAL_SEQUENCE_LSTM
and LSTM (full kernel, one step). Each becomes one edgeseq LSTM node plus layout glue."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgeseq.graph import scale_name
from edgeseq.ops import Op

from edgeseq.converters.tflite.context import Context, OpView, Unsupported, act_name, handler
from edgeseq.converters.tflite.slots import (BIASES, INPUT_WEIGHTS, LAYER_NORMS, PEEPHOLES,
                                             RECURRENT_WEIGHTS, LstmSlot as S, bidi_aux_index,
                                             bidi_index)

# TFLite applies its fused activation to the cell input (g) and to the cell output (h).
# NOTE: NONE is refused: TFLite's float kernel then leaves the buffer for act(c) unwritten
# (ApplyActivationToVector returns early), so its outputs are not defined (measured: 0.7 off
# any identity/tanh/sigmoid combination).
_G_ACT = {4: "tanh", 1: "relu"}   # TANH, RELU


@dataclass
class Weight:
    """A stacked weight: float32, or int8 with one float32 scale per row."""
    arr: np.ndarray
    scale: np.ndarray | None = None

    def dequantized(self) -> "Weight":
        if self.scale is None:
            return self
        return Weight((self.arr.astype(np.float64) * self.scale[:, None]).astype(np.float32))


@dataclass
class Cell:
    """One direction's weights in edgeseq layout (gates i, f, c, o)."""
    w_x: Weight
    w_h: Weight
    b: np.ndarray
    peephole: np.ndarray | None
    layer_norm: np.ndarray | None
    w_proj: Weight | None
    b_proj: np.ndarray | None
    cifg: bool
    n_cell: int
    n_output: int
    n_input: int


def _int8_rows(ctx: Context, idx: int, rows: int) -> np.ndarray | None:
    """Per-row scales when tensor idx is a symmetric int8 weight (per tensor or per row)."""
    q = ctx.quant(idx)
    raw = ctx.raw(idx)
    if q is None or raw is None or raw.dtype != np.int8 or np.any(q.zero_point != 0):
        return None
    if q.per_channel:
        if q.axis != 0 or q.scale.size != rows:
            return None
        return q.scale.astype(np.float32)
    return np.full(rows, q.scale[0], np.float32)


def _gate_block(ctx: Context, idxs: list[int], shape_of: Callable[[int], tuple], what: str) -> Weight:
    """Stack per-gate tensors (absent gates as zero rows) into one Weight, int8 when every
    present gate is a symmetric int8 tensor, float32 otherwise."""
    present = [i for i in idxs if i >= 0]
    shape = shape_of(present[0])
    for i in present:
        if not ctx.is_const(i):
            raise Unsupported(f"{what}: tensor {i} '{ctx.tname(i)}' must be a constant")
        if shape_of(i) != shape:
            raise Unsupported(f"{what}: gate tensors have different shapes "
                              f"{[shape_of(j) for j in present]}")
    rows = shape[0]
    scales = [_int8_rows(ctx, i, rows) for i in present]
    if all(s is not None for s in scales):
        blocks, sc = [], []
        for i in idxs:
            if i < 0:
                blocks.append(np.zeros(shape, np.int8))
                sc.append(np.ones(rows, np.float32))   # ignored rows of the derived gate
            else:
                blocks.append(ctx.raw(i))
                sc.append(_int8_rows(ctx, i, rows))
        return Weight(np.concatenate(blocks).astype(np.int8), np.concatenate(sc))
    blocks = [np.zeros(shape, np.float32) if i < 0 else ctx.real(i).astype(np.float32) for i in idxs]
    return Weight(np.concatenate(blocks))


def read_cell(ctx: Context, at: Callable[[S], int], diagonal: bool = False) -> Cell:
    """Read one cell's operands; `at(slot)` gives the operator input index (-1 if absent)."""
    label = ctx.current.label if ctx.current else "LSTM"
    missing = [s.name for s in (S.INPUT_TO_FORGET_WEIGHTS, S.INPUT_TO_CELL_WEIGHTS,
                                S.INPUT_TO_OUTPUT_WEIGHTS, S.RECURRENT_TO_FORGET_WEIGHTS,
                                S.RECURRENT_TO_CELL_WEIGHTS, S.RECURRENT_TO_OUTPUT_WEIGHTS,
                                S.FORGET_GATE_BIAS, S.CELL_GATE_BIAS, S.OUTPUT_GATE_BIAS)
               if at(s) < 0]
    if missing:
        raise Unsupported(f"required LSTM operands are absent: {missing}")
    cifg = at(S.INPUT_TO_INPUT_WEIGHTS) < 0
    if cifg != (at(S.RECURRENT_TO_INPUT_WEIGHTS) < 0):
        raise Unsupported("input-gate weights: exactly one of INPUT_TO_INPUT_WEIGHTS and "
                          "RECURRENT_TO_INPUT_WEIGHTS is present (CIFG needs both absent)")
    n_cell, n_input = ctx.shape(at(S.INPUT_TO_FORGET_WEIGHTS))
    w_x = _gate_block(ctx, [at(s) for s in INPUT_WEIGHTS], ctx.shape, "input weights")
    if diagonal:
        # diagonal_recurrent_tensors: each recurrent weight is the diagonal [n_cell]
        diag = [-1 if at(s) < 0 else at(s) for s in RECURRENT_WEIGHTS]
        w_h = Weight(np.concatenate([np.zeros((n_cell, n_cell), np.float32) if i < 0
                                     else np.diag(ctx.real(i)).astype(np.float32) for i in diag]))
        n_output = n_cell
    else:
        w_h = _gate_block(ctx, [at(s) for s in RECURRENT_WEIGHTS], ctx.shape, "recurrent weights")
        n_output = ctx.shape(at(S.RECURRENT_TO_FORGET_WEIGHTS))[1]

    def vec(idx: int, n: int, what: str) -> np.ndarray:
        if idx < 0:
            return np.zeros(n, np.float32)
        v = ctx.real(idx)
        if v is None:
            raise Unsupported(f"{what}: tensor {idx} '{ctx.tname(idx)}' must be a constant")
        if v.shape != (n,):
            raise Unsupported(f"{what}: expected shape ({n},), got {v.shape}")
        return v.astype(np.float32)

    b = np.concatenate([vec(at(s), n_cell, s.name) for s in BIASES])
    peep_present = [at(s) >= 0 for s in PEEPHOLES]
    peephole = None
    if any(peep_present):
        want = [not cifg, True, True]
        if peep_present != want:
            raise Unsupported(f"peephole operands present {dict(zip([s.name for s in PEEPHOLES], peep_present))}"
                              f"; expected {'f, o (CIFG)' if cifg else 'i, f, o'}")
        peephole = np.stack([vec(at(s), n_cell, s.name) for s in PEEPHOLES])
    layer_norm = None
    ln_present = [at(s) >= 0 for s in LAYER_NORMS]
    if any(ln_present):
        want = [not cifg, True, True, True]
        if ln_present != want:
            raise Unsupported(f"layer-norm operands present {ln_present}; expected {want}")
        layer_norm = np.stack([vec(at(s), n_cell, s.name) for s in LAYER_NORMS])
    w_proj = b_proj = None
    if at(S.PROJECTION_WEIGHTS) >= 0:
        p = at(S.PROJECTION_WEIGHTS)
        if ctx.shape(p) != (n_output, n_cell):
            raise Unsupported(f"projection weights: expected ({n_output}, {n_cell}), got {ctx.shape(p)}")
        w_proj = _gate_block(ctx, [p], ctx.shape, "projection weights")
        if at(S.PROJECTION_BIAS) >= 0:
            b_proj = vec(at(S.PROJECTION_BIAS), n_output, "PROJECTION_BIAS")
    elif at(S.PROJECTION_BIAS) >= 0:
        raise Unsupported("PROJECTION_BIAS given without PROJECTION_WEIGHTS")
    elif n_output != n_cell:
        raise Unsupported(f"recurrent weights have {n_output} columns but n_cell is {n_cell} "
                          f"and there is no projection")
    if tuple(w_x.arr.shape) != (4 * n_cell, n_input):
        raise Unsupported(f"{label}: input weights do not stack to ({4 * n_cell}, {n_input})")
    return Cell(w_x, w_h, b, peephole, layer_norm, w_proj, b_proj, cifg, n_cell, n_output, n_input)


def _same_structure(cells: list[Cell]) -> bool:
    a = cells[0]
    return all((c.n_cell, c.n_output, c.n_input, c.cifg, c.peephole is None, c.layer_norm is None,
                c.w_proj is None, c.b_proj is None) ==
               (a.n_cell, a.n_output, a.n_input, a.cifg, a.peephole is None, a.layer_norm is None,
                a.w_proj is None, a.b_proj is None) for c in cells)


def _stack(ws: list[Weight]) -> Weight:
    """[D, rows, cols]; int8 only when every direction is int8."""
    if all(w.scale is not None for w in ws):
        return Weight(np.stack([w.arr for w in ws]), np.stack([w.scale for w in ws]))
    return Weight(np.stack([w.dequantized().arr for w in ws]))


def lstm_attrs(opts: OpView, cells: list[Cell], direction: str, batch_first: bool) -> dict:
    act = opts.option("fusedActivationFunction", 0)
    if act not in _G_ACT:
        raise Unsupported(f"fused activation {act_name(act)} is not supported for LSTM; "
                          f"supported: {sorted(act_name(a) for a in _G_ACT)}")
    c = cells[0]
    g = _G_ACT[act]
    return dict(hidden_size=c.n_cell, proj_size=c.n_output if c.w_proj is not None else 0,
                direction=direction, batch_first=batch_first,
                cell_clip=float(opts.option("cellClip", 0.0) or 0.0),
                proj_clip=float(opts.option("projClip", 0.0) or 0.0) if c.w_proj is not None else 0.0,
                coupled_gate="input" if c.cifg else "none",
                activations=("sigmoid", g, g) * len(cells))


def _note_hybrid(ctx: Context, cells: list[Cell]) -> None:
    """Record a hybrid op: int8 weights kept int8 and float activations (full-integer files
    read int8 activations with static scales: not hybrid)."""
    op = ctx.current
    kept = [w for c in cells for w in (c.w_x, c.w_h, c.w_proj) if w is not None]
    if op is None or not any(w.scale is not None for w in kept) or \
            ctx.tensor(op.input(S.INPUT)).type != 0:       # FLOAT32
        return
    ctx.hybrid.append((op.label, bool(op.option("asymmetricQuantizeInputs", False))))


def emit_lstm(ctx: Context, x: str, cells: list[Cell], attrs: dict, init: tuple[str, str] = ("", ""),
              outputs: tuple[str, str, str] | None = None) -> str:
    """One edgeseq LSTM node over `cells` (one per direction); returns the name of y."""
    if not _same_structure(cells):
        raise Unsupported("forward and backward cells differ in size or features; edgeseq's "
                          "bidirectional LSTM needs both directions alike")
    base = ctx.tmp("lstm")
    weights: dict[str, str] = {}

    def put(slot: str, w):
        if w is None:
            return
        if isinstance(w, Weight):
            weights[slot] = ctx.constant(f"{base}.{slot}", w.arr)
            if w.scale is not None:
                name = scale_name(weights[slot])
                ctx.constants[name] = np.ascontiguousarray(w.scale, np.float32)
                ctx.used.add(name)
        else:
            weights[slot] = ctx.constant(f"{base}.{slot}", np.asarray(w, np.float32))

    put("w_x", _stack([c.w_x for c in cells]))
    put("w_h", _stack([c.w_h for c in cells]))
    put("b", np.stack([c.b for c in cells]))
    if cells[0].peephole is not None:
        put("peephole", np.stack([c.peephole for c in cells]))
    if cells[0].layer_norm is not None:
        put("layer_norm", np.stack([c.layer_norm for c in cells]))
    if cells[0].w_proj is not None:
        put("w_proj", _stack([c.w_proj for c in cells]))
    if cells[0].b_proj is not None:
        put("b_proj", np.stack([c.b_proj for c in cells]))
    _note_hybrid(ctx, cells)
    y = outputs[0] if outputs else ctx.tmp("y")
    outs = list(outputs) if outputs else [y]
    ins = [x, ""] + list(init)
    while ins and ins[-1] == "":
        ins.pop()
    ctx.emit(Op.LSTM, ins, outs, weights, **attrs)
    return y


def initial_states(ctx: Context, pairs: list[tuple[int, int]], batch_first: bool, n_batch: int,
                   cells: list[Cell]) -> tuple[str, str]:
    """IR initial_h / initial_c from the TFLite state operands, one (h, c) pair per direction.

    Variable state tensors start at zero (TFLite refuses variables with data), so they become
    absent inputs; constant states become constants; a state fed as a graph input (the older
    form) becomes an initial-state input."""
    out = []
    # NOTE: the TF 2.21 converter marks a state fed by a graph input (Keras initial_state) as
    # a variable too; it is the input all the same (was dropped: 0.18 off the interpreter)
    graph_inputs = {int(i) for i in (ctx.sub.inputs if ctx.sub.inputs is not None else [])}
    for which, size in ((0, cells[0].n_output), (1, cells[0].n_cell)):
        idxs = [p[which] for p in pairs]
        if all(i >= 0 and (not ctx.tensor(i).isVariable or i in graph_inputs) and
               not ctx.is_const(i) for i in idxs) and len(idxs) == 1:
            # a state fed from outside (older models): [N, P] -> [1, N, P] or [N, 1, P]
            name = ctx.value(idxs[0])
            u = ctx.tmp("initial_state")
            ctx.emit(Op.UNSQUEEZE, [name], [u], axes=(1 if batch_first else 0,))
            out.append(u)
            continue
        arrs = []
        for i in idxs:
            if i >= 0 and not ctx.tensor(i).isVariable and not ctx.is_const(i):
                raise Unsupported("a bidirectional LSTM whose states are graph inputs is not supported")
            v = ctx.real(i) if i >= 0 else None
            arrs.append(np.zeros((n_batch, size), np.float32) if v is None else
                        np.broadcast_to(v.reshape(-1, size), (n_batch, size)).astype(np.float32))
        if all(not np.any(a) for a in arrs):
            out.append("")      # zeros: the IR default
            continue
        st = np.stack(arrs, axis=1 if batch_first else 0)
        out.append(ctx.constant(ctx.tmp("initial_state"), st))
    return out[0], out[1]


def _diag(op: OpView) -> bool:
    return bool(op.option("diagonalRecurrentTensors", False))


@handler("UNIDIRECTIONAL_SEQUENCE_LSTM", max_version=4)
def unidirectional(ctx: Context, op: OpView) -> None:
    at = lambda s: op.input(int(s))  # noqa: E731
    cell = read_cell(ctx, at, _diag(op))
    time_major = bool(op.option("timeMajor", False))
    attrs = lstm_attrs(op, [cell], "forward", not time_major)
    x = ctx.value(op.input(S.INPUT))
    n_batch = ctx.shape(op.input(S.INPUT))[0 if not time_major else 1]
    init = initial_states(ctx, [(at(S.OUTPUT_STATE), at(S.CELL_STATE))], not time_major, n_batch, [cell])
    y = emit_lstm(ctx, x, [cell], attrs, init)
    # y: [T, 1, N, P] (time-major) or [N, T, 1, P] -> TFLite's [T, N, P] / [N, T, P]
    ctx.emit(Op.SQUEEZE, [y], [ctx.out(op.outputs[0])], axes=(1 if time_major else 2,))


@handler("LSTM", max_version=4)
def lstm_step(ctx: Context, op: OpView) -> None:
    if op.option("kernelType", 0) != 0:
        raise Unsupported("the BASIC LSTM kernel (kernel_type=BASIC, 5 concatenated operands) "
                          "is not supported; only the FULL kernel")
    at = lambda s: op.input(int(s))  # noqa: E731
    cell = read_cell(ctx, at)
    attrs = lstm_attrs(op, [cell], "forward", False)
    x_idx = op.input(S.INPUT)
    if len(ctx.shape(x_idx)) != 2:
        raise Unsupported(f"LSTM input: expected rank 2 [n_batch, n_input], got {ctx.shape(x_idx)}")
    n_batch = ctx.shape(x_idx)[0]
    # one step: x [N, I] -> [1, N, I]; the state operands are the initial state
    x3 = ctx.tmp("x")
    ctx.emit(Op.UNSQUEEZE, [ctx.value(x_idx)], [x3], axes=(0,))
    init = initial_states(ctx, [(at(S.OUTPUT_STATE), at(S.CELL_STATE))], False, n_batch, [cell])
    outs = op.outputs
    # older models: (scratch, output_state, cell_state, output); newer: (output,)
    y_idx = outs[-1]
    want_states = len(outs) == 4
    y, yh, yc = ctx.tmp("y"), ctx.tmp("y_h") if want_states else "", ctx.tmp("y_c") if want_states else ""
    emit_lstm(ctx, x3, [cell], attrs, init, (y, yh, yc) if want_states else (y,))
    ctx.emit(Op.SQUEEZE, [y], [ctx.out(y_idx)], axes=(0, 1))
    if want_states:
        ctx.emit(Op.SQUEEZE, [yh], [ctx.out(outs[1])], axes=(0,))
        ctx.emit(Op.SQUEEZE, [yc], [ctx.out(outs[2])], axes=(0,))


@handler("BIDIRECTIONAL_SEQUENCE_LSTM", max_version=3)
def bidirectional(ctx: Context, op: OpView) -> None:
    cells = [read_cell(ctx, lambda s, bw=bw: op.input(bidi_index(s, bw)) if s <= S.CELL_STATE else -1)
             for bw in (False, True)]
    time_major = bool(op.option("timeMajor", True))
    merge = bool(op.option("mergeOutputs", False))
    x_idx = op.input(0)
    n_batch = ctx.shape(x_idx)[1 if time_major else 0]
    x = ctx.value(x_idx)
    aux_idx = op.input(39)
    aux_w = [[op.input(bidi_aux_index(g, bw)) for g in range(4)] for bw in (False, True)]
    has_aux_w = any(i >= 0 for ws in aux_w for i in ws)
    pairs = [(op.input(bidi_index(S.OUTPUT_STATE, bw)), op.input(bidi_index(S.CELL_STATE, bw)))
             for bw in (False, True)]
    if aux_idx >= 0 and has_aux_w:
        # both cells read [x, aux]: concatenate features and the weight columns
        for cell, ws in zip(cells, aux_w):
            aux = _gate_block(ctx, ws, ctx.shape, "aux input weights")
            if aux.arr.shape[0] != cell.w_x.arr.shape[0]:
                raise Unsupported("aux input weights do not match the input weights' rows")
            if cell.w_x.scale is not None and aux.scale is not None and \
                    np.array_equal(cell.w_x.scale, aux.scale):
                cell.w_x = Weight(np.concatenate([cell.w_x.arr, aux.arr], 1), cell.w_x.scale)
            else:
                cell.w_x = Weight(np.concatenate([cell.w_x.dequantized().arr,
                                                  aux.dequantized().arr], 1))
            cell.n_input = cell.w_x.arr.shape[1]
        xa = ctx.tmp("x_aux")
        ctx.emit(Op.CONCAT, [x, ctx.value(aux_idx)], [xa], axis=2)
        x = xa
    if aux_idx >= 0 and not has_aux_w:
        # cross-linking: the backward cell reads the aux input instead of x
        ys = []
        for d, (cell, src, direction) in enumerate(zip(cells, (x, ctx.value(aux_idx)),
                                                       ("forward", "reverse"))):
            attrs = lstm_attrs(op, [cell], direction, not time_major)
            init = initial_states(ctx, [pairs[d]], not time_major, n_batch, [cell])
            ys.append(emit_lstm(ctx, src, [cell], attrs, init))
        y = ctx.tmp("y")
        ctx.emit(Op.CONCAT, ys, [y], axis=1 if time_major else 2)
    else:
        attrs = lstm_attrs(op, cells, "bidirectional", not time_major)
        init = initial_states(ctx, pairs, not time_major, n_batch, cells)
        y = emit_lstm(ctx, x, cells, attrs, init)
    dir_axis = 1 if time_major else 2
    if merge:
        # [T, 2, N, P] -> [T, N, 2, P] -> [T, N, 2P];  [N, T, 2, P] -> [N, T, 2P]
        src = y
        if time_major:
            src = ctx.tmp("y_tnd")
            ctx.emit(Op.TRANSPOSE, [y], [src], perm=(0, 2, 1, 3))
        ctx.emit(Op.RESHAPE, [src], [ctx.out(op.outputs[0])], shape=(0, 0, -1))
    else:
        halves = [ctx.tmp("y_fw"), ctx.tmp("y_bw")]
        ctx.emit(Op.SPLIT, [y], halves, axis=dir_axis, split=(1, 1))
        for half, out_idx in zip(halves, op.outputs[:2]):
            ctx.emit(Op.SQUEEZE, [half], [ctx.out(out_idx)], axes=(dir_axis,))
