"""Emitter of delta recurrent nodes (`runtime.delta` families, docs/design.md "Delta-based
zero skipping") and of dense nodes counted inside a delta run (`runtime.delta_codegen`).

A delta node is the shared recurrent frame (`recurrent_ops.emit_sequence`) plus, per node,
state slots carried in and out of the generated function like h and c:
  x_hat, h_hat, m_x, m_h   the delta state [D, N, size] (`delta.DSTATE_SLOTS`); carried
                           (flag 1) or fresh (x̂ = 0, m_x = 0, ĥ = h0, m_h = W_h h0), as
                           `_Delta.fresh_state` makes it;
  theta                    (θx, θh) float64 [2], travelling as float32 [1, 1, 4] bits;
  counts                   int64 [3] (kept input columns, kept recurrent columns,
                           row-steps), as float32 [1, 1, 6] bits, accumulated in place.
Each direction then calls the family's own sequence kernel on the family's own operands
(`_Delta.sequence`), so generated code and the interpreter run the same compiled kernel.
"""
from __future__ import annotations

import numpy as np

from edgeseq.graph import Node
from edgeseq.runtime.codegen.compressed_ops import MODULES, _operand, _qualified
from edgeseq.runtime.codegen.context import (IMPORT_LINES, Lowering, StateSlot, Unsupported,
                                             kernel_emitter)
from edgeseq.runtime.codegen.recurrent_ops import (Frame, _dense_direction, _dense_kernel_types,
                                                   emit_sequence)
from edgeseq.runtime.delta import DSTATE_SLOTS

MODULES["edgeseq.runtime.kernels.delta"] = "DK"
IMPORT_LINES.append("from edgeseq.runtime.kernels import delta as DK")

# per-call slots beside the delta state: name -> (dtype viewed, values)
THETA, COUNTS = "theta", "counts"
BITS = {THETA: ("float64", 2), COUNTS: ("int64", 3)}


def _slot(lw: Lowering, node: Node, name: str) -> StateSlot:
    """A carried array of the generated function owned by this node (never from the graph)."""
    st = StateSlot(node.name, name, "none", "", False)
    st.flag = len(lw.states)
    st.arg = f"st{st.flag}"
    lw.states.append(st)
    return st


def _bits(lw: Lowering, node: Node, v: str, name: str) -> str:
    """The per-call slot `name` viewed as its real dtype."""
    st = _slot(lw, node, name)
    dtype, n = BITS[name]
    var = f"{v}_{name}"
    words = n * np.dtype(dtype).itemsize // 4
    lw.emit(f"{st.arg}_out = {st.arg}")
    lw.emit(f"if {st.arg}.size != {words}:")
    lw.emit(f"    raise ValueError(\"node '{node.name}': delta {name} not given\")")
    lw.emit(f"{var} = {st.arg}.reshape({words}).view(np.{dtype})")
    return var


def _delta_state(lw: Lowering, node: Node, kernel, f: Frame) -> list[str]:
    """The four delta-state variables [D, N, size]: carried, else fresh from h0."""
    sizes = {"x_hat": kernel.n_input, "h_hat": kernel.out_size, "m_x": kernel._gx(),
             "m_h": kernel._gh()}
    n_dir = kernel.n_dir
    out, flag = [], None
    for name in DSTATE_SLOTS:
        st = _slot(lw, node, name)
        flag = st.flag if flag is None else flag
        var = f"{f.v}_{name}"
        lw.emit(f"{var}, {var}_ok = G.state3(np.int64({n_dir}), {f.v}_N, "
                f"np.int64({sizes[name]}), {st.arg}, {st.arg}, False, flags[{st.flag}])")
        lw.emit(f"if not {var}_ok:")
        lw.emit(f"    raise ValueError(\"node '{node.name}': the carried delta state {name} "
                f"does not match the batch (a Stream changes batch only after reset())\")")
        lw.emit(f"{st.arg}_out = {var}")
        out.append(var)
    # NOTE: the slots are carried together (DeltaStream keeps all four or none)
    lw.emit(f"if flags[{flag}] != 1:")
    h, h_hat, m_h = f.states[0], out[1], out[3]
    for d in range(n_dir):
        w_hT = _operand(lw, kernel.whT[d])
        lw.emit(f"    DK.absorb_rows({h}[{d}], {h_hat}[{d}], {w_hT}, {m_h}[{d}])")
    return out


@kernel_emitter("_Delta")
def _delta(lw: Lowering, node: Node, kernel) -> None:
    made = {}

    def direction(lw: Lowering, node: Node, kernel, f: Frame) -> None:
        if not made:
            made["th"] = _bits(lw, node, f.v, THETA)
            made["counts"] = _bits(lw, node, f.v, COUNTS)
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
            cnt = _bits(lw, node, f.v, COUNTS)
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
