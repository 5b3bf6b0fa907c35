"""PyTorch ConvLSTM cells (1-D and 2-D) stepped by a Python loop -> one ConvLSTM node per step.

There is no ConvLSTM module in PyTorch; the common one (a `conv` Conv1d/Conv2d over [x, h]
giving 4H channels, split into gates, `forward(x, (h, c)) -> (h, c)`, as ndrplz's
ConvLSTM_pytorch writes it) is written by each user. While `from_module` exports,
`conv_lstm_cells()` finds the submodules that *behave* like that cell: a `conv` Conv1d/Conv2d
of 4H outputs over C + H inputs, stride 1, 'same' padding, whose forward matches the ConvLSTM
equations on random data with gates in the order (i, f, o, g) or (i, f, g, o), with the
Hadamard peepholes of Shi et al. when the cell holds parameters named as in PEEPHOLE_NAMES.
Each such cell's forward is routed through the custom op `edgeseq::conv_lstm_cell` for the
export; its handler emits a one-step ConvLSTM node (the loop is unrolled, as for nn.LSTMCell).
A cell that does not match is left alone (its ops are then converted one by one, or refused).
"""
from __future__ import annotations

import contextlib
import inspect

import numpy as np

from edgeseq.converters.torch._lowering import V, handles
from edgeseq.errors import UnsupportedModelError
from edgeseq.ops import Op

# gate orders a cell may split its conv output into, and where each IR gate (i, f, c, o) sits
ORDERS = {"ifog": (0, 1, 3, 2), "ifgo": (0, 1, 2, 3)}
# peephole parameters (i, f, o) a cell may hold, shaped [1, H, *L] or [H, *L]: Hadamard with
# c_{t-1} for i and f, with c_t for o
PEEPHOLE_NAMES = (("w_ci", "w_cf", "w_co"), ("Wci", "Wcf", "Wco"))
_OP = None


def _cell_math(torch, x, h, c, w, b, pi, pf, po, hidden: int, pad: list, order: str):
    """The ConvLSTM step of a cell with gate order `order` (the eager meaning of the op)."""
    conv = torch.nn.functional.conv2d if w.dim() == 4 else torch.nn.functional.conv1d
    z = conv(torch.cat([x, h], dim=1), w, b, padding=tuple(pad))
    parts = torch.split(z, hidden, dim=1)
    i, f, g, o = (parts[k] for k in ORDERS[order])
    if pi is not None:
        i, f = i + pi * c, f + pf * c
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    if po is not None:
        o = o + po * c_new
    return torch.sigmoid(o) * torch.tanh(c_new), c_new


def _custom_op(torch):
    global _OP
    if _OP is not None:
        return _OP
    if hasattr(torch.ops, "edgeseq") and hasattr(torch.ops.edgeseq, "conv_lstm_cell"):
        _OP = torch.ops.edgeseq.conv_lstm_cell
        return _OP

    @torch.library.custom_op(
        "edgeseq::conv_lstm_cell", mutates_args=(),
        schema="(Tensor x, Tensor h, Tensor c, Tensor w, Tensor? b, Tensor? pi, Tensor? pf, "
               "Tensor? po, int hidden, int[] pad, str order) -> (Tensor, Tensor)")
    def conv_lstm_cell(x, h, c, w, b, pi, pf, po, hidden, pad, order):
        return _cell_math(torch, x, h, c, w, b, pi, pf, po, hidden, pad, order)

    @conv_lstm_cell.register_fake
    def _(x, h, c, w, b, pi, pf, po, hidden, pad, order):
        return torch.empty_like(h), torch.empty_like(c)

    _OP = conv_lstm_cell
    return _OP


def _peepholes(torch, cell, hidden: int, n_spatial: int) -> tuple | None:
    """The cell's (i, f, o) peephole parameters if it holds a set named as PEEPHOLE_NAMES, all
    [1, H, *L] or [H, *L] of one spatial size; (None,) * 3 when it holds none; None when a set
    is there but shaped otherwise (then the cell is not taken)."""
    for names in PEEPHOLE_NAMES:
        ps = [getattr(cell, n, None) for n in names]
        if all(p is None for p in ps):
            continue
        if not all(isinstance(p, torch.Tensor) for p in ps):
            return None
        ps = [p if p.dim() == 2 + n_spatial else p[None] for p in ps]
        if any(p.dim() != 2 + n_spatial or p.shape[:2] != (1, hidden) or p.shape != ps[0].shape
               for p in ps):
            return None
        return tuple(ps)
    return (None,) * 3


def _same(conv) -> bool:
    return isinstance(conv.padding, tuple) and \
        all(2 * p == k - 1 for p, k in zip(conv.padding, conv.kernel_size))


