"""Delta kernel families (registered with delta=True) for LSTM, GRU and RNN with float32,
float16, int8 or mixed weights; factored W_h for LSTM (GRU/RNN factors are multiplied out).

Load time: the matrices are stored transposed in their stored dtype (a skipped column is a
skipped contiguous row of W^T); the cell operands (bias, peephole, layer norm, activations,
clips) are packed by the dense families themselves, so both paths share one definition.

Call protocol (an extension of `runtime.registry.Kernel`):
    kernel(ins, thresholds=None, dstate=None, counts=None) -> [y, y_h(, y_c)]
* thresholds (θx, θh); None: the defaults given at construction (`theta_x`, `theta_h`).
* dstate: dict of the delta state, updated in place: "x_hat" [D, N, I], "h_hat" [D, N, P],
  "m_x" [D, N, Gx], "m_h" [D, N, Gh]; an empty dict is filled with a fresh state (x̂ = 0,
  ĥ = initial h, memories holding W_h·h0). None: a fresh state that is thrown away.
* counts: int64 [3] accumulating kept input columns, kept recurrent columns, row-steps.
"""
from __future__ import annotations

import math

import numpy as np

from edgeseq.errors import InputError
from edgeseq.graph import Graph, Node
from edgeseq.reference import INT8_ACTIVATIONS, int8_activation_slots
from edgeseq.ops import Op
from edgeseq.runtime.compressed import _Compressed, _light_constants, pack, pack_slot
from edgeseq.runtime.kernels import delta as _dk
from edgeseq.runtime.registry import register
from edgeseq.runtime.recurrent import GruKernel, LstmKernel, RnnKernel, dense_weight

_NO_SCALE = np.zeros(0, np.float32)
# columns whose int8 x int8 products sum exactly in int32: 127² · K < 2³¹
INT32_COLUMNS = (2**31 - 1) // (127 * 127)
DSTATE_SLOTS = ("x_hat", "h_hat", "m_x", "m_h")
# slots of a delta node in generated code (codegen/delta_ops.py, delta_codegen.py): its
# thresholds + counts, and its four delta-state arrays back to back
ARGS_SLOT, STATE_SLOT = "delta_args", "delta_state"


