"""LSTM, GRU and RNN kernel families for compressed weights: int8 (per-row scales), float16,
factored W_h = U·V (svd), any mix, and LSTM projections (lstmp). Weights stay in their stored
form; `kernels.quantized` widens them inside the dot products.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from edgeseq.graph import Graph, Node
from edgeseq.ops import Op
from edgeseq.reference import INT7, INT8_ACTIVATIONS, INT8_ASYMMETRIC, int8_activation_slots
from edgeseq.runtime.kernels import quantized as _q
from edgeseq.runtime.kernels import quantized_rnn8 as _r8
from edgeseq.runtime.kernels import s8dot as _s8
from edgeseq.runtime.kernels.s8dot import packed8, packed8_int7
from edgeseq.runtime.kernels.s8dot_asymmetric import packed8_asymmetric
from edgeseq.runtime.registry import register
from edgeseq.runtime.recurrent import GruKernel, LstmKernel, RnnKernel

_EMPTY = {np.dtype(np.float32): np.zeros((0, 0), np.float32),
          np.dtype(np.uint16): np.zeros((0, 0), np.uint16),
          np.dtype(np.int8): np.zeros((0, 0), np.int8)}
_NO_SCALE = np.zeros(0, np.float32)


def _own(a: np.ndarray, dtype) -> np.ndarray:
    # NOTE: a read-only memory map would compile a second specialisation; one contiguous
    # copy of the *stored* (small) form is taken instead, never a dequantised one
    a = np.ascontiguousarray(a, dtype=dtype)
    return a if a.flags.writeable else a.copy()


def pack(w: np.ndarray, scale: np.ndarray | None, int16: bool = False) -> tuple:
    """(kind, f32, u16, i8, scale) for one 2-D stored matrix (see kernels.quantized); int16:
    an int8 matrix is marked I8Q16 (products on int16-quantised vectors in the sequence
    kernels)."""
    if w.dtype == np.int8:
        return (_q.I8Q16 if int16 else _q.I8, _EMPTY[np.dtype(np.float32)],
                _EMPTY[np.dtype(np.uint16)],
                _own(w, np.int8), _own(scale, np.float32).reshape(-1))
    if w.dtype == np.float16:
        return (_q.F16, _EMPTY[np.dtype(np.float32)], _own(w, np.float16).view(np.uint16),
                _EMPTY[np.dtype(np.int8)], _NO_SCALE)
    return (_q.F32, _own(w, np.float32), _EMPTY[np.dtype(np.uint16)], _EMPTY[np.dtype(np.int8)],
            _NO_SCALE)


def pack_slot(graph: Graph, node: Node, slot: str, d: int, int16_min_cols: int = 0) -> tuple:
    """One direction of a weight slot; int8 matrices with ≥ int16_min_cols columns (> 0) are
    packed for int16-activation products."""
    w = graph.weight(node, slot)
    if w is None:
        return pack(np.zeros((0, 0), np.float32), None)
    sc = graph.scale(node, slot)
    return pack(w[d], None if sc is None else sc[d],
                int16=0 < int16_min_cols <= w.shape[-1])


INT16_NOTE = ", int8 products on int16-quantised activations"


class Int8Mode(NamedTuple):
    """How the int8 products of one activation mode (graph metadata) are run."""
    packer: Callable            # (int8 [R, K], scale [R]) -> the record the kernels take
    note: str                   # what Model.describe() says of the activations
    formulation: str            # the s8dot formulation its products run


# int8-activation mode -> its row; the record type selects the kernels' quantisation
# (symmetric, with a zero point: TFLite's asymmetric_quantize_inputs, or 7-bit)
ACTIVATION_MODES = {
    "int8": Int8Mode(packed8, "int8 activations", _s8.CHOSEN.name),
    INT8_ASYMMETRIC: Int8Mode(packed8_asymmetric, "int8 activations with zero points",
                              _s8.CHOSEN.name),
    INT7: Int8Mode(packed8_int7, "int7 activations", _s8.CHOSEN7.name),
}


class _Compressed:
    """Shared by the compressed families: weights packed as stored, cell operands packed by
    the float32 family (`base`) through a shadow graph whose matrices are tiny."""
    base: type
    n_states = 1
    # int8 W_x, W_h (U, V) with at least this many columns multiply int16-quantised vectors
    # in integer arithmetic (kernels.i8dot; extra error ≤ ||W_j||_1·max|v|/65534 per row, see
    # docs/quant.md). Below it the float path (exact products of the stored int8 weights)
    # is slower (measured 32x8: 2.3 µs vs 1.2) but the time is small there, and small models
    # keep products exact to float32 rounding (converter tests compare them at 1e-5).
    int16_min_cols = 64

    def __init__(self, graph: Graph, node: Node, **options) -> None:
        shadow = Graph(graph.name, graph.inputs, graph.outputs, graph.nodes,
                       _light_constants(graph, node), graph.values, graph.metadata)
        # NOTE: base.__init__ would dequantise W_x/W_h (the float32 path); on the shadow graph
        # it only packs the cell operands (aux, ip, fp) exactly as the float32 kernel does
        self.base.__init__(self, shadow, node, **options)
        self.w_x = self.w_h = self.w_proj = None     # the float32 path's matrices: unused
        nd = self.n_dir
        self.factored = "w_h_u" in node.weights
        q16 = self.int16_min_cols
        self.mx = [pack_slot(graph, node, "w_x", d, q16) for d in range(nd)]
        self.mh = [pack_slot(graph, node, "w_h", d, q16) for d in range(nd)]
        self.mu = [pack_slot(graph, node, "w_h_u", d, q16) for d in range(nd)]
        self.mv = [pack_slot(graph, node, "w_h_v", d, q16) for d in range(nd)]
        self.mp = [pack_slot(graph, node, "w_proj", d, q16) for d in range(nd)]
        kinds = sorted({str(graph.constants[n].dtype) for s, n in node.weights.items()
                        if s.startswith("w_")})
        self.note = f"{'+'.join(kinds)} weights used as stored" + \
            (", W_h factored (two GEMVs)" if self.factored else "")
        if any(m[0] == _q.I8Q16 for m in self.mx + self.mh + self.mu + self.mv + self.mp):
            self.note += INT16_NOTE
        self.n_input = graph.weight(node, "w_x").shape[-1]
        self._pack_int8_activations(graph, node)

    def __call__(self, ins: list) -> list:
        x, t_len, n_batch, lens, states = self._prepare(ins)
        ys = [np.empty((t_len, n_batch, self.out_size), dtype=np.float32)
              for _ in range(self.n_dir)]
        for d in range(self.n_dir):
            xin = self._project_inputs(d, x)
            self._sequence(d, xin, lens, [s[d] for s in states], ys[d])
        y = np.stack(ys, axis=1)
        if self.batch_first:
            y = np.ascontiguousarray(y.transpose(2, 0, 1, 3))
            states = [np.ascontiguousarray(s.transpose(1, 0, 2)) for s in states]
        return [y] + states

    def _pack_int8_activations(self, graph: Graph, node: Node) -> None:
        """With int8 activations (graph metadata, `edgeseq.reference.int8_activation_slots`)
        W_x and a dense W_h are packed for `kernels.s8dot` (the CPU's integer dot-product
        form) into self.p8[slot][d]; only the packed copy is kept."""
        slots = int8_activation_slots(graph, node)
        mode = graph.metadata.get(INT8_ACTIVATIONS)
        row = ACTIVATION_MODES.get(mode, ACTIVATION_MODES["int8"])
        self.packed8 = row.packer
        self.p8 = {s: [self.packed8(graph.weight(node, s)[d], graph.scale(node, s)[d])
                       for d in range(self.n_dir)] for s in slots}
        if "w_h_u" in self.p8 and "w_h_v" in self.p8:     # factored: W_h h = U (V h)
            self.p8["w_h"] = list(zip(self.p8.pop("w_h_u"), self.p8.pop("w_h_v")))
            self.mu = self.mv = [pack(np.zeros((0, 0), np.float32), None)] * self.n_dir
        empty = pack(np.zeros((0, 0), np.float32), None)
        for slot, held in (("w_x", self.mx), ("w_h", self.mh), ("w_proj", self.mp)):
            if slot in self.p8:
                held[:] = [empty] * self.n_dir
        if slots:
            if not any(m[0] == _q.I8Q16 for m in self.mx + self.mh + self.mu + self.mv
                       + self.mp):
                self.note = self.note.replace(INT16_NOTE, "")
            self.note += f", {row.note} for {'/'.join(slots)} ({row.formulation} kernels)"

    # NOTE: the two calls below are the whole of what a direction runs; the interpreter
    # (`__call__`) and the generated code (`runtime/codegen/compressed_ops.py`) both make
    # them from these descriptions, so both run the same kernels on the same operands.
    def projection(self, d: int) -> tuple:
        """(njit fn, W_x as packed) of direction d's input projection: fn(W_x, x [T, N, I])
        -> [T, N, gates]."""
        if "w_x" in self.p8:
            return _q.input_projection8, self.p8["w_x"][d]
        return _q.input_projection, self.mx[d]

    def sequence(self, d: int) -> tuple:
        """(njit fn, operands) of direction d's sequence kernel:
        fn(xin, *operands, lens, *states [N, size], y [T, N, P])."""
        raise NotImplementedError

    def _project_inputs(self, d: int, x: np.ndarray) -> np.ndarray:
        fn, w_x = self.projection(d)
        return fn(w_x, x)

    def _sequence(self, d, xin, lens, states, y) -> None:
        fn, operands = self.sequence(d)
        fn(xin, *operands, lens, *states, y)

    def warmup(self) -> None:
        for t_len in (1, 4):
            shape = (1, t_len, self.n_input) if self.batch_first else (t_len, 1, self.n_input)
            self([np.zeros(shape, dtype=np.float32)] + [None] * (1 + self.n_states))


class CompressedLstm(_Compressed, LstmKernel):
    """LSTM on stored int8/fp16/float32 matrices, dense or factored W_h, with projection.
    With int8 activations (graph metadata, `edgeseq.reference.int8_activation_slots`) W_x and
    a dense W_h are packed for `kernels.s8dot` (the CPU's integer dot-product form)."""
    base = LstmKernel
    n_states = 2

    def sequence(self, d: int) -> tuple:
        # a Packed8 projection (int8 activations) or the packed tuple: `quantized._project`
        proj = self.p8["w_proj"][d] if "w_proj" in self.p8 else self.mp[d]
        cell = (self.aux[d], self.ip[d], self.fp[d])
        if "w_h" in self.p8:
            return _q.lstm_sequence8, (self.p8["w_h"][d], proj, *cell)
        return _q.lstm_sequence, (self.mh[d], self.mu[d], self.mv[d], self.factored, proj,
                                  *cell)


class CompressedGru(_Compressed, GruKernel):
    """GRU (both linear_before_reset forms) on compressed matrices. With int8 activations
    and linear_before_reset=0, W_h is packed as its z/r rows and its candidate rows (the
    candidate multiplies r ⊙ h, a second vector)."""
    base = GruKernel

    def __init__(self, graph: Graph, node: Node, **options) -> None:
        super().__init__(graph, node, **options)
        if "w_h" in self.p8 and not node.attrs["linear_before_reset"]:
            hs = self.hidden
            rows_of = "w_h_u" if self.factored else "w_h"       # U's rows are W_h's rows
            w, sc = graph.weight(node, rows_of), graph.scale(node, rows_of)
            zr = [self.packed8(w[d][:2 * hs], sc[d][:2 * hs]) for d in range(self.n_dir)]
            cand = [self.packed8(w[d][2 * hs:], sc[d][2 * hs:]) for d in range(self.n_dir)]
            if self.factored:
                v = [p[1] for p in self.p8["w_h"]]
                zr, cand = list(zip(zr, v)), list(zip(cand, v))
            self.p8["w_h"], self.p8n = zr, cand
        elif "w_h" in self.p8:
            self.p8n = self.p8["w_h"]       # unused by the kernel when linear_before_reset

    def sequence(self, d: int) -> tuple:
        cell = (self.aux[d], self.ip[d], self.fp[d])
        if "w_h" in self.p8:
            return _r8.gru_sequence8, (self.p8["w_h"][d], self.p8n[d], *cell)
        return _q.gru_sequence, (self.mh[d], self.mu[d], self.mv[d], self.factored, *cell)


class CompressedRnn(_Compressed, RnnKernel):
    """Simple RNN on compressed matrices."""
    base = RnnKernel

    def sequence(self, d: int) -> tuple:
        cell = (self.aux[d], self.ip[d], self.fp[d])
        if "w_h" in self.p8:
            return _r8.rnn_sequence8, (self.p8["w_h"][d], *cell)
        return _q.rnn_sequence, (self.mh[d], self.mu[d], self.mv[d], self.factored, *cell)


def _light_constants(graph: Graph, node: Node) -> dict:
    """The node's constants with every matrix replaced by a zero float32 array of its shape
    *without* allocating it (broadcast views), so the float32 packer stays cheap."""
    consts = dict(graph.constants)
    for slot in ("w_x", "w_h", "w_h_u", "w_h_v", "w_proj"):
        name = node.weights.get(slot)
        if name is not None:
            w = graph.constants[name]
            consts[name] = np.broadcast_to(np.float32(0), (w.shape[0], 1, 1))
    return consts


for _op, _cls in ((Op.LSTM, CompressedLstm), (Op.GRU, CompressedGru), (Op.RNN, CompressedRnn)):
    for _dtype in ("int8", "float16", "mixed"):
        register(_op, wdtype=_dtype)(type(f"{_cls.__name__}_{_dtype}", (_cls,), {}))
    for _dtype in ("float32", "int8", "float16", "mixed"):
        register(_op, wdtype=_dtype, factored=True)(
            type(f"Factored{_cls.__name__[10:]}_{_dtype}", (_cls,), {}))
