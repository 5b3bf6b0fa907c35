"""The ConvLSTM (1-D) kernel family: the input convolution of all steps as one im2col GEMM,
then the compiled recurrence (kernels/conv_lstm.py). float16 / int8 weights are widened /
dequantised once at load."""
from __future__ import annotations

import numpy as np

from edgeseq.errors import GraphError, InputError
from edgeseq.graph import Graph, Node
from edgeseq.ops import ACT_CODES, Op, num_directions
from edgeseq.runtime.kernels import conv_lstm as _kernel
from edgeseq.runtime.recurrent import dense_weight as _weight
from edgeseq.runtime.registry import Kernel, register


@register(Op.CONV_LSTM)
class ConvLstmKernel(Kernel):
    """float32 ConvLSTM 1-D: any direction, batch_first, sequence lengths, peepholes."""

    def __init__(self, graph: Graph, node: Node, **options) -> None:
        super().__init__(graph, node)
        if options:
            raise GraphError(f"node '{node.name}' (ConvLSTM): the kernel takes no options, "
                             f"got {sorted(options)}")
        a = node.attrs
        self.n_dir, self.hidden = num_directions(a), a["hidden_size"]
        w_x, w_h = _weight(graph, node, "w_x"), _weight(graph, node, "w_h")
        self.k_x = w_x.shape[-1]
        # [D, C*K, 4H] matching the im2col column order (c, k); recurrent [D, K, H, 4H]
        self.w_x = [np.ascontiguousarray(w_x[d].reshape(w_x.shape[1], -1).T)
                    for d in range(self.n_dir)]
        self.w_h = [np.ascontiguousarray(w_h[d].transpose(2, 1, 0)) for d in range(self.n_dir)]
        self.k_h = w_h.shape[-1]
        b = _weight(graph, node, "b")
        self.b = b if b is not None else np.zeros((self.n_dir, 4 * self.hidden), np.float32)
        p = _weight(graph, node, "peephole")                   # [D, 3, H, L] -> [D, 3, L, H]
        self.peep = None if p is None else np.ascontiguousarray(p.transpose(0, 1, 3, 2))
        self.pads = tuple(a["pads"])
        codes = [ACT_CODES[n] for n in a["activations"]]
        self.codes = np.array(codes, np.int64).reshape(self.n_dir, 3)
        self.alphas = np.array(a["activation_alpha"], np.float32).reshape(self.n_dir, 3)
        self.betas = np.array(a["activation_beta"], np.float32).reshape(self.n_dir, 3)
        self.reverse = [a["direction"] == "reverse" or d == 1 for d in range(self.n_dir)]
        self.batch_first = a["batch_first"]

    def _input_conv(self, x: np.ndarray, d: int) -> np.ndarray:
        """[T, N, C, L] -> [T, N, L', 4H]: every step's input convolution plus bias."""
        t_len, n, c, _ = x.shape
        xp = np.pad(x, ((0, 0), (0, 0), (0, 0), self.pads))
        win = np.lib.stride_tricks.sliding_window_view(xp, self.k_x, axis=3)  # [T,N,C,L',K]
        out_len = win.shape[3]
        cols = np.ascontiguousarray(win.transpose(0, 1, 3, 2, 4)).reshape(-1, c * self.k_x)
        xc = cols @ self.w_x[d]
        xc += self.b[d]
        return xc.reshape(t_len, n, out_len, -1)

    def __call__(self, ins: list) -> list:
        x, lens, h0, c0 = (list(ins) + [None] * 4)[:4]
        bf = self.batch_first
        x = np.asarray(x.transpose(1, 0, 2, 3) if bf else x, dtype=np.float32)
        t_len, n = x.shape[:2]
        if lens is None:
            lens = np.full(n, t_len, np.int64)
        else:
            lens = np.asarray(lens, np.int64)
            if lens.shape != (n,) or np.any(lens < 0) or np.any(lens > t_len):
                raise InputError(f"node '{self.node.name}' (ConvLSTM): sequence_lens must be "
                                 f"{n} values in [0, {t_len}], got {lens.tolist()}")
        h, d_n = self.hidden, self.n_dir
        xcs = [self._input_conv(x, d) for d in range(d_n)]
        out_len = xcs[0].shape[2]
        y = np.empty((t_len, d_n, n, h, out_len), np.float32)
        left = (self.k_h - 1) // 2
        h_fin = np.empty((d_n, n, h, out_len), np.float32)
        c_fin = np.empty((d_n, n, h, out_len), np.float32)
        no_peep = np.zeros((3, 1, 1), np.float32)
        for d in range(d_n):
            h_pad = np.zeros((n, out_len + self.k_h - 1, h), np.float32)
            c = np.zeros((n, out_len, h), np.float32)
            for src, dst in ((h0, h_pad[:, left:left + out_len]), (c0, c)):
                if src is not None:
                    s = src.transpose(1, 0, 2, 3) if bf else src
                    dst[...] = s[d].transpose(0, 2, 1)
            peep = self.peep[d] if self.peep is not None else no_peep
            _kernel.conv_lstm_sequence(xcs[d], self.w_h[d], h_pad, c, peep,
                                       self.peep is not None, lens, self.reverse[d],
                                       self.codes[d], self.alphas[d], self.betas[d], y, d)
            h_fin[d] = h_pad[:, left:left + out_len].transpose(0, 2, 1)
            c_fin[d] = c.transpose(0, 2, 1)
        if bf:
            return [np.ascontiguousarray(y.transpose(2, 0, 1, 3, 4)),
                    np.ascontiguousarray(h_fin.transpose(1, 0, 2, 3)),
                    np.ascontiguousarray(c_fin.transpose(1, 0, 2, 3))]
        return [y, h_fin, c_fin]