def transposed(w: np.ndarray, scale: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(W^T C-contiguous in its stored form, per-row scale or empty) for one [R, K] matrix:
    float16 travels as its uint16 bits (see kernels.quantized.widen)."""
    wT = np.ascontiguousarray(np.asarray(w).T)
    if wT.dtype == np.float16:
        wT = wT.view(np.uint16)
    elif wT.dtype not in (np.int8, np.float32):
        wT = wT.astype(np.float32)
    if not wT.flags.writeable:
        wT = wT.copy()      # one Numba specialisation: writable arrays only
    sc = _NO_SCALE if scale is None else np.ascontiguousarray(scale, dtype=np.float32).copy()
    return wT, sc


def _q16() -> int:
    """Columns from which the delta kernels' dense products (U of a factored LSTM W_h, W_proj,
    a GRU's candidate rows) multiply int16-quantised vectors: the compressed families' own
    threshold. The column-sparse updates (`kernels.delta.absorb`) keep the float product."""
    return _Compressed.int16_min_cols


def _slot_T(graph: Graph, node: Node, slot: str, d: int, rows: slice = slice(None)):
    w = graph.weight(node, slot)
    sc = graph.scale(node, slot)
    return transposed(w[d][rows], None if sc is None else sc[d][rows])


def _shadow(graph: Graph, node: Node) -> Graph:
    """The graph with the node's matrices replaced by tiny broadcast zeros, so a dense family's
    __init__ packs only the cell operands (no dequantised or float32 copy of the weights)."""
    return Graph(graph.name, graph.inputs, graph.outputs, graph.nodes,
                 _light_constants(graph, node), graph.values, graph.metadata)


def check_thresholds(th, where: str) -> tuple[float, float]:
    """(θx, θh) as two finite floats >= 0 (a single number serves both)."""
    if isinstance(th, (int, float, np.floating, np.integer)) and not isinstance(th, bool):
        th = (th, th)
    try:
        tx, thh = (float(v) for v in th)
    except (TypeError, ValueError):
        raise InputError(f"{where}: delta threshold must be a number or a pair (θx, θh), "
                         f"got {th!r}") from None
    for v in (tx, thh):
        if not math.isfinite(v) or v < 0:
            raise InputError(f"{where}: delta thresholds must be finite and >= 0, got {th!r}")
    return tx, thh


class _Delta:
    """Shared plumbing of the delta families (mixed into the dense family classes, whose
    `_lens`, `_state` and attributes — n_dir, hidden, out_size, batch_first — it reuses)."""
    n_states = 1
    # int8 activations: a memory of fewer rows keeps the float column updates (measured,
    # docs/quant.md: at 512 rows the integer updates were 2-7 % slower, from 1024 0.87-1.04x)
    int8_min_rows = 1024

    def _init_delta(self, graph: Graph, node: Node, theta_x: float, theta_h: float) -> None:
        self.theta = check_thresholds((theta_x, theta_h), f"node '{node.name}'")
        self.note = "delta: transposed weights, columns skipped below the thresholds"

    def _init_int8_activations(self, graph: Graph, node: Node) -> None:
        """self.q8 (int64 [2]): whether the column-sparse updates of W_x / W_h (V of a
        factored LSTM W_h) run with int8 activations (`kernels.delta.absorb8`): graph metadata
        (`edgeseq.reference.int8_activation_slots`) and the transposed matrix int8 with at
        most INT32_COLUMNS columns (its int32 column sums cannot overflow) and at least
        `int8_min_rows` rows (the memory's size). The dense products
        (U, W_proj, a GRU's candidate rows) stay as with int16 activations, and so does every
        product of a graph with int8 activations with a zero point (symmetric only here)."""
        symmetric = graph.metadata.get(INT8_ACTIVATIONS) == "int8"
        slots = int8_activation_slots(graph, node) if symmetric else ()
        want = ("w_x" in slots, "w_h" in slots or "w_h_v" in slots)
        self.q8 = np.array([w and wT[0].dtype == np.int8 and wT[0].shape[0] <= INT32_COLUMNS
                            and wT[0].shape[1] >= self.int8_min_rows
                            for w, wT in zip(want, (self.wxT, self.whT))], np.int64)
        if self.q8.any():
            self.note += ", int8 activations for the column updates"

    def state_sizes(self) -> tuple[int, int, int, int]:
        """Sizes of x_hat, h_hat, m_x, m_h per direction and batch row (DSTATE_SLOTS order)."""
        return self.n_input, self.out_size, self._gx(), self._gh()

    # sizes of the memories
    def _gx(self) -> int:
        return self.wxT[0].shape[1]

    def _gh(self) -> int:
        return self.whT[0].shape[1]

    def fresh_state(self, n_batch: int, h0: np.ndarray) -> dict:
        """x̂ = 0, ĥ = h0, m_x = 0, m_h = W_h h0 (h0 [D, N, P] time-major)."""
        nd = self.n_dir
        st = {"x_hat": np.zeros((nd, n_batch, self.n_input), np.float32),
              "h_hat": np.zeros((nd, n_batch, self.out_size), np.float32),
              "m_x": np.zeros((nd, n_batch, self._gx()), np.float32),
              "m_h": np.zeros((nd, n_batch, self._gh()), np.float32)}
        if h0.any():        # a zero initial state (the usual case) leaves everything at 0
            for d in range(nd):
                _dk.absorb_rows(np.ascontiguousarray(h0[d]), st["h_hat"][d], self.whT[d],
                                st["m_h"][d], bool(self.q8[1]))
        return st

    def _check_dstate(self, st: dict, n_batch: int) -> None:
        for k, size in zip(DSTATE_SLOTS, self.state_sizes()):
            a = st.get(k)
            if a is None or a.shape != (self.n_dir, n_batch, size) or a.dtype != np.float32:
                got = None if a is None else (a.shape, str(a.dtype))
                raise InputError(f"node '{self.node.name}': delta state '{k}' must be "
                                 f"{(self.n_dir, n_batch, size)} float32, got {got}")

    def __call__(self, ins: list, thresholds=None, dstate: dict | None = None,
                 counts: np.ndarray | None = None) -> list:
        th = np.array(self.theta if thresholds is None else thresholds, dtype=np.float64)
        x, t_len, n_batch, lens, states = self._prepare(ins)
        if dstate is None or not dstate:
            fresh = self.fresh_state(n_batch, states[0])
            if dstate is None:
                dstate = fresh
            else:
                dstate.update(fresh)
        else:
            self._check_dstate(dstate, n_batch)
        if counts is None:
            counts = np.zeros(3, np.int64)
        ys = [np.empty((t_len, n_batch, self.out_size), dtype=np.float32)
              for _ in range(self.n_dir)]
        for d in range(self.n_dir):
            ds = tuple(dstate[k][d] for k in DSTATE_SLOTS)
            self._run_delta(d, x, lens, [s[d] for s in states], ys[d], ds, th, counts)
        # one direction: a view with the D axis (np.stack would copy; ~2 us per call)
        y = ys[0][:, None] if self.n_dir == 1 else np.stack(ys, axis=1)
        if self.batch_first:
            y = np.ascontiguousarray(y.transpose(2, 0, 1, 3))
            states = [np.ascontiguousarray(s.transpose(1, 0, 2)) for s in states]
        return [y] + states

    def sequence(self, d: int) -> tuple:
        """(njit sequence kernel, its operands between x and lens) of direction d: the call
        is fn(x, *operands, lens, *states[d], y, x_hat, h_hat, m_x, m_h, th, counts), made
        by the interpreter here and by generated code (codegen/delta_ops.py)."""
        raise NotImplementedError

    def _run_delta(self, d, x, lens, states, y, ds, th, counts) -> None:
        fn, operands = self.sequence(d)
        fn(x, *operands, lens, *states, y, *ds, th, counts)

    def macs(self, counts) -> tuple[int, int]:
        """(multiply-adds done, multiply-adds of the dense kernel) in the node's matrices
        for the kept-column counts of a run."""
        kept_x, kept_h, steps = (int(v) for v in counts[:3])     # Python ints (no overflow)
        coef = self.__dict__.get("_mac_coef")
        if coef is None:        # per kept column / row-step; fixed once weights are loaded
            gx = self._gx()
            coef = self._mac_coef = (gx, self._gh(), self._dense_extra(),
                                     self.n_input * gx + self._dense_rec())
        gx, gh, extra, dense_step = coef
        return kept_x * gx + kept_h * gh + steps * extra, steps * dense_step

    def _dense_extra(self) -> int:
        """MACs per row-step that run densely in the delta kernel (U of a factored W_h, the
        projection, GRU's reset-gated W_hh)."""
        return 0

    def _dense_rec(self) -> int:
        """MACs per row-step of the dense kernel's recurrent (and projection) products."""
        return self.out_size * self._gh() + self._dense_extra()

    def warmup(self) -> None:
        for t_len in (1, 4):
            shape = (1, t_len, self.n_input) if self.batch_first else (t_len, 1, self.n_input)
            self([np.zeros(shape, dtype=np.float32), None, None, None], thresholds=self.theta)


class _DeltaLstmBase(_Delta, LstmKernel):
    n_states = 2

    def __init__(self, graph: Graph, node: Node, theta_x: float = 0.0,
                 theta_h: float = 0.0) -> None:
        LstmKernel.__init__(self, _shadow(graph, node), node)
        self._init_delta(graph, node, theta_x, theta_h)
        self.factored = "w_h_u" in node.weights
        self.n_input = graph.weight(node, "w_x").shape[-1]
        nd = self.n_dir
        self.wxT, self.sx = zip(*[_slot_T(graph, node, "w_x", d) for d in range(nd)])
        if self.factored:
            # m_h lives in V-space (r values); U runs densely on it each step
            self.whT, self.sh = zip(*[_slot_T(graph, node, "w_h_v", d) for d in range(nd)])
            self.mu = [pack_slot(graph, node, "w_h_u", d, _q16()) for d in range(nd)]
        else:
            self.whT, self.sh = zip(*[_slot_T(graph, node, "w_h", d) for d in range(nd)])
            self.mu = [pack(np.zeros((0, 0), np.float32), None)] * nd
        self.mp = [pack_slot(graph, node, "w_proj", d, _q16()) for d in range(nd)]
        kinds = sorted({str(graph.constants[n].dtype) for s, n in node.weights.items()
                        if s.startswith("w_")})
        self.note += f" ({'+'.join(kinds)}{', W_h factored' if self.factored else ''})"
        self._init_int8_activations(graph, node)

    def _dense_extra(self) -> int:
        n = self.hidden * self.out_size if self.node.attrs.get("proj_size", 0) else 0
        if self.factored:
            n += 4 * self.hidden * self._gh()
        return n

    def sequence(self, d: int) -> tuple:
        return _dk.lstm_delta_sequence, (self.wxT[d], self.sx[d], self.whT[d], self.sh[d], self.q8,
                                         self.mu[d], self.factored, self.mp[d], self.aux[d],
                                         self.ip[d], self.fp[d])


class _DeltaGruBase(_Delta, GruKernel):
    def __init__(self, graph: Graph, node: Node, theta_x: float = 0.0,
                 theta_h: float = 0.0) -> None:
        GruKernel.__init__(self, _shadow(graph, node), node)
        self._init_delta(graph, node, theta_x, theta_h)
        hs, nd = self.hidden, self.n_dir
        self.n_input = graph.weight(node, "w_x").shape[-1]
        self.lbr = bool(node.attrs["linear_before_reset"])
        self.wxT, self.sx = zip(*[_slot_T(graph, node, "w_x", d) for d in range(nd)])
        rec = slice(None) if self.lbr else slice(0, 2 * hs)
        if "w_h_u" in node.weights:
            w_h = dense_weight(graph, node, "w_h")      # factors multiplied out at load
            self.whT, self.sh = zip(*[transposed(w_h[d][rec], None) for d in range(nd)])
            self.mhh = [pack(np.ascontiguousarray(w_h[d][2 * hs:]), None) for d in range(nd)]
        else:
            self.whT, self.sh = zip(*[_slot_T(graph, node, "w_h", d, rec) for d in range(nd)])
            w_h, sc = graph.weight(node, "w_h"), graph.scale(node, "w_h")
            self.mhh = [pack(np.ascontiguousarray(w_h[d][2 * hs:]),
                             None if sc is None else sc[d][2 * hs:],
                             int16=_q16() <= w_h.shape[-1]) for d in range(nd)]
        if self.lbr:
            self.mhh = [pack(np.zeros((0, 0), np.float32), None)] * nd
        self._init_int8_activations(graph, node)

    def _dense_extra(self) -> int:
        return 0 if self.lbr else self.hidden * self.hidden

    def sequence(self, d: int) -> tuple:
        return _dk.gru_delta_sequence, (self.wxT[d], self.sx[d], self.whT[d], self.sh[d], self.q8,
                                        self.mhh[d], self.aux[d], self.ip[d], self.fp[d])


class _DeltaRnnBase(_Delta, RnnKernel):
    def __init__(self, graph: Graph, node: Node, theta_x: float = 0.0,
                 theta_h: float = 0.0) -> None:
        RnnKernel.__init__(self, _shadow(graph, node), node)
        self._init_delta(graph, node, theta_x, theta_h)
        nd = self.n_dir
        self.n_input = graph.weight(node, "w_x").shape[-1]
        self.wxT, self.sx = zip(*[_slot_T(graph, node, "w_x", d) for d in range(nd)])
        if "w_h_u" in node.weights:
            w_h = dense_weight(graph, node, "w_h")
            self.whT, self.sh = zip(*[transposed(w_h[d], None) for d in range(nd)])
        else:
            self.whT, self.sh = zip(*[_slot_T(graph, node, "w_h", d) for d in range(nd)])
        self._init_int8_activations(graph, node)

    def sequence(self, d: int) -> tuple:
        return _dk.rnn_delta_sequence, (self.wxT[d], self.sx[d], self.whT[d], self.sh[d], self.q8,
                                        self.aux[d], self.ip[d], self.fp[d])


DELTA_FAMILIES = {Op.LSTM: _DeltaLstmBase, Op.GRU: _DeltaGruBase, Op.RNN: _DeltaRnnBase}

for _op, _base in DELTA_FAMILIES.items():
    for _dtype in ("float32", "int8", "float16", "mixed"):
        for _fac in (False, True):
            register(Op(_op), wdtype=_dtype, factored=_fac, delta=True)(
                type(f"Delta{_op.value.title()}_{_dtype}{'_factored' if _fac else ''}",
                     (_base,), {}))


def is_delta_kernel(kernel) -> bool:
    """Whether a plan kernel speaks the delta call protocol."""
    return isinstance(kernel, _Delta)
