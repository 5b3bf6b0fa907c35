"""Integer products of int8 weight rows with int8-quantised activations (s8 × s8 -> int32).

The activation vector is quantised once per call, symmetric like the weights:
step s = max|v| / 127, q = clip(rint(v · (1/s)), ±127) (`quantize8`; the float64 reference
`edgeseq.reference.quantize_activations8` defines the same bits). Every product
Σ_k w[j, k]·q[k] is then exact in integer arithmetic, and the result is
float32(float32(total) · row scale) · s (`strict.scaled_total`), so it does not depend on
the CPU, the formulation or the order of the rows.

Formulations (one per CPU, chosen once at import from the features Numba compiles for; the
table `FORMULATIONS`, first usable wins; `CHOSEN` is what `Model.describe()` shows):
- `avx512vnni`: zmm `vpdpbusd` (u8 × s8, 4 products per 32-bit lane). vpdpbusd wants an
  unsigned operand, so the activations enter as q + 128 (one xor per loaded block) and
  128 · Σ_k w[j, k] (row sums, computed at pack time) is subtracted from each row's total.
- `avxvnni`: the same with ymm `{vex} vpdpbusd` (AVX-VNNI CPUs without AVX-512).
- `avx2`: `vpmaddubsw(|q|, w xor n)` then `vpmaddwd` with ones, n = (q < 0 ? -1 : 0): for
  q < 0, w xor n = −w − 1, so |q|·(w xor n) = w·q − |q|; the vector's Σ_{q<0} |q| (one
  psadbw pass per tile, `_negative_total`) is added to every row's total. The xor is one
  ALU op where vpsignb apparently took a multiply pipe (1.3× on the input projection).
  vpmaddubsw saturates a pair sum to int16, but |q| ≤ 128 and w xor n ∈ [−128, 127] keep
  each pair within [−32768, 32512]: exact (onnxruntime's AVX2 kernel feeds u8 q + zero
  point, up to 255, and does saturate). Many vectors run the 4-panel one-vector tile:
  2 panels × 4 vectors needs all 16 ymm registers as accumulators.
- `avx2-u7` (7-bit activations only, "int7": `Formulation.max_q` 63, `CHOSEN7`,
  `quantize7` / `products7`, records `Packed8Int7`): u = q + 64 ∈ [1, 127] straight into
  `vpmaddubsw(u, w)` + `vpmaddwd` with ones + `vpaddd` (onnxruntime's AVX2 sequence), 64 ·
  row sum subtracted; pair sums ≤ 2·127·128 never saturate. Many vectors run one panel ×
  5 vectors (`panel_vectors`, MLAS's shape: rows of the output × 16 columns, each 32-byte
  weight load used by every row). Elsewhere int7 runs the int8 formulation (any q fits), so
  its bits are the same on every CPU.
- `neon-dotprod` / `neon` / `generic`: portable IR, `llvm.vector.partial.reduce.add` of
  mul(sext, sext); AArch64 lowers it to `sdot` with +dotprod and to `smull` + `saddw`
  without; any other target gets a correct widening form.
The assembly of each is checked (tests/kernels/test_s8dot.py, AArch64 through llvmlite's
cross back end).

Overflow: a block of at most BLOCK elements keeps every int32 lane and the block's int32
total below 2^31 (|(q + 128)·w| ≤ 255·127, 8192·255·127 < 2^31); blocks add up in int64.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from edgeseq.runtime.kernels.cpu import Target, numba_target
from edgeseq.runtime.kernels.flags import NJIT
from edgeseq.runtime.kernels.strict import abs_bits, div32, from_bits, mul32, scaled_total

BLOCK = 8192
PREFETCH = 4096             # bytes ahead (see kernels.i8dot: the same W_h streaming)
Q8 = np.float32(127.0)
I8, I16, I32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)


def _declare(builder, name: str, ret, args):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


def _halves(builder, v, parts: int):
    """v split into `parts` equal vectors (lane order kept)."""
    n = v.type.count // parts
    return [builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, n),
                                                     list(range(i * n, (i + 1) * n))))
            for i in range(parts)]


def _join(builder, parts):
    """The concatenation of equal vectors (a power of two of them), lane order kept."""
    while len(parts) > 1:
        n = parts[0].type.count
        mask = ir.Constant(ir.VectorType(I32, 2 * n), list(range(2 * n)))
        parts = [builder.shuffle_vector(a, b, mask) for a, b in zip(parts[::2], parts[1::2])]
    return parts[0]


# A formulation multiplies one 64-byte block of a panel (16 rows x 4 consecutive columns,
# `pack8`) by 4 activation bytes broadcast to every row: acc (<16 x i32>, one lane per row)
# += Σ_{i<4} w[r, 4g+i]·x[4g+i]. `prep` runs once per broadcast (shared by the panels).
def _vnni(width: int):
    parts = 512 // width
    vb, vd = ir.VectorType(I8, width // 8), ir.VectorType(I32, width // 32)

    def prep(builder, x):                   # x: <64 x i8>, already q + 128 (u8)
        return _halves(builder, x, parts)

    def mac(builder, acc, xs, w):
        fn = _declare(builder, f"llvm.x86.avx512.vpdpbusd.{width}", vd, [vd, vd, vd])
        accs, ws = _halves(builder, acc, parts), _halves(builder, w, parts)
        return _join(builder, [builder.call(fn, [a, builder.bitcast(x, vd),
                                                 builder.bitcast(wv, vd)])
                               for a, x, wv in zip(accs, xs, ws)])
    return prep, mac, PANEL, _same


def _avx2():
    v8, v16, v32 = ir.VectorType(I8, 32), ir.VectorType(I16, 16), ir.VectorType(I32, 8)
    ones = ir.Constant(v16, [1] * 16)

    def prep(builder, x):                   # (|q|, q < 0 ? -1 : 0); both halves are equal
        h = _halves(builder, x, 2)[0]
        fn = _declare(builder, "llvm.abs.v32i8", v8, [v8, ir.IntType(1)])
        neg = builder.sext(builder.icmp_signed("<", h, ir.Constant(v8, None)), v8)
        return builder.call(fn, [h, ir.Constant(ir.IntType(1), 0)]), neg

    def mac(builder, acc, xs, w):           # |q|·(w xor neg): w·q − |q|·[q < 0], per pair
        madd = _declare(builder, "llvm.x86.avx2.pmadd.ub.sw", v16, [v8, v8])
        wd = _declare(builder, "llvm.x86.avx2.pmadd.wd", v32, [v16, v16])
        ax, neg = xs
        return _join(builder, [
            builder.add(a, builder.call(wd, [builder.call(madd, [ax, builder.xor(wv, neg)]),
                                             ones]))
            for a, wv in zip(_halves(builder, acc, 2), _halves(builder, w, 2))])
    return prep, mac, PANEL, _same


def _avx2_u7():
    v8, v16, v32 = ir.VectorType(I8, 32), ir.VectorType(I16, 16), ir.VectorType(I32, 8)
    ones = ir.Constant(v16, [1] * 16)

    def prep(builder, x):                   # u = q + 64 in [1, 127]; both halves are equal
        return _halves(builder, x, 2)[0]

    def mac(builder, acc, u, w):            # onnxruntime's 3 ops; pairs |u·w| sums <= 32512
        madd = _declare(builder, "llvm.x86.avx2.pmadd.ub.sw", v16, [v8, v8])
        wd = _declare(builder, "llvm.x86.avx2.pmadd.wd", v32, [v16, v16])
        return _join(builder, [
            builder.add(a, builder.call(wd, [builder.call(madd, [u, wv]), ones]))
            for a, wv in zip(_halves(builder, acc, 2), _halves(builder, w, 2))])
    return prep, mac, PANEL, _same


def _negative_total(builder, x, n):
    """i32 Σ_{k<n} max(−x[k], 0) of the int8 bytes at x (n: i64, a multiple of 4): what the
    avx2 formulation's xor leaves out of every row (one pass over the vector per tile)."""
    i64, v8 = ir.IntType(64), ir.VectorType(I8, 32)
    v64 = ir.VectorType(i64, 4)
    sad = _declare(builder, "llvm.x86.avx2.psad.bw", v64, [v8, v8])
    zero = ir.Constant(v8, None)
    acc = cgutils.alloca_once_value(builder, ir.Constant(v64, None))
    full = builder.udiv(n, ir.Constant(i64, 32))
    with cgutils.for_range(builder, full) as loop:          # 32 bytes: psadbw vs 0 sums 8
        v = builder.load(builder.bitcast(builder.gep(x, [builder.mul(
            loop.index, ir.Constant(i64, 32))]), v8.as_pointer()), align=1)
        neg = builder.and_(builder.sub(zero, v), builder.sext(     # -(-128) = 128 as u8
            builder.icmp_signed("<", v, zero), v8))
        builder.store(builder.add(builder.load(acc), builder.call(sad, [neg, zero])), acc)
    tail = cgutils.alloca_once_value(builder, ir.Constant(i64, 0))
    with cgutils.for_range_slice(builder, builder.mul(full, ir.Constant(i64, 32)), n,
                                  ir.Constant(i64, 1)) as (k, _):
        b = builder.sext(builder.load(builder.gep(x, [k])), i64)
        nb = builder.sub(ir.Constant(i64, 0), b)
        builder.store(builder.add(builder.load(tail), builder.select(
            builder.icmp_signed(">", nb, ir.Constant(i64, 0)), nb, ir.Constant(i64, 0))),
            tail)
    lanes = builder.load(acc)
    total = builder.load(tail)
    for i in range(4):
        total = builder.add(total, builder.extract_element(lanes, ir.Constant(I32, i)))
    return builder.trunc(total, I32)


