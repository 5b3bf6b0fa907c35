"""The ConvLSTM kernel family (1-D and 2-D): the input convolution of all steps as one im2col
GEMM; per step, the recurrent convolution as one GEMM over an im2col gather of the carried h
(kept channels last in a zero-bordered grid flattened to rows), then the compiled gate update
(kernels/conv_lstm.py). float16 / int8 weights are widened / dequantised once at load."""
from __future__ import annotations

import numpy as np

from edgeseq.errors import GraphError, InputError
from edgeseq.graph import Graph, Node
from edgeseq.ops import ACT_CODES, Op, conv_lstm_geometry, num_directions
from edgeseq.runtime.kernels import conv_lstm as _kernel
from edgeseq.runtime.recurrent import dense_weight as _weight
from edgeseq.runtime.registry import Kernel, register


# the input convolution's column buffer (float32 values) per GEMM: bounded, whatever the length
IM2COL_FLOATS = 1 << 22


@register(Op.CONV_LSTM)
class ConvLstmKernel(Kernel):
    """float32 ConvLSTM 1-D / 2-D: any direction, batch_first, sequence lengths, peepholes,
    input padding and dilation."""

    def __init__(self, graph: Graph, node: Node, **options) -> None:
        super().__init__(graph, node)
        if options:
            raise GraphError(f"node '{node.name}' (ConvLSTM): the kernel takes no options, "
                             f"got {sorted(options)}")
        a = node.attrs
        self.n_dir, self.hidden = num_directions(a), a["hidden_size"]
        w_x, w_h = _weight(graph, node, "w_x"), _weight(graph, node, "w_h")
        s = self.n_spatial = w_x.ndim - 3
        self.k_x, self.k_h = w_x.shape[3:], w_h.shape[3:]
        begin, end, self.dil = conv_lstm_geometry(a, s)
        self.pads = begin + end
        # [K*C, 4H] and [K*H, 4H]: the im2col column order (taps, then channels)
        perm = tuple(range(2, 2 + s)) + (1, 0)
        self.w_x = [np.ascontiguousarray(w_x[d].transpose(perm).reshape(-1, 4 * self.hidden))
                    for d in range(self.n_dir)]
        self.w_h = [np.ascontiguousarray(w_h[d].transpose(perm).reshape(-1, 4 * self.hidden))
                    for d in range(self.n_dir)]
        b = _weight(graph, node, "b")
        self.b = b if b is not None else np.zeros((self.n_dir, 4 * self.hidden), np.float32)
        p = _weight(graph, node, "peephole")            # [D, 3, H, *L'] -> [D, 3, P, H]
        self.peep = None if p is None else np.ascontiguousarray(
            p.reshape(p.shape[:3] + (-1,)).transpose(0, 1, 3, 2))
        codes = [ACT_CODES[n] for n in a["activations"]]
        self.codes = np.array(codes, np.int64).reshape(self.n_dir, 3)
        self.alphas = np.array(a["activation_alpha"], np.float32).reshape(self.n_dir, 3)
        self.betas = np.array(a["activation_beta"], np.float32).reshape(self.n_dir, 3)
        self.reverse = [a["direction"] == "reverse" or d == 1 for d in range(self.n_dir)]
        self.batch_first = a["batch_first"]

    def _input_conv(self, x: np.ndarray, d: int) -> np.ndarray:
        """[T, N, C, *L] -> [T, N, P, 4H]: every step's input convolution plus bias: im2col
        GEMMs over blocks of steps (the column buffer stays within IM2COL_FLOATS), columns
        gathered channels last so that every copied run is C values long."""
        s, (t_len, n, c) = self.n_spatial, x.shape[:3]
        begin, end = self.pads[:s], self.pads[s:]
        xp = np.zeros((t_len, n) + tuple(size + b + e for size, b, e in
                                          zip(x.shape[3:], begin, end)) + (c,), np.float32)
        xp[(slice(None), slice(None)) + tuple(slice(b, b + size) for b, size in
                                              zip(begin, x.shape[3:]))] = np.moveaxis(x, 2, -1)
        spans = tuple(dk * (k - 1) + 1 for dk, k in zip(self.dil, self.k_x))
        win = np.lib.stride_tricks.sliding_window_view(xp, spans, axis=tuple(range(2, 2 + s)))
        win = win[(Ellipsis,) + tuple(slice(None, None, dk) for dk in self.dil)]
        win = np.moveaxis(win, 2 + s, -1)                   # [T, N, *L', *K, C]
        out_sp = win.shape[2:2 + s]
        w = self.w_x[d]
        per_step = n * int(np.prod(out_sp)) * w.shape[0]
        block = max(1, IM2COL_FLOATS // max(1, per_step))
        xc = np.empty((t_len, n, int(np.prod(out_sp)), w.shape[1]), np.float32)
        for t0 in range(0, t_len, block):
            cols = np.ascontiguousarray(win[t0:t0 + block]).reshape(-1, w.shape[0])
            np.matmul(cols, w, out=xc[t0:t0 + block].reshape(-1, w.shape[1]))
        xc += self.b[d]
        return xc, out_sp

    def _grid(self, out_sp: tuple) -> tuple:
        """Padded grid shape and the row each output position writes its new h to [P], in the
        flattened channels-last state grid ('same' borders stay zero)."""
        padded = tuple(o + k - 1 for o, k in zip(out_sp, self.k_h))
        strides = np.cumprod((1,) + padded[:0:-1])[::-1]          # row-major element strides
        pos = np.indices(out_sp).reshape(len(out_sp), -1)
        centre = sum((k - 1) // 2 * st for k, st in zip(self.k_h, strides))
        return padded, (pos * strides[:, None]).sum(0) + centre

    def __call__(self, ins: list) -> list:
        x, lens, h0, c0 = (list(ins) + [None] * 4)[:4]
        bf = self.batch_first
        x = np.asarray(np.swapaxes(x, 0, 1) if bf else x, dtype=np.float32)
        t_len, n = x.shape[:2]
        if lens is None:
            lens = np.full(n, t_len, np.int64)
        else:
            lens = np.asarray(lens, np.int64)
            if lens.shape != (n,) or np.any(lens < 0) or np.any(lens > t_len):
                raise InputError(f"node '{self.node.name}' (ConvLSTM): sequence_lens must be "
                                 f"{n} values in [0, {t_len}], got {lens.tolist()}")
        h, d_n = self.hidden, self.n_dir
        convs = [self._input_conv(x, d) for d in range(d_n)]
        out_sp = convs[0][1]
        n_pos = convs[0][0].shape[2]
        padded, centres = self._grid(out_sp)
        inner = (slice(None),) + tuple(slice((k - 1) // 2, (k - 1) // 2 + o)
                                       for k, o in zip(self.k_h, out_sp))
        y = np.zeros((t_len, d_n, n, h, n_pos), np.float32)
        h_fin = np.empty((d_n, n, h) + out_sp, np.float32)
        c_fin = np.empty((d_n, n, h) + out_sp, np.float32)
        no_peep = np.zeros((3, 1, 1), np.float32)
        for d in range(d_n):
            grid = np.zeros((n,) + padded + (h,), np.float32)
            c = np.zeros((n,) + out_sp + (h,), np.float32)
            for src, dst in ((h0, grid[inner]), (c0, c)):
                if src is not None:
                    dst[...] = np.moveaxis((np.swapaxes(src, 0, 1) if bf else src)[d], 1, -1)
            flat, c_flat = grid.reshape(n, -1, h), c.reshape(n, -1, h)
            # every position's window of the grid: [N, *L', *K, H] (the reshape below copies)
            win = np.lib.stride_tricks.sliding_window_view(
                grid, self.k_h, axis=tuple(range(1, 1 + len(out_sp))))
            win = np.moveaxis(win, 1 + len(out_sp), -1)
            peep = self.peep[d] if self.peep is not None else no_peep
            xc = convs[d][0]
            k_cols = self.w_h[d].shape[0]
            cols_buf = np.empty((n, n_pos, k_cols), np.float32)
            pre_buf = np.empty((n, n_pos, 4 * h), np.float32)
            everyone = np.arange(n)
            for s in range(int(lens.max(initial=0))):
                rows = everyone if s < lens.min() else np.flatnonzero(s < lens)
                t = lens[rows] - 1 - s if self.reverse[d] else np.full(rows.size, s)
                # NOTE: the recurrent convolution of all active rows and positions is one GEMM
                r = rows.size
                cols, pre = cols_buf[:r], pre_buf[:r]
                cols.reshape(win[:r].shape)[...] = win if r == n else win[rows]
                np.matmul(cols.reshape(r * n_pos, k_cols), self.w_h[d],
                          out=pre.reshape(r * n_pos, 4 * h))
                _kernel.conv_lstm_gates(pre, xc, t, c_flat, rows, peep, self.peep is not None,
                                        self.codes[d], self.alphas[d], self.betas[d], flat,
                                        centres, y, d)
            h_fin[d] = np.moveaxis(grid[inner], -1, 1)
            c_fin[d] = np.moveaxis(c, -1, 1)
        y = y.reshape((t_len, d_n, n, h) + out_sp)
        if bf:
            return [np.ascontiguousarray(np.moveaxis(y, 2, 0)),
                    np.ascontiguousarray(np.swapaxes(h_fin, 0, 1)),
                    np.ascontiguousarray(np.swapaxes(c_fin, 0, 1))]
        return [y, h_fin, c_fin]
