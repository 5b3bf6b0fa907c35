"""float32 dense kernel families for LSTM, GRU and RNN nodes: weight preparation at load,
layout handling (batch_first, directions, per-batch lengths) around the Numba sequence
kernels. Also the fallback for float16/int8/factored weights without a dedicated kernel:
weights are dequantised (and factors multiplied out) once at load."""
from __future__ import annotations

import threading

import numpy as np

from edgeseq.errors import GraphError, InputError
from edgeseq.graph import Graph, Node
from edgeseq.ops import ACT_CODES, Op, num_directions
from edgeseq.runtime.kernels import gru as _gru
from edgeseq.runtime.kernels import lstm as _lstm
from edgeseq.runtime.kernels import operands as cell
from edgeseq.runtime.kernels import rnn as _rnn
from edgeseq.runtime.kernels.panels import aligned_zeros, padded_rows, to_panels
from edgeseq.runtime.registry import Kernel, as_float32, register

# Below this many (time x batch) rows the input projection runs inside the kernel, step by
# step; from here on one BLAS GEMM over all steps is cheaper (measured: a NumPy GEMM call
# costs ~1-2 us, more than an in-kernel 8x8 GEMV).
GEMM_MIN_ROWS = 4

_COUPLING = {"none": 0, "input": 1, "forget": 2}

# Whole sequences of forward models whose W_x is at most this big run as one compiled call
# with W_x in panels (an extra copy of W_x: 256 KiB for a 128-unit layer with 128 inputs)...
ONE_CALL_MAX_WX_BYTES = 1 << 20
# ...for up to this many (time x batch) rows (the entry allocates [rows, 4H] inside; beyond
# this NumPy's GEMM into a reused buffer is as fast and faults no fresh pages per call).
ONE_CALL_MAX_ROWS = 256


def operands(n: int, dtype, slots: dict[int, float]) -> np.ndarray:
    """A cell operand pack (ip or fp) from its named slots (kernels/operands.py); every one of
    its n slots must be given."""
    if sorted(slots) != list(range(n)):
        raise AssertionError(f"operand pack: slots {sorted(slots)} do not cover 0..{n - 1}")
    pack = np.empty(n, dtype)
    for k, v in slots.items():
        pack[k] = v
    return pack


def dense_weight(graph: Graph, node: Node, slot: str) -> np.ndarray | None:
    """float32 [D, ...] weight of a slot: int8 dequantised with its per-row scale, float16
    widened, a factored w_h multiplied out. Never modifies the graph's arrays."""
    if slot == "w_h" and "w_h" not in node.weights and "w_h_u" in node.weights:
        u = dense_weight(graph, node, "w_h_u").astype(np.float64)
        v = dense_weight(graph, node, "w_h_v").astype(np.float64)
        return as_float32(np.matmul(u, v))
    w = graph.weight(node, slot)
    if w is None:
        return None
    if w.dtype == np.int8:
        scale = graph.scale(node, slot)
        return as_float32(w.astype(np.float32) * scale[..., None])
    return as_float32(w)