def _pairs(builder, v):
    """Lane i of the result = v[2i] + v[2i+1] (adjacent lanes summed, order kept)."""
    n = v.type.count // 2
    ev = ir.Constant(ir.VectorType(I32, n), [2 * i for i in range(n)])
    od = ir.Constant(ir.VectorType(I32, n), [2 * i + 1 for i in range(n)])
    return builder.add(builder.shuffle_vector(v, v, ev), builder.shuffle_vector(v, v, od))


def _same(builder, acc):
    return acc


def _sdot():
    v4, v16 = ir.VectorType(I32, 4), ir.VectorType(I8, 16)

    def prep(builder, x):
        return _halves(builder, x, 4)

    def mac(builder, acc, xs, w):          # sdot: each i32 lane += 4 consecutive products
        fn = _declare(builder, "llvm.aarch64.neon.sdot.v4i32.v16i8", v4, [v4, v16, v16])
        return _join(builder, [builder.call(fn, [a, wv, x]) for a, x, wv in
                               zip(_halves(builder, acc, 4), xs, _halves(builder, w, 4))])
    return prep, mac, PANEL, _same


def _neon():
    v8h, v4 = ir.VectorType(I16, 8), ir.VectorType(I32, 4)

    def prep(builder, x):
        return builder.sext(x, ir.VectorType(I16, 64))

    def mac(builder, acc, x16, w):          # smull, then sadalp into pair sums
        prod = builder.mul(x16, builder.sext(w, ir.VectorType(I16, 64)))
        fn = _declare(builder, "llvm.aarch64.neon.saddlp.v4i32.v8i16", v4, [v8h])
        return builder.add(acc, _join(builder, [builder.call(fn, [h]) for h in
                                                _halves(builder, prod, 8)]))
    return prep, mac, 2 * PANEL, _pairs


