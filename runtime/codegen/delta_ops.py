"""Emitter of delta recurrent nodes (`runtime.delta` families, docs/design.md "Delta-based
zero skipping") and of dense nodes counted inside a delta run (`runtime.delta_codegen`).

A delta node is the shared recurrent frame (`recurrent_ops.emit_sequence`) plus two slots
carried in and out of the generated function like h and c (few slots: each argument and
result costs the call time):
  delta_state  x_hat, h_hat, m_x, m_h [D, N, size] (`delta.DSTATE_SLOTS`) back to back in
               one flat array; carried (flag 1) or fresh (flag 2: x̂ = 0, m_x = 0, ĥ = h0,
               m_h = W_h h0, as `_Delta.fresh_state` makes it);
  delta_args   (θx, θh) as float64 and the counts as int64 [3] (kept input columns, kept
               recurrent columns, row-steps; accumulated in place), as float32 words.
Each direction then calls the family's own sequence kernel on the family's own operands
(`_Delta.sequence`), so generated code and the interpreter run the same compiled kernel.
"""
from __future__ import annotations

from edgeseq.graph import Node
from edgeseq.runtime.codegen.compressed_ops import MODULES, _operand, _qualified
from edgeseq.runtime.codegen.context import (IMPORT_LINES, Lowering, StateSlot, Unsupported,
                                             kernel_emitter)
from edgeseq.runtime.codegen.recurrent_ops import (Frame, _dense_direction, _dense_kernel_types,
                                                   emit_sequence)
from edgeseq.runtime.delta import ARGS_SLOT as ARGS, DSTATE_SLOTS, STATE_SLOT as STATE

MODULES["edgeseq.runtime.kernels.delta"] = "DK"
IMPORT_LINES.append("from edgeseq.runtime.kernels import delta as DK")


def _slot(lw: Lowering, node: Node, name: str) -> StateSlot:
    """A carried array of the generated function owned by this node (never from the graph)."""
    st = StateSlot(node.name, name, "none", "", False)
    st.flag = len(lw.states)
    st.arg = f"st{st.flag}"
    lw.states.append(st)
    return st


def _args(lw: Lowering, node: Node, v: str) -> tuple[str, str]:
    """(thresholds float64 [2], counts int64 [3]) viewed from the node's ARGS slot."""
    st = _slot(lw, node, ARGS)
    lw.emit(f"{st.arg}_out = {st.arg}")
    lw.emit(f"if {st.arg}.size != 10:")
    lw.emit(f"    raise ValueError(\"node '{node.name}': delta arguments not given\")")
    lw.emit(f"{v}_args = {st.arg}.reshape(10)")
    return f"{v}_args[0:4].view(np.float64)", f"{v}_args[4:10].view(np.int64)"


def _delta_state(lw: Lowering, node: Node, kernel, f: Frame) -> list[str]:
    """The four delta-state variables [D, N, size], C-contiguous views of one flat STATE
    slot [1, 1, N * D * (I + P + Gx + Gh)] (x_hat, h_hat, m_x, m_h back to back): carried,
    else fresh (x̂ = 0, m_x = 0, ĥ = h0, m_h = W_h h0, as `_Delta.fresh_state`)."""
    n_dir, v = kernel.n_dir, f.v
    sizes = kernel.state_sizes()
    st = _slot(lw, node, STATE)
    flat = f"{v}_dflat"
    lw.emit(f"{flat}, {flat}_ok = G.state3(np.int64(1), np.int64(1), "
            f"{v}_N * np.int64({n_dir * sum(sizes)}), {st.arg}, {st.arg}, False, "
            f"flags[{st.flag}])")
    lw.emit(f"if not {flat}_ok:")
    lw.emit(f"    raise ValueError(\"node '{node.name}': the carried delta state does not match "
            f"the batch (a Stream changes batch only after reset())\")")
    lw.emit(f"{st.arg}_out = {flat}")
    out, off = [], "0"
    for name, size in zip(DSTATE_SLOTS, sizes):
        var = f"{v}_{name}"
        end = f"{off} + {v}_N * {n_dir * size}"
        lw.emit(f"{var} = {flat}[0, 0, {off}:{end}].reshape(({n_dir}, {v}_N, {size}))")
        out.append(var)
        off = f"{var}_end"
        lw.emit(f"{off} = {end}")
    lw.emit(f"if flags[{st.flag}] != 1:")
    h, h_hat, m_h = f.states[0], out[1], out[3]
    for d in range(n_dir):
        w_hT = _operand(lw, kernel.whT[d])
        lw.emit(f"    DK.absorb_rows({h}[{d}], {h_hat}[{d}], {w_hT}, {m_h}[{d}], "
                f"np.bool_({bool(kernel.q8[1])}))")
    return out


@kernel_emitter("_Delta")
def _delta(lw: Lowering, node: Node, kernel) -> None:
    made = {}

    def direction(lw: Lowering, node: Node, kernel, f: Frame) -> None:
        if not made:
            made["th"], made["counts"] = _args(lw, node, f.v)
            made["ds"] = _delta_state(lw, node, kernel, f)
        d = f.d
        fn, operands = kernel.sequence(d)
        args = [f.x, *(_operand(lw, o) for o in operands), f.lens,
                *(f"{s}[{d}]" for s in f.states), f.y,
                *(f"{s}[{d}]" for s in made["ds"]), made["th"], made["counts"]]
        lw.emit(f"{_qualified(fn)}({', '.join(args)})")
    emit_sequence(lw, node, kernel, kernel.n_input, direction)


@kernel_emitter("CountedDense")
def _counted_dense(lw: Lowering, node: Node, counted) -> None:
    """The dense node as the dense emitter makes it, plus the statistics' counts of a node
    run densely at θ = (0, 0): every column of every processed row-step kept (as
    `delta_runner._dense_counts`)."""
    dense, delta = counted.dense, counted.delta
    if type(dense) is not _dense_kernel_types()[node.op]:
        raise Unsupported(f"θ = (0, 0) runs kernel {type(dense).__name__} (compressed weights);"
                          f" only the dense family is counted in generated code")

    def direction(lw: Lowering, node: Node, kernel, f: Frame) -> None:
        if f.d == 0:
            _, cnt = _args(lw, node, f.v)
            steps = f"{f.v}_steps"
            lw.emit(f"{steps} = 0")
            lw.emit(f"for b in range({f.v}_N):")
            lw.emit(f"    {steps} += {f.lens}[b]")
            lw.emit(f"{steps} *= {delta.n_dir}")
            lw.emit(f"{cnt}[0] += {steps} * {delta.n_input}")
            lw.emit(f"{cnt}[1] += {steps} * {delta.out_size}")
            lw.emit(f"{cnt}[2] += {steps}")
        _dense_direction(lw, node, kernel, f)
    emit_sequence(lw, node, dense, dense.w_x[0].shape[1], direction)
