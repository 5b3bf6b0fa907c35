"""Cell patterns in PyTorch's spelling, registered with `edgeseq.converters.loops`.

`nn.GRUCell` (and `nn.GRU`'s formulas, as the TorchScript ONNX exporter writes a GRUCell loop)
orders the gates r, z, n where Keras and ONNX order them z, r, h: the x part W_ih x + b_ih is
split into (r, z, n) and each gate adds its recurrent part (n: r * (W_hn h + b_hn), PyTorch's
only reset form). The lifted node is an ONNX-order GRU with linear_before_reset; like every
pattern, a candidate is kept only when it reproduces the body on a probe (`loops.lift`).
"""
from __future__ import annotations

import numpy as np

from edgeseq.ops import Op

from edgeseq.converters import loops


def _zrh(a: np.ndarray, hs: int) -> np.ndarray:
    """Rows (r, z, n) of a [3H, ...] block reordered to (z, r, n)."""
    return np.concatenate([a[hs:2 * hs], a[:hs], a[2 * hs:]])


@loops.cell("gru_torch")
def _gru_torch(step: loops.Step) -> list[loops.Candidate]:
    """PyTorch GRU: x-part split into r, z, n; r and z add a recurrent part affine in h; n's
    sum is affine in h once r is forced to one."""
    if len(step.state_keys) != 1:
        raise loops.NoMatch("a GRU body carries one state")
    hs = step.state_sizes[0]
    out = []
    for sp in loops.split_ops(step, 3):
        data = [k for k in sp.inputs if k not in loops._CONST_AXES(step, sp)][0]
        try:
            ax = loops.affine(step, data, vary=("x",))
        except loops.NoMatch:
            continue
        sums = [loops._gate_sum(step, sp.outputs[k]) for k in range(3)]
        if ax["b"].shape[0] != 3 * hs or None in sums:
            continue
        try:
            r, z = (loops.affine(step, sums[k], vary=("h",)) for k in range(2))
            # r's pre-activation at +40 saturates the sigmoid: r = 1
            big = np.full((step.n_batch, hs), 40.0)
            n = loops.affine(step, sums[2], over={sums[0]: big}, vary=("h",))
        except loops.NoMatch:
            continue
        w_h = np.concatenate([z["h"], r["h"], n["h"]])
        b_h = np.concatenate([z["b"], r["b"], n["b"]]) - _zrh(ax["b"], hs)
        out.append(loops.Candidate(
            Op.GRU, {"hidden_size": hs, "linear_before_reset": True},
            {"w_x": _zrh(ax["x"], hs), "w_h": w_h, "b_x": _zrh(ax["b"], hs), "b_h": b_h},
            0, None, "GRU(PyTorch gate order)"))
    if not out:
        raise loops.NoMatch("no 3-way split of an x_t pre-activation into r, z, n gates")
    return out