def _portable():
    v64 = ir.VectorType(I32, 64)

    def prep(builder, x):
        return builder.sext(x, v64)

    def mac(builder, acc, xw, w):          # 4 consecutive products per lane, spelled out
        return builder.add(acc, _pairs(builder, _pairs(builder, builder.mul(
            xw, builder.sext(w, v64)))))
    return prep, mac, PANEL, _same


class Formulation(NamedTuple):
    name: str
    instructions: tuple         # mnemonics its assembly must contain (tests)
    offset: int                 # added to each activation (u8 operand); row sums undo it
    usable: Callable[[Target], bool]
    emit: Callable              # () -> (prep, mac, accumulator lanes, finish)
    # (builder, int8* vector, i64 bytes) -> i32 added to each row's total (avx2), or None
    vector_term: Callable | None = None
    # many vectors run the one-vector tile (4 panels) each instead of 2 panels x 4 vectors
    gemv_tiles_only: bool = False
    # the largest |q| it is exact for (127: "int8"; 63: only 7-bit activations, "int7")
    max_q: int = 127
    # int7 (`products7`): many vectors run tiles of one panel x this many vectors (0: the
    # int8 walk's tiles): the 16 KB panel stays in L1 and each loaded block serves them all
    panel_vectors: int = 0


def _x86(t: Target) -> bool:
    return t.triple.startswith(("x86_64", "i686", "i386"))


def _arm(t: Target) -> bool:
    return t.triple.startswith(("aarch64", "arm64"))


FORMULATIONS = (
    Formulation("avx512vnni", ("vpdpbusd",), 128,
                lambda t: _x86(t) and {"avx512vnni", "avx512bw"} <= t.features,
                lambda: _vnni(512)),
    Formulation("avxvnni", ("vpdpbusd",), 128,
                lambda t: _x86(t) and ("avxvnni" in t.features
                                       or {"avx512vnni", "avx512vl"} <= t.features),
                lambda: _vnni(256)),
    Formulation("avx2-u7", ("vpmaddubsw", "vpmaddwd"), 64,
                lambda t: _x86(t) and "avx2" in t.features, _avx2_u7, None, False, 63, 5),
    Formulation("avx2", ("vpabsb", "vpmaddubsw"), 0,
                lambda t: _x86(t) and "avx2" in t.features, _avx2, _negative_total, True),
    Formulation("neon-dotprod", ("sdot",), 0,
                lambda t: _arm(t) and "dotprod" in t.features, _sdot),
    Formulation("neon", ("smull", "sadalp"), 0, _arm, _neon),
    Formulation("generic", (), 0, lambda t: True, _portable),
)
BY_NAME = {f.name: f for f in FORMULATIONS}


