"""The SRU kernel family: one input GEMM over the whole sequence (BLAS), then the compiled
elementwise recurrence (kernels/sru.py). float16 / int8 weights are widened / dequantised
once at load (the fallback key of registry.fallbacks lands here)."""
from __future__ import annotations

import numpy as np

from edgeseq.errors import GraphError, InputError
from edgeseq.graph import Graph, Node
from edgeseq.ops import ACT_CODES, Op, num_directions
from edgeseq.runtime.kernels import sru as _sru
from edgeseq.runtime.recurrent import dense_weight
from edgeseq.runtime.registry import Kernel, register

_SKIPS = {"none": _sru.SKIP_NONE, "input": _sru.SKIP_INPUT, "projected": _sru.SKIP_PROJECTED}


def _layer_norm(x: np.ndarray, gain: np.ndarray, bias: np.ndarray | None,
                eps: np.float32) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    cen = x - mean
    var = np.square(cen).mean(axis=-1, keepdims=True)
    y = cen * (gain / np.sqrt(var + eps))
    return y + bias if bias is not None else y


@register(Op.SRU)
class SruKernel(Kernel):
    """float32 SRU: weights prepared at load, any direction, batch_first, sequence lengths."""

    def __init__(self, graph: Graph, node: Node, **options) -> None:
        super().__init__(graph, node)
        if options:
            raise GraphError(f"node '{node.name}' (SRU): the SRU kernel takes no options "
                             f"(delta execution is not defined for SRU), got {sorted(options)}")
        a = node.attrs

        def weight(slot: str) -> np.ndarray | None:
            return dense_weight(graph, node, slot)
        if any(str(graph.constants[n].dtype) != "float32" for s, n in node.weights.items()
               if s.startswith("w_")):
            self.note = "weights dequantised to float32 at load"
        self.n_dir, self.hidden = num_directions(a), a["hidden_size"]
        d, h = self.n_dir, self.hidden
        w_x = weight("w_x")                                    # [D, G*H, I']
        self.n_gate = w_x.shape[1] // h
        # one GEMM for every gate of every direction: u = x @ w_all, [I', D*G*H]
        self.w_all = np.ascontiguousarray(w_x.reshape(d * self.n_gate * h, -1).T)
        proj = weight("w_x_proj")
        self.w_proj = None if proj is None else np.ascontiguousarray(proj[0].T)   # [I, I']
        self.v = weight("v") if "v" in node.weights else np.zeros((d, 2, h), np.float32)
        self.b = weight("b") if "b" in node.weights else np.zeros((d, 2, h), np.float32)
        self.ln = a["layer_norm"]
        self.ln_gain, self.ln_bias = weight("ln_gain"), weight("ln_bias")
        self.eps = np.float32(a["layer_norm_epsilon"])
        self.skip, self.scale = _SKIPS[a["skip"]], np.float32(a["skip_scale"])
        self.codes = np.array([ACT_CODES[n] for n in a["activations"]], np.int64)
        self.alphas = np.array(a["activation_alpha"], np.float32)
        self.betas = np.array(a["activation_beta"], np.float32)
        self.reverse = np.array([a["direction"] == "reverse" or k == 1 for k in range(d)],
                                np.int64)
        self.batch_first = a["batch_first"]

    def __call__(self, ins: list) -> list:
        x, lens, c0 = (list(ins) + [None] * 3)[:3]
        bf = self.batch_first
        x = np.ascontiguousarray(x.transpose(1, 0, 2) if bf else x, dtype=np.float32)
        t_len, n = x.shape[:2]
        d, h = self.n_dir, self.hidden
        if lens is None:
            lens = np.full(n, t_len, np.int64)
        else:
            lens = np.asarray(lens, np.int64)
            if lens.shape != (n,) or np.any(lens < 0) or np.any(lens > t_len):
                raise InputError(f"node '{self.node.name}' (SRU): sequence_lens must be {n} "
                                 f"values in [0, {t_len}], got {lens.tolist()}")
        if c0 is None:
            c = np.zeros((d, n, h), np.float32)
        else:
            c = np.array(c0.transpose(1, 0, 2) if bf else c0, dtype=np.float32, order="C")
        xg = _layer_norm(x, self.ln_gain, self.ln_bias, self.eps) if self.ln == "before" else x
        rows = xg.reshape(t_len * n, -1)
        if self.w_proj is not None:
            rows = rows @ self.w_proj
        u = (rows @ self.w_all).reshape(t_len, n, -1)
        y = np.empty((t_len, n, d * h), np.float32)
        _sru.sru_sequence(u, x, self.v, self.b, c, lens, self.reverse, self.skip, self.scale,
                          self.codes, self.alphas, self.betas, self.n_gate, y)
        if self.ln == "after":
            y = _layer_norm(y, self.ln_gain, self.ln_bias, self.eps)
        if bf:
            return [np.ascontiguousarray(y.transpose(1, 0, 2)), c.transpose(1, 0, 2).copy()]
        return [y, c]

    def warmup(self) -> None:
        """Compile (or load from Numba's cache) before the first call."""
        i = self.w_all.shape[0] if self.w_proj is None else self.w_proj.shape[0]
        shape = (1, 1, i)
        self([np.zeros(shape, np.float32)])