class _Recurrent(Kernel):
    """Shared plumbing: directions, layouts, sequence lengths, initial states."""
    n_gates = 1
    n_states = 1

    def __init__(self, graph: Graph, node: Node, **options) -> None:
        super().__init__(graph, node)
        if options:
            raise GraphError(f"node '{node.name}' ({node.op.value}): the dense kernel takes no "
                             f"options, got {sorted(options)}")
        a = node.attrs
        self.n_dir = num_directions(a)
        self.hidden = a["hidden_size"]
        self.out_size = a.get("proj_size", 0) or self.hidden
        self.batch_first = a["batch_first"]
        kinds = {str(graph.constants[n].dtype) for s, n in node.weights.items()
                 if s.startswith("w_")}
        if kinds - {"float32"} or "w_h_u" in node.weights:
            self.note = "weights dequantised to float32 at load"
        w_x = dense_weight(graph, node, "w_x")
        w_h = dense_weight(graph, node, "w_h")
        self.w_x = [as_float32(w_x[d]) for d in range(self.n_dir)]
        # the recurrent matrix is read every step: panel layout (kernels/panels.py)
        self.w_h = [self._recurrent_layout(as_float32(w_h[d])) for d in range(self.n_dir)]
        self.reverse = [a["direction"] == "reverse" or d == 1 for d in range(self.n_dir)]
        self._local = threading.local()

    def _acts(self, d: int, k: int) -> tuple[list[int], list[float]]:
        a = self.node.attrs
        sl = slice(d * k, d * k + k)
        codes = [ACT_CODES[n] for n in a["activations"][sl]]
        ab = []
        for al, be in zip(a["activation_alpha"][sl], a["activation_beta"][sl]):
            ab += [al, be]
        return codes, ab

    def _scratch(self, rows: int, cols: int) -> np.ndarray:
        """A reusable [rows, cols] float32 buffer for the input projection, one per thread
        (thread-safe without locks). NOTE: a fresh array of a few hundred KiB is a fresh
        mmap whose pages fault in on every call: measured ~0.2 ms of a 1.7 ms run at 256
        units."""
        local = self._local
        buf = getattr(local, "buf", None)
        if buf is None or buf.shape != (rows, cols):
            buf = local.buf = np.empty((rows, cols), dtype=np.float32)
        return buf

    def _recurrent_layout(self, w_h: np.ndarray):
        return to_panels(w_h)

    def _lens(self, seq_lens, t_len: int, n_batch: int) -> np.ndarray:
        if seq_lens is None:
            return np.full(n_batch, t_len, dtype=np.int64)
        lens = np.array(seq_lens, dtype=np.int64)    # a fresh, writable copy: one specialisation
        if lens.shape != (n_batch,) or (lens.size and (lens.min() < 0 or lens.max() > t_len)):
            raise InputError(f"node '{self.node.name}' ({self.node.op.value}): sequence_lens must "
                             f"be {n_batch} values in [0, {t_len}], got {lens.tolist()}")
        return np.ascontiguousarray(lens)

    def _state(self, s, n_batch: int, size: int) -> np.ndarray:
        """Initial state as a writable [D, N, size] float32 array (kernels update it)."""
        if s is None:
            return np.zeros((self.n_dir, n_batch, size), dtype=np.float32)
        if self.batch_first:
            s = s.transpose(1, 0, 2)
        return np.array(s, dtype=np.float32, order="C", copy=True)

    def _one_call(self):
        """(fn, wbuf, wxp, ip, fp) of the one-call entry for whole sequences of a small forward
        model (W_x panels kept beside the row-major W_x), or None. The entry projects the
        inputs with the panel kernel and runs every step in one compiled call: measured on
        the 128-unit classifier layers (T=29, batch 1) 91 -> 79 us (I=12) and 127 -> 107 us
        (I=128) per layer vs NumPy GEMM + sequence kernel + their Python glue."""
        entry = self.__dict__.get("_entry1", False)
        if entry is not False:
            return entry
        entry = None
        # NOTE: exact types only: a subclass (compressed, delta) may not keep the float32
        # matrices the packed entry reads
        if type(self) in _PACKED and self.n_dir == 1 \
                and self.w_x[0].size * 4 <= ONE_CALL_MAX_WX_BYTES:
            fn, wbuf, wxp, ip, fp = self.stream_entry(False)
            entry = (fn, wbuf, wxp, ip, fp)
        self._entry1 = entry
        return entry

    def _call_one(self, entry, ins: list) -> list | None:
        """Whole sequence through the one-call entry; None when the call does not qualify
        (sequence lengths, batch_first with batch > 1, long or empty inputs, odd arrays)."""
        x = ins[0]
        if type(x) is not np.ndarray or x.dtype != np.float32 or x.ndim != 3:
            return None
        if self.batch_first:
            n_batch, t_len = x.shape[0], x.shape[1]
            if n_batch != 1:
                return None
        else:
            t_len, n_batch = x.shape[0], x.shape[1]
        rows = t_len * n_batch
        if rows == 0 or rows > ONE_CALL_MAX_ROWS:
            return None
        if not (x.flags.c_contiguous and x.flags.writeable):
            x = np.array(x, dtype=np.float32, order="C")
        fn, wbuf, wxp, ip, fp = entry
        p, hs = self.out_size, self.hidden
        flat = np.zeros(self.state_size(n_batch), dtype=np.float32)
        h0 = ins[2] if len(ins) > 2 else None
        if h0 is not None:
            flat[:n_batch * p] = (h0.transpose(1, 0, 2) if self.batch_first else h0).ravel()
        c0 = ins[3] if len(ins) > 3 and self.n_states == 2 else None
        if c0 is not None:
            flat[n_batch * p:] = (c0.transpose(1, 0, 2) if self.batch_first else c0).ravel()
        if self.batch_first:
            y = np.empty((1, t_len, 1, p), dtype=np.float32)
            fn(x.reshape(t_len, 1, x.shape[2]), wbuf, wxp, ip, fp, flat, y)
            lay = (1, 1)
        else:
            y = np.empty((t_len, 1, n_batch, p), dtype=np.float32)
            fn(x, wbuf, wxp, ip, fp, flat, y)
            lay = (1, n_batch)
        out = [y, flat[:n_batch * p].reshape(*lay, p)]
        if self.n_states == 2:
            out.append(flat[n_batch * p:].reshape(*lay, hs))
        return out

    def __call__(self, ins: list) -> list:
        x, seq_lens = ins[0], ins[1]
        if seq_lens is None and not self.reverse[0]:
            entry = self._one_call()
            if entry is not None:
                out = self._call_one(entry, ins)
                if out is not None:
                    return out
        return self._call_general(ins)

    def _prepare(self, ins: list):
        """(x time-major contiguous writable float32, T, N, lengths, writable initial states)
        from a call's inputs; shared by every recurrent kernel family."""
        x, seq_lens = ins[0], ins[1]
        if self.batch_first:
            x = x.transpose(1, 0, 2)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not x.flags.writeable:
            # NOTE: Numba compiles a separate specialisation for read-only arrays; copy instead
            x = x.copy()
        t_len, n_batch = x.shape[0], x.shape[1]
        lens = self._lens(seq_lens, t_len, n_batch)
        sizes = (self.out_size, self.hidden)
        states = [self._state(ins[2 + k] if 2 + k < len(ins) else None, n_batch, sizes[k])
                  for k in range(self.n_states)]
        return x, t_len, n_batch, lens, states

    def _call_general(self, ins: list) -> list:
        """Any call: BLAS GEMM for the input term of long inputs, then the sequence kernel
        per direction, with per-batch lengths and layouts handled here."""
        x, t_len, n_batch, lens, states = self._prepare(ins)
        if self.n_dir == 1:
            y = np.empty((t_len, 1, n_batch, self.out_size), dtype=np.float32)
            ys = [y.reshape(t_len, n_batch, self.out_size)]
        else:
            ys = [np.empty((t_len, n_batch, self.out_size), dtype=np.float32) for _ in range(2)]
        pre = t_len * n_batch >= GEMM_MIN_ROWS
        for d in range(self.n_dir):
            if pre:
                buf = self._scratch(t_len * n_batch, self.w_x[d].shape[0])
                xin = np.dot(x.reshape(t_len * n_batch, -1), self.w_x[d].T, out=buf).reshape(
                    t_len, n_batch, -1)
            else:
                xin = x
            self._run(d, xin, int(pre), lens, [s[d] for s in states], ys[d])
        if self.n_dir == 2:
            y = np.stack(ys, axis=1)
        if self.batch_first:
            y = np.ascontiguousarray(y.transpose(2, 0, 1, 3))
            states = [np.ascontiguousarray(s.transpose(1, 0, 2)) for s in states]
        return [y] + states

    def _run(self, d, xin, pre, lens, states, y) -> None:
        raise NotImplementedError

    def _pack(self) -> None:
        """Put direction 0's matrices and aux in one buffer and make the kernel's arrays
        C-contiguous views into it, so the streaming entry reads the same memory as the
        sequence kernel (no second copy of the weights)."""
        parts = [*self._matrices(0), self.aux[0]]
        # every part starts on a 64-byte boundary (panel rows = cache lines; see
        # panels.aligned_zeros)
        sizes = [-(-p.size // 16) * 16 for p in parts]
        offsets = np.cumsum([0] + sizes[:-1])
        wbuf = aligned_zeros(int(sum(sizes)))
        for o, p in zip(offsets, parts):
            wbuf[o:o + p.size] = p.ravel()
        views = [wbuf[o:o + p.size].reshape(p.shape) for o, p in zip(offsets, parts)]
        self._set_matrices(0, views[:3])
        self.aux[0] = views[3]
        self._wbuf, self._offsets = wbuf, offsets

    def _matrices(self, d: int) -> list:
        """The three matrices packed for direction d, in the order the stream entries read
        them: W_x, W_h (panels), and the projection (LSTM) or nothing."""
        return [self.w_x[d], self.w_h[d], self._proj(d)]

    def _set_matrices(self, d: int, views: list) -> None:
        self.w_x[d], self.w_h[d] = views[0], views[1]
        self._set_proj(d, views[2])

    def stream_entry(self, check_finite: bool, keep_panels: bool = True) -> tuple:
        """(njit fn, packed weights, W_x panels, ip, fp) of the short-chunk streaming kernel of
        direction 0: fn(x [T, N, I], wbuf, wxp, ip, fp, state, y) -> 0, or 1 on non-finite x.
        The W_x panels are made on first use (only streaming models pay their memory)."""
        wxp = getattr(self, "_wx_panels", None)
        if wxp is None and keep_panels:
            wxp = self._wx_panels = to_panels(self.w_x[0])
        o_x, o_h, o_3, o_aux = (int(o) for o in self._offsets)
        layout = operands(cell.STREAM_N_IP, np.int64, {
            cell.STREAM_N_INPUT: self.w_x[0].shape[1], cell.STREAM_N_CELL: self.hidden,
            cell.STREAM_N_OUT: self.out_size, cell.STREAM_OFF_W_X: o_x, cell.STREAM_OFF_W_H: o_h,
            cell.STREAM_OFF_W_3: o_3, cell.STREAM_OFF_AUX: o_aux,
            cell.STREAM_AUX_WIDTH: self.aux[0].shape[1], cell.STREAM_CHECK_FINITE: check_finite})
        return self.stream_fn, self._wbuf, wxp, np.concatenate([self.ip[0], layout]), self.fp[0]

    def state_size(self, n_batch: int) -> int:
        """Floats of carried state for a batch (h, then c for LSTM)."""
        return n_batch * (self.out_size + (self.hidden if self.n_states == 2 else 0))

    def _proj(self, d: int) -> np.ndarray:
        return np.zeros(0, dtype=np.float32)

    def _set_proj(self, d: int, w: np.ndarray) -> None:
        pass

    def warmup(self) -> None:
        """Compile (or load from Numba's cache) both input paths: in-kernel projection for
        short chunks and the precomputed-GEMM path."""
        n_in = self.w_x[0].shape[1]
        if not self.reverse[0]:
            fn, wbuf, _, ip, fp = self.stream_entry(True, keep_panels=False)
            # zero W_x panels of the right shape: compiles the entry without keeping a copy
            wxp = np.zeros((padded_rows(self.w_x[0].shape[0]) // 16, n_in, 16), np.float32)
            fn(np.zeros((1, 1, n_in), np.float32), wbuf, wxp, ip, fp,
               np.zeros(self.state_size(1), np.float32),
               np.empty((1, 1, 1, self.out_size), np.float32))
            self._one_call()
        for t_len in (1, GEMM_MIN_ROWS):
            self._call_general([np.zeros((1, t_len, n_in) if self.batch_first else (t_len, 1, n_in),
                           dtype=np.float32), None, None, None])


@register(Op.LSTM)
class LstmKernel(_Recurrent):
    n_gates = 4
    n_states = 2

    def __init__(self, graph: Graph, node: Node, **options) -> None:
        super().__init__(graph, node, **options)
        a = node.attrs
        hs, ps, nd = self.hidden, self.out_size, self.n_dir
        b = dense_weight(graph, node, "b")
        peep = dense_weight(graph, node, "peephole")
        ln = dense_weight(graph, node, "layer_norm")
        w_proj = dense_weight(graph, node, "w_proj")
        b_proj = dense_weight(graph, node, "b_proj")
        width = max(hs, ps)
        self.aux, self.ip, self.fp, self.w_proj = [], [], [], []
        for d in range(nd):
            aux = np.zeros((12, width), dtype=np.float32)
            if b is not None:
                aux[0:4, :hs] = b[d].reshape(4, hs)
            if peep is not None:
                aux[4:7, :hs] = peep[d]
            if ln is not None:
                aux[7:11, :hs] = ln[d]
            if b_proj is not None:
                aux[11, :ps] = b_proj[d]
            codes, ab = self._acts(d, 3)
            self.aux.append(aux)
            self.ip.append(operands(cell.LSTM_N_IP, np.int64, {
                cell.LSTM_PEEPHOLE: peep is not None,
                cell.LSTM_COUPLING: _COUPLING[a["coupled_gate"]],
                cell.LSTM_LAYER_NORM: ln is not None, cell.LSTM_PROJECTION: w_proj is not None,
                cell.LSTM_ACT_F: codes[0], cell.LSTM_ACT_G: codes[1], cell.LSTM_ACT_H: codes[2],
                cell.LSTM_REVERSE: self.reverse[d]}))
            self.fp.append(operands(cell.LSTM_N_FP, np.float64, {
                cell.LSTM_CELL_CLIP: a["cell_clip"], cell.LSTM_PROJ_CLIP: a["proj_clip"],
                cell.LSTM_GATE_CLIP: a["gate_clip"], cell.LSTM_LN_EPS: a["layer_norm_epsilon"],
                cell.LSTM_ALPHA_F: ab[0], cell.LSTM_BETA_F: ab[1], cell.LSTM_ALPHA_G: ab[2],
                cell.LSTM_BETA_G: ab[3], cell.LSTM_ALPHA_H: ab[4], cell.LSTM_BETA_H: ab[5]}))
            self.w_proj.append(as_float32(w_proj[d]) if w_proj is not None
                               else np.zeros((0, 0), dtype=np.float32))
        self._pack()

    stream_fn = staticmethod(_lstm._lstm_stream)

    def _proj(self, d: int) -> np.ndarray:
        return self.w_proj[d]

    def _set_proj(self, d: int, w: np.ndarray) -> None:
        self.w_proj[d] = w

    def _run(self, d, xin, pre, lens, states, y) -> None:
        _lstm._lstm_sequence(xin, self.w_x[d], pre, self.w_h[d], self.w_proj[d], self.aux[d],
                             self.ip[d], self.fp[d], lens, states[0], states[1], y)


@register(Op.GRU)
class GruKernel(_Recurrent):
    n_gates = 3

    def _recurrent_layout(self, w_h: np.ndarray):
        # z, r rows and h rows apart: form 0 needs r before the h-gate product
        hs = self.hidden
        return to_panels(w_h[:2 * hs]), to_panels(w_h[2 * hs:])

    def _matrices(self, d: int) -> list:
        return [self.w_x[d], *self.w_h[d]]

    def _set_matrices(self, d: int, views: list) -> None:
        self.w_x[d], self.w_h[d] = views[0], (views[1], views[2])

    def __init__(self, graph: Graph, node: Node, **options) -> None:
        super().__init__(graph, node, **options)
        hs = self.hidden
        b_x = dense_weight(graph, node, "b_x")
        b_h = dense_weight(graph, node, "b_h")
        self.aux, self.ip, self.fp = [], [], []
        for d in range(self.n_dir):
            aux = np.zeros((6, hs), dtype=np.float32)
            if b_x is not None:
                aux[0:3] = b_x[d].reshape(3, hs)
            if b_h is not None:
                aux[3:6] = b_h[d].reshape(3, hs)
            codes, ab = self._acts(d, 2)
            self.aux.append(aux)
            self.ip.append(operands(cell.GRU_N_IP, np.int64, {
                cell.GRU_LINEAR_BEFORE_RESET: node.attrs["linear_before_reset"],
                cell.GRU_ACT_F: codes[0], cell.GRU_ACT_G: codes[1],
                cell.GRU_REVERSE: self.reverse[d]}))
            self.fp.append(operands(cell.GRU_N_FP, np.float64, {
                cell.GRU_GATE_CLIP: node.attrs["gate_clip"], cell.GRU_ALPHA_F: ab[0],
                cell.GRU_BETA_F: ab[1], cell.GRU_ALPHA_G: ab[2], cell.GRU_BETA_G: ab[3]}))
        self._pack()

    stream_fn = staticmethod(_gru._gru_stream)

    def _run(self, d, xin, pre, lens, states, y) -> None:
        zr, hn = self.w_h[d]
        _gru._gru_sequence(xin, self.w_x[d], pre, zr, hn, self.aux[d], self.ip[d],
                           self.fp[d], lens, states[0], y)


@register(Op.RNN)
class RnnKernel(_Recurrent):
    def __init__(self, graph: Graph, node: Node, **options) -> None:
        super().__init__(graph, node, **options)
        b = dense_weight(graph, node, "b")
        self.aux, self.ip, self.fp = [], [], []
        for d in range(self.n_dir):
            aux = np.zeros((1, self.hidden), dtype=np.float32)
            if b is not None:
                aux[0] = b[d]
            codes, ab = self._acts(d, 1)
            self.aux.append(aux)
            self.ip.append(operands(cell.RNN_N_IP, np.int64, {
                cell.RNN_ACT: codes[0], cell.RNN_REVERSE: self.reverse[d]}))
            self.fp.append(operands(cell.RNN_N_FP, np.float64, {
                cell.RNN_GATE_CLIP: node.attrs["gate_clip"], cell.RNN_ALPHA: ab[0],
                cell.RNN_BETA: ab[1]}))
        self._pack()

    stream_fn = staticmethod(_rnn._rnn_stream)

    def _run(self, d, xin, pre, lens, states, y) -> None:
        _rnn._rnn_sequence(xin, self.w_x[d], pre, self.w_h[d], self.aux[d], self.ip[d],
                           self.fp[d], lens, states[0], y)


_PACKED = (LstmKernel, GruKernel, RnnKernel)