def choose(target: Target, max_q: int = 127) -> Formulation:
    """The first formulation `target` runs that is exact for activations up to |q| = max_q."""
    return next(f for f in FORMULATIONS if f.usable(target) and f.max_q >= max_q)


CHOSEN = choose(numba_target())
Q7_MAX = 63                 # 7-bit activations ("int7", edgeseq.reference.INT7_MAX)
CHOSEN7 = choose(numba_target(), Q7_MAX)


OFFSET = CHOSEN.offset
PANEL = 16                  # rows per panel: one <16 x i32> accumulator lane per row
GROUP = 4                   # consecutive columns summed into one lane per block
MAX_COLS = 1 << 16          # int32 lanes: K·255·127 < 2^31


def packed_shape(rows: int, cols: int) -> tuple[int, int, int]:
    """(panels, groups, padded rows) of `pack8` for a [rows, cols] matrix."""
    panels = -(-rows // PANEL)
    return panels, -(-cols // GROUP), panels * PANEL


class Packed8(NamedTuple):
    """An int8 matrix in `pack8` form with what its products need (a Numba record)."""
    blocks: np.ndarray          # int8 [panels·groups, 64]
    scale: np.ndarray           # float32 [panels·16]: row scales, 0 past the rows
    sums: np.ndarray            # int32 [panels·16]: row sums
    groups: int                 # column groups of 4 (padded columns / 4)
    rows: int                   # rows of the matrix (the rest is padding)
    cols: int


def packed8(w: np.ndarray, scale: np.ndarray, record: type = Packed8) -> Packed8:
    """`Packed8` (or `record`, a type with its fields) of an int8 [R, K] matrix and its
    float32 per-row scale [R]."""
    blocks, sums = pack8(w)
    scp = np.zeros(sums.shape[0], np.float32)
    scp[:w.shape[0]] = scale
    return record(blocks, scp, sums, packed_shape(*w.shape)[1], w.shape[0], w.shape[1])


class Packed8Int7(Packed8):
    """A `Packed8` whose products take 7-bit activations ("int7", `quantize7` / `products7`;
    a Numba record type of its own: the kernels pick by type)."""
    __slots__ = ()


def packed8_int7(w: np.ndarray, scale: np.ndarray) -> Packed8Int7:
    return packed8(w, scale, Packed8Int7)


def pack8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(packed int8 [panels·groups, 64], row sums int32 [panels·16]) of an int8 [R, K] matrix:
    packed[p·G + g, 4r + i] = w[16p + r, 4g + i], zero-padded. The same bytes in the order the
    kernel reads them (each block one broadcast of 4 activation bytes against 16 rows); no
    value changes. Row sums undo the +128 of the u8 activations (VNNI)."""
    rows, cols = w.shape
    if cols > MAX_COLS:
        raise ValueError(f"int8-activation products support at most {MAX_COLS} columns, "
                         f"got {cols}")
    panels, groups, r_pad = packed_shape(rows, cols)
    full = np.zeros((r_pad, groups * GROUP), np.int8)
    full[:rows, :cols] = w
    packed = full.reshape(panels, PANEL, groups, GROUP).transpose(0, 2, 1, 3)
    sums = full.astype(np.int32).sum(axis=1, dtype=np.int32)
    return np.ascontiguousarray(packed).reshape(panels * groups, PANEL * GROUP), sums


# NOTE: one body for quantize8 / quantize7 (linked into each, its arguments their constants)
@njit(**NJIT)
def _quantize_rows(v, rows, n_rows, xq, xs, qmax, offset):
    for a in range(n_rows):
        b = rows[a]
        bits = np.int32(0)
        for k in range(v.shape[1]):
            bits = max(bits, abs_bits(v[b, k]))     # vectorises; max|v| exactly
        mx = from_bits(bits)
        s = div32(mx, qmax) if mx > 0 else np.float32(1.0)
        inv = div32(np.float32(1.0), s)
        for k in range(v.shape[1]):
            r = np.rint(mul32(v[b, k], inv))
            q = np.int32(min(max(r, -qmax), qmax))
            xq[a, k] = np.int8(q + offset)            # wraps: q + 128 as u8 bits
        xs[a] = s


@njit(**NJIT)
def quantize8(v, rows, n_rows, xq, xs):
    """xq[a, :K] = clip(rint(v[rows[a]] · (1 / xs[a])), ±127) + OFFSET as (wrapping) int8,
    xs[a] = max|v[rows[a]]| / 127 (1 for a zero vector), for a < n_rows; the divisions and the
    product rounded exactly as float32 (`kernels.strict`), so the bits equal the reference's
    (`edgeseq.reference.quantize_activations8`). Columns of xq past K are left as they are
    (the packed weights are zero there)."""
    _quantize_rows(v, rows, n_rows, xq, xs, Q8, OFFSET)


def make_tile(form: Formulation, n_panels: int, n_vec: int, prefetch: bool = True,
              zero_points: bool = False):
    """Intrinsic tile(bp, p0, groups, x, a0, dst, out, scale, wsum, xs, accumulate, pf):
    for panels p0..p0+n_panels-1 and vectors a0..a0+n_vec-1, out[dst[a], 16p + r]
    (+)= float32(float32(Σ_k w[16p + r, k]·q[a, k]) · scale[16p + r]) · xs[a], with
    x = the `quantize8` bytes (q + offset), wsum the packed row sums; `pf`: bytes ahead of
    each panel's read position to prefetch (negative: behind). The float steps carry no
    fast-math flags (see kernels.strict). out needs ≥ 16·panels columns.
    zero_points: the tile takes one more argument, zp (int32 per vector a), and sums
    Σ_k w[16p + r, k]·(q[a, k] − zp[a]) instead (`s8dot_asymmetric`)."""
    prep, mac, acc_lanes, finish = form.emit()
    offset = form.offset

    def typed(bp, p0, groups, x, a0, dst, out, scale, wsum, xs, accumulate, pf, *zp):
        def arr(t, dtype, ndim):
            return isinstance(t, types.Array) and t.dtype == dtype and t.ndim == ndim \
                and t.layout == "C"
        if not (arr(bp, types.int8, 2) and arr(x, types.int8, 2) and arr(out, types.float32, 2)
                and isinstance(dst, types.Array) and dst.dtype == types.int64
                and arr(scale, types.float32, 1) and arr(wsum, types.int32, 1)
                and isinstance(xs, types.Array) and xs.dtype == types.float32
                and all(isinstance(z, types.Array) and z.dtype == types.int32 for z in zp)):
            return None

        def codegen(context, builder, sig, args):
            ba = context.make_array(sig.args[0])(context, builder, args[0])
            xa = context.make_array(sig.args[3])(context, builder, args[3])
            da = context.make_array(sig.args[5])(context, builder, args[5])
            oa = context.make_array(sig.args[6])(context, builder, args[6])
            sa = context.make_array(sig.args[7])(context, builder, args[7])
            wa = context.make_array(sig.args[8])(context, builder, args[8])
            xsa = context.make_array(sig.args[9])(context, builder, args[9])
            p0v, gv, a0v, accv, pfv = args[1], args[2], args[4], args[10], args[11]
            kx = cgutils.unpack_tuple(builder, xa.shape, 2)[1]
            ko = cgutils.unpack_tuple(builder, oa.shape, 2)[1]
            i64 = ir.IntType(64)
            v8 = ir.VectorType(I8, 64)
            vacc = ir.VectorType(I32, PANEL)
            vf = ir.VectorType(ir.FloatType(), PANEL)

            def c(v):
                return ir.Constant(i64, v)

            def elem(a, sig_t, idx):
                return cgutils.get_item_pointer(context, builder, sig_t, a, [idx])

            panel = [builder.bitcast(builder.gep(ba.data, [builder.mul(builder.mul(
                builder.add(p0v, c(p)), gv), c(64))]), v8.as_pointer()) for p in range(n_panels)]
            xrow = [builder.bitcast(builder.gep(xa.data, [builder.mul(builder.add(a0v, c(q)), kx)]),
                                    I32.as_pointer()) for q in range(n_vec)]
            vwide = ir.VectorType(I32, acc_lanes)
            accs = [[cgutils.alloca_once_value(builder, ir.Constant(vwide, None))
                     for _ in range(n_vec)] for _ in range(n_panels)]
            pfn = _declare(builder, "llvm.prefetch.p0i8", ir.VoidType(),
                           [I8.as_pointer(), I32, I32, I32])
            zero_mask = ir.Constant(ir.VectorType(I32, PANEL), [0] * PANEL)
            with cgutils.for_range(builder, gv) as loop:
                g = loop.index
                ws = []
                for p in range(n_panels):
                    ptr = builder.gep(panel[p], [g])
                    if prefetch:
                            builder.call(pfn, [builder.gep(builder.bitcast(ptr, I8.as_pointer()),
                                                       [pfv]), ir.Constant(I32, 0),
                                           ir.Constant(I32, 3), ir.Constant(I32, 1)])
                    ws.append(builder.load(ptr, align=1))
                for q in range(n_vec):
                    d = builder.load(builder.gep(xrow[q], [g]), align=1)
                    one = builder.insert_element(ir.Constant(vacc, None), d, ir.Constant(I32, 0))
                    xsplat = prep(builder, builder.bitcast(
                        builder.shuffle_vector(one, one, zero_mask), v8))
                    for p in range(n_panels):
                        builder.store(mac(builder, builder.load(accs[p][q]), xsplat, ws[p]),
                                      accs[p][q])
            own = ("nsz",)          # keeps Numba's fastmath pass off these (kernels.strict)
            if form.vector_term:
                extra = [form.vector_term(builder, builder.bitcast(xrow[q], I8.as_pointer()),
                                          builder.mul(gv, c(GROUP))) for q in range(n_vec)]
            for p in range(n_panels):
                j = builder.mul(builder.add(p0v, c(p)), c(PANEL))
                sc = builder.load(builder.bitcast(elem(sa, sig.args[7], j), vf.as_pointer()),
                                  align=4)
                tot = [finish(builder, builder.load(accs[p][q])) for q in range(n_vec)]
                if form.vector_term:
                    tot = [builder.add(t, builder.shuffle_vector(builder.insert_element(
                        ir.Constant(vacc, None), e, ir.Constant(I32, 0)),
                        ir.Constant(vacc, None), zero_mask)) for t, e in zip(tot, extra)]
                if zero_points:     # Σ w·(q + offset) − (offset + zp)·Σ w, per vector
                    za = context.make_array(sig.args[12])(context, builder, args[12])
                    ws_ = builder.load(builder.bitcast(elem(wa, sig.args[8], j),
                                                       vacc.as_pointer()), align=4)
                    for q in range(n_vec):
                        z = builder.add(builder.load(elem(za, sig.args[12],
                                                          builder.add(a0v, c(q)))),
                                        ir.Constant(I32, offset))
                        zv = builder.shuffle_vector(
                            builder.insert_element(ir.Constant(vacc, None), z,
                                                   ir.Constant(I32, 0)),
                            ir.Constant(vacc, None), zero_mask)
                        tot[q] = builder.sub(tot[q], builder.mul(ws_, zv))
                elif offset:
                    ws_ = builder.load(builder.bitcast(elem(wa, sig.args[8], j),
                                                       vacc.as_pointer()), align=4)
                    corr = builder.mul(ws_, ir.Constant(vacc, [offset] * PANEL))
                    tot = [builder.sub(t, corr) for t in tot]
                for q in range(n_vec):
                    a = builder.add(a0v, c(q))
                    step = builder.load(elem(xsa, sig.args[9], a))
                    stepv = builder.shuffle_vector(
                        builder.insert_element(ir.Constant(vf, None), step, ir.Constant(I32, 0)),
                        ir.Constant(vf, None), zero_mask)
                    val = builder.fmul(builder.fmul(builder.sitofp(tot[q], vf), sc, flags=own),
                                       stepv, flags=own)
                    b = builder.load(elem(da, sig.args[5], a))
                    optr = builder.bitcast(builder.gep(oa.data, [builder.add(
                        builder.mul(b, ko), j)]), vf.as_pointer())
                    with builder.if_else(builder.icmp_unsigned("!=", accv,
                                                               ir.Constant(accv.type, 0))) \
                            as (then, otherwise):
                        with then:
                            builder.store(builder.fadd(builder.load(optr, align=4), val,
                                                       flags=own), optr, align=4)
                        with otherwise:
                            builder.store(val, optr, align=4)
            return context.get_dummy_value()

        return types.void(bp, types.intp, types.intp, x, types.intp, dst, out, scale, wsum, xs,
                          types.boolean, types.intp, *zp), codegen

    if zero_points:
        @intrinsic
        def tile_zp(typingctx, bp, p0, groups, x, a0, dst, out, scale, wsum, xs, accumulate,
                    pf, zp):
            return typed(bp, p0, groups, x, a0, dst, out, scale, wsum, xs, accumulate, pf, zp)
        return tile_zp

    @intrinsic
    def tile(typingctx, bp, p0, groups, x, a0, dst, out, scale, wsum, xs, accumulate, pf):
        return typed(bp, p0, groups, x, a0, dst, out, scale, wsum, xs, accumulate, pf)
    return tile


# the recurrent GEMV (one vector): 4 panels = 64 rows, 4 independent accumulator chains;
# the input projection (all steps): 2 panels x 4 vectors; the edges one panel/vector
# (no software prefetch: measured at 4096x1024 and 1024x256 the hardware prefetcher alone
# was faster, 52.7 vs 57.9 µs and 3.8 vs 4.1 µs per GEMV, than one line 4 KB ahead)
_gemv4, _tile24, _tile14, _tile11 = (make_tile(CHOSEN, p, v, prefetch=False) for p, v in
                                     ((4, 1), (2, 4), (1, 4), (1, 1)))
# avx2: 2 x 4 needs 16 ymm accumulators, all AVX2 has (it spilled); 4 x 1 was fastest there
# (1024x256 by 96 vectors on Zen 4 for haswell: 4x1 277 µs, 2x2 316, 2x4 365, 1x4 335)
_GEMV_ONLY = CHOSEN.gemv_tiles_only


@njit(**NJIT)
def products8(bp, scale, wsum, groups, xq, xs, n_vec, out, dst, accumulate, backward=False):
    """out[dst[a], j] (+)= float32(float32(Σ_k w[j, k]·q[a, k]) · scale[j]) · xs[a] for
    a < n_vec and every padded row j (`pack8`; scale and wsum padded to its rows; out needs
    that many columns, the padding columns get 0). Panels outer (the matrix streams once per
    call); backward: panels last to first, same bits (the recurrent GEMV alternates the
    order per step so the rows read last are still in L2 when the next step starts)."""
    n_panels = bp.shape[0] // groups
    pf = -PREFETCH if backward else PREFETCH
    p = 0
    while p < n_panels:
        if n_vec == 1 or _GEMV_ONLY:
            step = 4 if p + 4 <= n_panels else 1
        else:
            step = 2 if p + 2 <= n_panels else 1
        first = n_panels - p - step if backward else p
        a = 0
        while a < n_vec:
            if n_vec == 1 or _GEMV_ONLY:
                if step == 4:
                    _gemv4(bp, first, groups, xq, a, dst, out, scale, wsum, xs, accumulate, pf)
                else:
                    _tile11(bp, first, groups, xq, a, dst, out, scale, wsum, xs, accumulate, pf)
                a += 1
            elif a + 4 <= n_vec:
                if step == 2:
                    _tile24(bp, first, groups, xq, a, dst, out, scale, wsum, xs, accumulate, pf)
                else:
                    _tile14(bp, first, groups, xq, a, dst, out, scale, wsum, xs, accumulate, pf)
                a += 4
            else:
                for pp in range(step):
                    _tile11(bp, first + pp, groups, xq, a, dst, out, scale, wsum, xs,
                            accumulate, pf)
                a += 1
        p += step


# ---- 7-bit activations ("int7"): |q| <= 63, the CHOSEN7 formulation's tiles -----------------
Q7 = np.float32(Q7_MAX)
OFFSET7 = CHOSEN7.offset
if CHOSEN7 is CHOSEN:       # VNNI, NEON, generic: the int8 tiles (any q fits)
    _gemv4_7, _tile24_7, _tile14_7, _tile11_7 = _gemv4, _tile24, _tile14, _tile11
else:
    _gemv4_7, _tile24_7, _tile14_7, _tile11_7 = (make_tile(CHOSEN7, p, v, prefetch=False)
                                                 for p, v in ((4, 1), (2, 4), (1, 4), (1, 1)))
_GEMV_ONLY7 = CHOSEN7.gemv_tiles_only
# avx2-u7: 1 panel x 5 vectors = 10 ymm accumulators + 2 weight halves + broadcast, ones and
# a product: 15 of 16, no spill (x 6 spilled one). 100 x 1024 by 4096 x 1024 on Zen 4 for
# haswell, thread time: 1 x 5 3.73-3.77 ms, 1 x 4 3.75-3.80, 2 x 2 3.82-3.96, 4 x 1 3.92-4.06
_PANEL_VECTORS7 = CHOSEN7.panel_vectors
_tile1v_7 = make_tile(CHOSEN7, 1, _PANEL_VECTORS7, prefetch=False) if _PANEL_VECTORS7 \
    else _tile14_7
# avx2-u7's recurrent GEMV over a W_h larger than a core's L2 (read from L3 every step) walks
# one panel at a time, first panel first in both row orders: one sequential stream.
# 4096x1024 (LSTM 1024) on Zen 4 for haswell, thread time per GEMV: 1 panel forward 43.8-44.1
# us vs 4 panels 51.5-52.4 (forward) / 50.7 (alternating directions, what the LSTM asks for);
# 1 panel alternating 53.7. 3072x768: 26.5 vs 29.8. From L2 the 4-panel tile stays ahead
# (2048x512: 12.4 vs 13.7 us; 1024x256: 2.7 vs 2.9)
_STREAM_BYTES7 = (3 << 19) if CHOSEN7 is not CHOSEN else 1 << 62


@njit(**NJIT)
def quantize7(v, rows, n_rows, xq, xs):
    """`quantize8` for 7-bit activations: xs[a] = max|v[rows[a]]| / 63, q clipped to ±63,
    stored as q + OFFSET7 (`edgeseq.reference.quantize_activations8(v, 63)`)."""
    _quantize_rows(v, rows, n_rows, xq, xs, Q7, OFFSET7)


# NOTE: `products8`'s walk (the same bits in both row orders: every total is exact), except
# that a formulation with `panel_vectors` runs many vectors one panel at a time
@njit(**NJIT)
def products7(bp, scale, wsum, groups, xq, xs, n_vec, out, dst, accumulate, backward=False):
    """`products8` for `quantize7` activations (the CHOSEN7 formulation's tiles)."""
    n_panels = bp.shape[0] // groups
    one_vec = n_vec == 1 or (_GEMV_ONLY7 and _PANEL_VECTORS7 == 0)
    stream = n_vec == 1 and bp.shape[0] * bp.shape[1] > _STREAM_BYTES7
    backward = backward and not stream      # (any row order gives the same bits)
    p = 0
    while p < n_panels:
        if one_vec:
            step = 4 if p + 4 <= n_panels and not stream else 1
        elif _PANEL_VECTORS7:
            step = 1
        else:
            step = 2 if p + 2 <= n_panels else 1
        first = n_panels - p - step if backward else p
        a = 0
        while a < n_vec:
            if one_vec:
                if step == 4:
                    _gemv4_7(bp, first, groups, xq, a, dst, out, scale, wsum, xs, accumulate, 0)
                else:
                    _tile11_7(bp, first, groups, xq, a, dst, out, scale, wsum, xs, accumulate,
                              0)
                a += 1
            elif _PANEL_VECTORS7 and a + _PANEL_VECTORS7 <= n_vec:
                _tile1v_7(bp, first, groups, xq, a, dst, out, scale, wsum, xs, accumulate, 0)
                a += _PANEL_VECTORS7
            elif a + 4 <= n_vec:
                if step == 2:
                    _tile24_7(bp, first, groups, xq, a, dst, out, scale, wsum, xs, accumulate,
                              0)
                else:
                    _tile14_7(bp, first, groups, xq, a, dst, out, scale, wsum, xs, accumulate,
                              0)
                a += 4
            else:
                for pp in range(step):
                    _tile11_7(bp, first + pp, groups, xq, a, dst, out, scale, wsum, xs,
                              accumulate, 0)
                a += 1
        p += step


def block_ir(form: Formulation) -> str:
    """LLVM IR of one kernel block of `form` (acc += one 64-byte panel block × 4 broadcast
    activation bytes, in a loop over groups as in the tiles), target-neutral: the assembly
    tests compile it for each target to check the instructions the formulation becomes."""
    prep, mac, acc_lanes, finish = form.emit()
    mod = ir.Module(name=f"s8dot_{form.name}")
    vacc = ir.VectorType(I32, PANEL)
    v8 = ir.VectorType(I8, 64)
    fn = ir.Function(mod, ir.FunctionType(vacc, [v8.as_pointer(), I32.as_pointer(),
                                                 ir.IntType(64)]), name="block")
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    wp, xp, n = fn.args
    acc = cgutils.alloca_once_value(builder, ir.Constant(ir.VectorType(I32, acc_lanes), None))
    zero_mask = ir.Constant(ir.VectorType(I32, PANEL), [0] * PANEL)
    with cgutils.for_range(builder, n) as loop:
        d = builder.load(builder.gep(xp, [loop.index]), align=1)
        one = builder.insert_element(ir.Constant(vacc, None), d, ir.Constant(I32, 0))
        xs = prep(builder, builder.bitcast(builder.shuffle_vector(one, one, zero_mask), v8))
        w = builder.load(builder.gep(wp, [loop.index]), align=1)
        builder.store(mac(builder, builder.load(acc), xs, w), acc)
    builder.ret(finish(builder, builder.load(acc)))
    return str(mod)