def cell_order(torch, cell) -> tuple | None:
    """(gate order, peepholes) of a module that behaves as a ConvLSTM cell, else None."""
    conv = getattr(cell, "conv", None)
    if not isinstance(conv, (torch.nn.Conv1d, torch.nn.Conv2d)) or conv.out_channels % 4 \
            or conv.groups != 1 or any(s != 1 for s in conv.stride) \
            or any(d != 1 for d in conv.dilation) or conv.padding_mode != "zeros" \
            or not _same(conv):
        return None
    hidden = conv.out_channels // 4
    n_in = conv.in_channels - hidden
    n_spatial = len(conv.kernel_size)
    peep = _peepholes(torch, cell, hidden, n_spatial)
    if n_in < 1 or peep is None:
        return None
    size = tuple(peep[0].shape[2:]) if peep[0] is not None else (5,) * n_spatial
    gen = torch.Generator().manual_seed(0)
    args = [torch.randn((2, k) + size, generator=gen, dtype=conv.weight.dtype)
            for k in (n_in, hidden, hidden)]
    try:
        with torch.no_grad():
            got = cell(args[0], (args[1], args[2]))
            for order in ORDERS:
                want = _cell_math(torch, *args, conv.weight, conv.bias, *peep, hidden,
                                  list(conv.padding), order)
                if all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, want)):
                    return order, peep
    except Exception:  # noqa: BLE001 - any failure means: not this kind of cell
        return None
    return None


@contextlib.contextmanager
def conv_lstm_cells(torch, module):
    """Route every ConvLSTM-cell submodule's forward through edgeseq::conv_lstm_cell."""
    op = None
    patched = []
    for sub in module.modules():
        found = cell_order(torch, sub)
        if found is None:
            continue
        order, peep = found
        op = op or _custom_op(torch)
        conv = sub.conv

        params = list(inspect.signature(sub.forward).parameters)[:2]

        def forward(*args, conv=conv, order=order, peep=peep, sig=inspect.signature(sub.forward),
                    params=params, **kwargs):
            # NOTE: bound by the cell's own signature: ndrplz's loop calls
            # cell(input_tensor=..., cur_state=[h, c])
            bound = sig.bind(*args, **kwargs).arguments
            x, (h, c) = bound[params[0]], bound[params[1]]
            return op(x, h, c, conv.weight, conv.bias, *peep, conv.out_channels // 4,
                      list(conv.padding), order)
        patched.append(sub)
        sub.forward = forward
    try:
        yield
    finally:
        for sub in patched:
            del sub.forward           # back to the class's forward


@handles("edgeseq.conv_lstm_cell.default")
def _conv_lstm_cell(cx, node, x, h, c, w, b, pi, pf, po, hidden, pad, order):
    w = np.asarray(w)
    n_spatial = w.ndim - 2
    if not isinstance(x, V) or x.rank != 2 + n_spatial:
        raise UnsupportedModelError(f"a ConvLSTM cell step needs a batched (N, C, "
                                    f"{n_spatial} spatial) input")
    n_in = x.shape[1]
    rows = np.concatenate([np.arange(hidden) + hidden * ORDERS[order][g] for g in range(4)])
    kernel = w.shape[2:]
    slots = {"w_x": cx.const(w[rows, :n_in][None], "conv_lstm_w_x"),
             "w_h": cx.const(w[rows, n_in:][None], "conv_lstm_w_h")}
    if b is not None:
        slots["b"] = cx.const(np.asarray(b)[rows][None], "conv_lstm_b")
    if pi is not None:
        peep = np.stack([np.asarray(p)[0] for p in (pi, pf, po)])
        slots["peephole"] = cx.const(peep[None], "conv_lstm_peephole")
    pads = tuple(pad) + tuple(k - 1 - p for k, p in zip(kernel, pad))
    st = (1, x.shape[0], hidden) + x.shape[2:]
    x4 = cx.emit1(Op.UNSQUEEZE, [x], node.name + "_x", (1,) + x.shape, axes=(0,))
    h4 = cx.emit1(Op.UNSQUEEZE, [h], node.name + "_h0", st, axes=(0,))
    c4 = cx.emit1(Op.UNSQUEEZE, [c], node.name + "_c0", st, axes=(0,))
    _, y_h, y_c = cx.emit(Op.CONV_LSTM, [x4, None, h4, c4], node.name,
                          [None, st, st], {"hidden_size": hidden, "pads": pads}, slots)
    h_new = cx.emit1(Op.SQUEEZE, [y_h], node.name + "_h", st[1:], axes=(0,))
    c_new = cx.emit1(Op.SQUEEZE, [y_c], node.name + "_c", st[1:], axes=(0,))
    return h_new, c_new
