"""PyTorch ConvLSTM cells (1-D) stepped by a Python loop -> one ConvLSTM node per step.

There is no ConvLSTM module in PyTorch; the common one (a `conv` Conv1d over [x, h] giving
4H channels, split into gates, `forward(x, (h, c)) -> (h, c)`) is written by each user. While
`from_module` exports, `conv_lstm_cells()` finds the submodules that *behave* like that cell:
a `conv` Conv1d of 4H outputs over C + H inputs, 'same' padding, whose forward matches the
ConvLSTM equations on random data with gates in the order (i, f, o, g) or (i, f, g, o). Each
such cell's forward is routed through the custom op `edgeseq::conv_lstm_cell` for the export;
its handler emits a one-step ConvLSTM node (the loop is unrolled, as for nn.LSTMCell). A cell
that does not match is left alone (its ops are then converted one by one, or refused).
"""
from __future__ import annotations

import contextlib

import numpy as np

from edgeseq.converters.torch._lowering import V, handles
from edgeseq.errors import UnsupportedModelError
from edgeseq.ops import Op

# gate orders a cell may split its conv output into, and where each IR gate (i, f, c, o) sits
ORDERS = {"ifog": (0, 1, 3, 2), "ifgo": (0, 1, 2, 3)}
_OP = None


def _cell_math(torch, x, h, c, w, b, hidden: int, pad: int, order: str):
    """The ConvLSTM step of a cell with gate order `order` (the eager meaning of the op)."""
    z = torch.nn.functional.conv1d(torch.cat([x, h], dim=1), w, b, padding=pad)
    parts = torch.split(z, hidden, dim=1)
    i, f, g, o = (parts[k] for k in ORDERS[order])
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
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
        schema="(Tensor x, Tensor h, Tensor c, Tensor w, Tensor? b, int hidden, int pad, "
               "str order) -> (Tensor, Tensor)")
    def conv_lstm_cell(x, h, c, w, b, hidden, pad, order):
        return _cell_math(torch, x, h, c, w, b, hidden, pad, order)

    @conv_lstm_cell.register_fake
    def _(x, h, c, w, b, hidden, pad, order):
        return torch.empty_like(h), torch.empty_like(c)

    _OP = conv_lstm_cell
    return _OP


def cell_order(torch, cell) -> str | None:
    """The gate order of a module that behaves as a ConvLSTM cell, else None."""
    conv = getattr(cell, "conv", None)
    if not isinstance(conv, torch.nn.Conv1d) or conv.out_channels % 4 or conv.groups != 1 \
            or conv.stride != (1,) or conv.dilation != (1,) or conv.padding_mode != "zeros" \
            or not isinstance(conv.padding, tuple) or 2 * conv.padding[0] != conv.kernel_size[0] - 1:
        return None
    hidden = conv.out_channels // 4
    n_in = conv.in_channels - hidden
    if n_in < 1:
        return None
    gen = torch.Generator().manual_seed(0)
    args = [torch.randn(2, k, 5, generator=gen, dtype=conv.weight.dtype)
            for k in (n_in, hidden, hidden)]
    try:
        with torch.no_grad():
            got = cell(args[0], (args[1], args[2]))
            for order in ORDERS:
                want = _cell_math(torch, *args, conv.weight, conv.bias, hidden,
                                  conv.padding[0], order)
                if all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, want)):
                    return order
    except Exception:  # noqa: BLE001 - any failure means: not this kind of cell
        return None
    return None


@contextlib.contextmanager
def conv_lstm_cells(torch, module):
    """Route every ConvLSTM-cell submodule's forward through edgeseq::conv_lstm_cell."""
    op = None
    patched = []
    for sub in module.modules():
        order = cell_order(torch, sub)
        if order is None:
            continue
        op = op or _custom_op(torch)
        conv = sub.conv

        def forward(x, state, conv=conv, order=order):
            h, c = state
            return op(x, h, c, conv.weight, conv.bias, conv.out_channels // 4,
                      conv.padding[0], order)
        patched.append(sub)
        sub.forward = forward
    try:
        yield
    finally:
        for sub in patched:
            del sub.forward           # back to the class's forward


@handles("edgeseq.conv_lstm_cell.default")
def _conv_lstm_cell(cx, node, x, h, c, w, b, hidden, pad, order):
    if not isinstance(x, V) or x.rank != 3:
        raise UnsupportedModelError("a ConvLSTM cell step needs a batched (N, C, L) input")
    n, n_in, length = x.shape
    w = np.asarray(w)
    rows = np.concatenate([np.arange(hidden) + hidden * ORDERS[order][g] for g in range(4)])
    k = w.shape[-1]
    slots = {"w_x": cx.const(w[rows, :n_in][None], "conv_lstm_w_x"),
             "w_h": cx.const(w[rows, n_in:][None], "conv_lstm_w_h")}
    if b is not None:
        slots["b"] = cx.const(np.asarray(b)[rows][None], "conv_lstm_b")
    st = (1, n, hidden, length)
    x4 = cx.emit1(Op.UNSQUEEZE, [x], node.name + "_x", (1,) + x.shape, axes=(0,))
    h4 = cx.emit1(Op.UNSQUEEZE, [h], node.name + "_h0", st, axes=(0,))
    c4 = cx.emit1(Op.UNSQUEEZE, [c], node.name + "_c0", st, axes=(0,))
    _, y_h, y_c = cx.emit(Op.CONV_LSTM, [x4, None, h4, c4], node.name,
                          [None, st, st], {"hidden_size": hidden, "pads": (pad, k - 1 - pad)},
                          slots)
    h_new = cx.emit1(Op.SQUEEZE, [y_h], node.name + "_h", st[1:], axes=(0,))
    c_new = cx.emit1(Op.SQUEEZE, [y_c], node.name + "_c", st[1:], axes=(0,))
    return h_new, c_new
