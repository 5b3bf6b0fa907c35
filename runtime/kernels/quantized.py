"""Matrix-vector products on compressed weights, and the LSTM sequence kernel built on them.

A weight matrix travels as a tuple `(kind, f32, u16, i8, scale)`: kind 0 float32 (`f32`),
1 float16 stored as its bits in uint16 (`u16`), 2 int8 (`i8`) with one float32 scale per row
(`scale`); the unused members are empty arrays, so every matrix has one Numba type and one
compiled kernel serves all mixes. Nothing is dequantised into memory: int8 and half values are
widened in registers inside the dot product (int8: acc = Σ q·x in float32, then × scale_row;
half: LLVM `fpext half -> float`, which becomes vcvtph2ps on F16C CPUs and vectorises).

The sequence kernels take a faster route for int8 W_x and W_h packed as I8Q16 (`matvec16`;
`runtime.compressed` chooses it for matrices of at least 64 columns): the activation
vectors (x_t, h_{t-1}, V·h) are quantised to int16 per vector and the products run in integer
arithmetic (`kernels.i8dot`); the extra error is ≤ ||W_row||_1 · max|v| / 65534 per product
(see docs/quant.md). `matvec` itself stays the exact float form (W_proj, delta kernels).

The LSTM cell maths (gates, cell, hidden) is the float32 kernel's own (`kernels.lstm`); only
the products with W_x, W_h (dense or factored U·V) and W_proj are replaced here.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from edgeseq.runtime.kernels.flags import NJIT
from edgeseq.runtime.kernels import i8dot, s8dot, s8dot_asymmetric
from edgeseq.runtime.kernels.cpu import numba_target
from edgeseq.runtime.kernels.activations import activate
from edgeseq.runtime.kernels.gru import _gru_gates, _update_hidden_gru
from edgeseq.runtime.kernels.linalg import begin_step, clip_inplace, shared_length
from edgeseq.runtime.kernels.strict import _OWN, mul32
from edgeseq.runtime.kernels.lstm import _is_plain, _plain_cell, _update_cell, _update_hidden
from edgeseq.runtime.kernels.operands import (GRU_LINEAR_BEFORE_RESET, GRU_REVERSE,
                                              LSTM_PROJ_CLIP, LSTM_PROJECTION, LSTM_REVERSE,
                                              RNN_ACT, RNN_ALPHA, RNN_BETA, RNN_GATE_CLIP,
                                              RNN_REVERSE)

# implementations chosen by argument type (`overload`) compile with the kernels' settings
_OVERLOAD_OPTIONS = {k: v for k, v in NJIT.items() if k != "cache"}

# I8Q16: int8 whose sequence-kernel products use int16-quantised vectors (`matvec16`); every
# other function treats it as I8
F32, F16, I8, I8Q16 = 0, 1, 2, 3


def _native_half() -> bool:
    """Whether LLVM lowers `fpext half` to an instruction here: x86 needs F16C (without it
    the lowering calls `__extendhfsf2`, which no Numba JIT links: the process aborts),
    AArch64 always has it."""
    t = numba_target()
    if t.triple.startswith(("x86_64", "i386", "i686")):
        return "f16c" in t.features
    return t.triple.startswith(("aarch64", "arm64"))


def _half_bits_to_float(builder, h16):
    """IEEE half bits -> float32 in integer arithmetic, exact for every non-NaN value (NaN
    stays NaN): shift exponent and mantissa into place and rebias; Inf/NaN get the top
    exponent; a subnormal half is rebiased one step up and renormalised by one exact float
    subtraction of 2^-14."""
    i32, f32 = ir.IntType(32), ir.FloatType()
    c = lambda v: ir.Constant(i32, v)   # noqa: E731
    h = builder.zext(h16, i32)
    o = builder.shl(builder.and_(h, c(0x7FFF)), c(13))
    e = builder.and_(o, c(0x7C00 << 13))
    o = builder.add(o, c((127 - 15) << 23))
    inf_nan = builder.add(o, c((128 - 16) << 23))
    sub = builder.bitcast(builder.fsub(builder.bitcast(builder.add(o, c(1 << 23)), f32),
                                       ir.Constant(f32, 2.0 ** -14)), i32)
    o = builder.select(builder.icmp_unsigned("==", e, c(0x7C00 << 13)), inf_nan,
                       builder.select(builder.icmp_unsigned("==", e, c(0)), sub, o))
    o = builder.or_(o, builder.shl(builder.and_(h, c(0x8000)), c(16)))
    return builder.bitcast(o, f32)


@intrinsic
def widen(typingctx, x):
    """float32 value of a stored weight element: uint16 holds IEEE half bits (bitcast to half,
    then fpext where the CPU converts halves, else integer arithmetic), int8 and float32
    convert as numbers."""
    if x == types.uint16:
        if _native_half():
            def codegen(context, builder, signature, args):
                return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
        else:
            def codegen(context, builder, signature, args):
                return _half_bits_to_float(builder, args[0])
    elif x in (types.int8, types.float32):
        def codegen(context, builder, signature, args):
            return context.cast(builder, args[0], signature.args[0], types.float32)
    else:
        return None
    return types.float32(x), codegen


LANES = 16      # k elements per vector FMA in the float-product tiles


def _widen_vector(builder, vec, dtype):
    """<n x stored type> -> <n x float>, element by element as `widen`."""
    f32 = ir.FloatType()
    n = vec.type.count
    if dtype == types.float32:
        return vec
    if dtype == types.int8:
        return builder.sitofp(vec, ir.VectorType(f32, n))
    if _native_half():
        return builder.fpext(builder.bitcast(vec, ir.VectorType(ir.HalfType(), n)),
                             ir.VectorType(f32, n))
    out = ir.Constant(ir.VectorType(f32, n), ir.Undefined)
    for i in range(n):
        at = ir.Constant(ir.IntType(32), i)
        out = builder.insert_element(
            out, _half_bits_to_float(builder, builder.extract_element(vec, at)), at)
    return out


def _halving_sums(builder, vecs):
    """The lane sums of the <LANES x float> vectors, each by the same halving tree (lane i
    plus lane i + w for w = LANES/2, ..., 1), however many vectors there are: each level adds
    pairs of vectors packed into one (lower halves of both, plus their upper halves), so n
    vectors cost ~n vector adds instead of n·log2(LANES)."""
    i32 = ir.IntType(32)
    zero = ir.Constant(vecs[0].type, None)
    packs = [(v, [a]) for a, v in enumerate(vecs)]     # (vector, accumulator per group)
    width = LANES
    while width > 1:
        half = width // 2
        if len(packs) % 2:
            packs.append((zero, [None] * len(packs[0][1])))
        nxt = []
        for (p, gp), (q, gq) in zip(packs[::2], packs[1::2]):
            groups = [(0, g) for g in range(len(gp))] + [(LANES, g) for g in range(len(gq))]
            lo = [o + g * width + i for o, g in groups for i in range(half)]
            hi = [o + g * width + half + i for o, g in groups for i in range(half)]
            nxt.append((builder.fadd(
                builder.shuffle_vector(p, q, ir.Constant(ir.VectorType(i32, LANES), lo)),
                builder.shuffle_vector(p, q, ir.Constant(ir.VectorType(i32, LANES), hi)),
                flags=_OWN), gp + gq))
        packs, width = nxt, half
    out = [None] * len(vecs)
    for v, accs in packs:
        for lane, a in enumerate(accs):
            if a is not None:
                out[a] = builder.extract_element(v, ir.Constant(i32, lane))
    return out


def _make_float_tile(n_rows: int, n_vec: int):
    """Intrinsic tile(w, j, v, b0, b1, b2, b3) -> the n_vec·n_rows products
    Σ_k w[j+r, k] v[b_q, k] (float32, element q·n_rows + r) of rows j..j+n_rows-1 with
    vectors b0..b_{n_vec-1} (the others are ignored); rows of w (float32, int8, or half bits
    in uint16) and of v must be contiguous. Every product is computed by the same operations
    whichever tile computes it, so a vector's result does not depend on how many vectors the
    call holds (a stream in chunks equals the full run bit for bit): LANES-wide FMAs over
    the k blocks (the K % LANES rest zero-padded to one more block), then a fixed halving
    tree over the lanes (`_halving_sums`); written as IR whose float operations carry their
    own flags (`strict._OWN`), so fast-math can neither re-associate nor re-vectorise them
    per call site. (Numba's loops, with `reassoc`, came out vectorised differently in the
    4x4 tile and the one-vector loop: 4.8e-7 apart.)"""

    @intrinsic
    def tile(typingctx, w, j, v, b0, b1, b2, b3):
        if not (isinstance(w, types.Array) and w.ndim == 2
                and w.dtype in (types.float32, types.int8, types.uint16)
                and isinstance(v, types.Array) and v.ndim == 2 and v.dtype == types.float32):
            return None
        ret = types.UniTuple(types.float32, n_rows * n_vec)

        def codegen(context, builder, sig, args):
            wa = context.make_array(sig.args[0])(context, builder, args[0])
            va = context.make_array(sig.args[2])(context, builder, args[2])
            i8p = ir.IntType(8).as_pointer()
            i64 = ir.IntType(64)
            f32 = ir.FloatType()
            vf = ir.VectorType(f32, LANES)
            k_len = cgutils.unpack_tuple(builder, wa.shape, 2)[1]

            def c(x):
                return ir.Constant(i64, x)

            def row(arr, index):
                """Pointer to the first element of row `index` (byte stride of axis 0)."""
                stride = cgutils.unpack_tuple(builder, arr.strides, 2)[0]
                at = builder.gep(builder.bitcast(arr.data, i8p), [builder.mul(index, stride)])
                return builder.bitcast(at, arr.data.type)

            wp = [row(wa, builder.add(args[1], c(r))) for r in range(n_rows)]
            vp = [row(va, args[3 + q]) for q in range(n_vec)]
            w_el = wa.data.type.pointee
            wv_t = ir.VectorType(w_el, LANES)
            # fmuladd: an FMA where the CPU has one, else multiply and add (never a libm
            # call); the target decides once for every call, so every product alike
            fma = cgutils.get_or_insert_function(builder.module,
                                                 ir.FunctionType(vf, [vf, vf, vf]),
                                                 f"llvm.fmuladd.v{LANES}f32")
            accs = [[cgutils.alloca_once_value(builder, ir.Constant(vf, None))
                     for _ in range(n_rows)] for _ in range(n_vec)]
            def block(ws, xs):
                """acc[q][r] = fmuladd(w_r, x_q, acc[q][r]) on one LANES-wide k block."""
                ws = [_widen_vector(builder, x, sig.args[0].dtype) for x in ws]
                for q in range(n_vec):
                    for r in range(n_rows):
                        builder.store(builder.call(fma, [ws[r], xs[q],
                                                         builder.load(accs[q][r])]),
                                      accs[q][r])

            n_blocks = builder.udiv(k_len, c(LANES))
            with cgutils.for_range(builder, n_blocks) as loop:
                off = builder.mul(loop.index, c(LANES))
                block([builder.load(builder.bitcast(builder.gep(p, [off]), wv_t.as_pointer()),
                                    align=1) for p in wp],
                      [builder.load(builder.bitcast(builder.gep(p, [off]), vf.as_pointer()),
                                    align=4) for p in vp])
            # the K % LANES rest: copied into zeroed LANES-wide buffers (never a read past
            # the row's end), then one more block; the zero lanes add 0·0
            rest = builder.sub(k_len, builder.mul(n_blocks, c(LANES)))
            with builder.if_then(builder.icmp_signed(">", rest, c(0))):
                base = builder.mul(n_blocks, c(LANES))
                wbuf = [cgutils.alloca_once_value(builder, ir.Constant(wv_t, None))
                        for _ in wp]
                vbuf = [cgutils.alloca_once_value(builder, ir.Constant(vf, None)) for _ in vp]
                with cgutils.for_range(builder, rest) as loop:
                    k = builder.add(base, loop.index)
                    for src, dst in zip(wp + vp, wbuf + vbuf):
                        el = builder.bitcast(dst, src.type)
                        builder.store(builder.load(builder.gep(src, [k])),
                                      builder.gep(el, [loop.index]))
                block([builder.load(b) for b in wbuf], [builder.load(b) for b in vbuf])
            sums = _halving_sums(builder, [builder.load(a) for acc in accs for a in acc])
            return context.make_tuple(builder, ret, sums)

        return ret(w, types.intp, v, types.intp, types.intp, types.intp, types.intp), codegen

    return tile


_tile44, _tile41, _tile11 = (_make_float_tile(r, q) for r, q in ((4, 4), (4, 1), (1, 1)))


@njit(**NJIT)
def _matvec_typed(w, scale, v, rows, n_rows, out, accumulate):
    """out[b, j] (+)= scale[j]·Σ_k w[j, k] v[b, k] for b in rows[:n_rows] (no scale when
    `scale` is empty). Weight rows outer, four at a time, so the matrix streams from memory
    once per call; vectors four at a time (4x4 tiles: each widened weight block feeds four
    vectors, each vector block four rows), the rest one at a time; every tile forms each
    product the same way (`_make_float_tile`)."""
    # the tiles read rows as contiguous blocks: refuse a strided view rather than misread it
    if (w.shape[1] > 1 and w.strides[1] != w.itemsize) or \
            (v.shape[1] > 1 and v.strides[1] != v.itemsize):
        raise ValueError("matvec: weight and vector rows must be contiguous")
    n = w.shape[0]
    quads = n_rows // 4
    j = 0
    while j + 4 <= n:
        for a in range(quads):
            b0, b1, b2, b3 = rows[4 * a], rows[4 * a + 1], rows[4 * a + 2], rows[4 * a + 3]
            t = _tile44(w, j, v, b0, b1, b2, b3)
            _store4(out, b0, j, accumulate, scale, t[0], t[1], t[2], t[3])
            _store4(out, b1, j, accumulate, scale, t[4], t[5], t[6], t[7])
            _store4(out, b2, j, accumulate, scale, t[8], t[9], t[10], t[11])
            _store4(out, b3, j, accumulate, scale, t[12], t[13], t[14], t[15])
        for a in range(4 * quads, n_rows):
            b = rows[a]
            t = _tile41(w, j, v, b, b, b, b)
            _store4(out, b, j, accumulate, scale, t[0], t[1], t[2], t[3])
        j += 4
    for jj in range(j, n):
        for a in range(n_rows):
            b = rows[a]
            acc = _tile11(w, jj, v, b, b, b, b)[0]
            if scale.shape[0]:
                acc = mul32(acc, scale[jj])
            out[b, jj] = out[b, jj] + acc if accumulate else acc


@njit(**NJIT)
def _store4(out, b, j, accumulate, scale, x0, x1, x2, x3):
    # the scale as its own rounding (never fused with the accumulating add)
    if scale.shape[0]:
        x0 = mul32(x0, scale[j])
        x1 = mul32(x1, scale[j + 1])
        x2 = mul32(x2, scale[j + 2])
        x3 = mul32(x3, scale[j + 3])
    if accumulate:
        out[b, j] += x0
        out[b, j + 1] += x1
        out[b, j + 2] += x2
        out[b, j + 3] += x3
    else:
        out[b, j] = x0
        out[b, j + 1] = x1
        out[b, j + 2] = x2
        out[b, j + 3] = x3


@njit(**NJIT)
def matvec(m, v, rows, n_rows, out, accumulate):
    """out[b, :] (+)= W v[b, :] for b in rows[:n_rows], W = the compressed matrix `m`."""
    kind = m[0]
    if kind == I8 or kind == I8Q16:
        _matvec_typed(m[3], m[4], v, rows, n_rows, out, accumulate)
    elif kind == F16:
        _matvec_typed(m[2], m[4][:0], v, rows, n_rows, out, accumulate)
    else:
        _matvec_typed(m[1], m[4][:0], v, rows, n_rows, out, accumulate)


@njit(**NJIT)
def matvec_range(m, r0, r1, v, rows, n_rows, out, accumulate):
    """out[b, j - r0] (+)= (W v[b])[j] for weight rows j in [r0, r1) of a dense matrix."""
    kind = m[0]
    if kind == I8 or kind == I8Q16:
        _matvec_typed(m[3][r0:r1], m[4][r0:r1], v, rows, n_rows, out, accumulate)
    elif kind == F16:
        _matvec_typed(m[2][r0:r1], m[4][:0], v, rows, n_rows, out, accumulate)
    else:
        _matvec_typed(m[1][r0:r1], m[4][:0], v, rows, n_rows, out, accumulate)


@njit(**NJIT)
def matvec16(m, v, rows, n_rows, out, accumulate):
    """As `matvec`, but an I8Q16 matrix multiplies int16-quantised copies of the vectors in
    integer arithmetic (`kernels.i8dot`); other kinds are `matvec` unchanged."""
    matvec16_range(m, 0, n_rows_of(m), v, rows, n_rows, out, accumulate)


@njit(**NJIT)
def matvec16_range(m, r0, r1, v, rows, n_rows, out, accumulate, backward=False):
    """As `matvec_range`, with int16-quantised vectors for an I8Q16 matrix."""
    xq = np.empty((n_rows if m[0] == I8Q16 else 0, v.shape[1]), dtype=np.int16)
    xs = np.empty(n_rows, dtype=np.float32)
    matvec16_scratch(m, r0, r1, v, rows, n_rows, out, accumulate, xq, xs, backward)


@njit(**NJIT)
def matvec16_scratch(m, r0, r1, v, rows, n_rows, out, accumulate, xq, xs, backward):
    """`matvec16_range` with caller-owned scratch (no allocation per step): xq int16
    [>= n_rows, v.shape[1]], xs float32 [>= n_rows]; unused unless m is I8Q16. backward:
    weight rows last to first (see `i8dot.products`; recurrent GEMVs alternate)."""
    if m[0] == I8Q16:
        i8dot.quantize16(v, rows, n_rows, xq, xs)
        i8dot.products(m[3][r0:r1], m[4][r0:r1], xq, xs, n_rows, out, rows, accumulate,
                       backward)
    else:
        matvec_range(m, r0, r1, v, rows, n_rows, out, accumulate)


@njit(**NJIT)
def _recurrent_range(w_h, w_u, w_v, factored, r0, r1, h, rows, n_act, out, accumulate, tmp,
                     backward):
    """Rows [r0, r1) of W_h h (dense, or U[r0:r1] (V h) when factored); backward: row order
    (alternated per step, see `i8dot.products`)."""
    if factored:
        matvec16_range(w_v, 0, n_rows_of(w_v), h, rows, n_act, tmp, False, backward)
        matvec16_range(w_u, r0, r1, tmp, rows, n_act, out, accumulate, backward)
    else:
        matvec16_range(w_h, r0, r1, h, rows, n_act, out, accumulate, backward)


@njit(**NJIT)
def n_rows_of(m):
    kind = m[0]
    if kind == I8 or kind == I8Q16:
        return m[3].shape[0]
    return m[2].shape[0] if kind == F16 else m[1].shape[0]


@njit(**NJIT)
def input_projection(m, x):
    """W x_t for every step and batch row at once: x [T, N, I] -> [T, N, R]. The weight is
    read once (row blocks stay in cache across all T·N vectors). int8: x_t in int16 (measured
    at 4096x1024, T = 50: 62-73 µs per step vs 116 for float32 BLAS sgemm on a dequantised
    copy and 126 for the float 4x4-tile kernel)."""
    t_len, n_batch = x.shape[0], x.shape[1]
    flat = x.reshape(t_len * n_batch, x.shape[2])
    out = np.empty((t_len * n_batch, n_rows_of(m)), dtype=np.float32)
    rows = np.arange(t_len * n_batch)
    matvec16(m, flat, rows, t_len * n_batch, out, False)
    return out.reshape(t_len, n_batch, out.shape[1])


@njit(**NJIT)
def _recurrent(w_h, w_u, w_v, factored, h, rows, n_act, z, tmp, hq, tq, xs, backward):
    """z[b] += W_h h[b]; factored: tmp = V h, then z += U tmp (two GEMVs). hq/tq/xs: int16
    scratch for h and tmp (see `matvec16_scratch`); backward: row order of this step."""
    if factored:
        matvec16_scratch(w_v, 0, n_rows_of(w_v), h, rows, n_act, tmp, False, hq, xs, backward)
        matvec16_scratch(w_u, 0, n_rows_of(w_u), tmp, rows, n_act, z, True, tq, xs, backward)
    else:
        matvec16_scratch(w_h, 0, n_rows_of(w_h), h, rows, n_act, z, True, hq, xs, backward)


def _project(w_proj, m, aux, fp, h_out, mm, pr, one):
    """h = clip(W_proj m + b_proj, ±proj_clip) with a compressed W_proj, as packed:
    - a (kind, ...) tuple: an I8Q16 W_proj multiplies an int16-quantised m
      (`matvec16_range`: 128x256 measured 2.3-2.8 µs per step vs 5.9-6.6 on the float
      path), other kinds the float product;
    - an `s8dot.Packed8` (int8 activations): m quantised to int8, `products8_range`.
    Compiled code only (the form is chosen by the type of w_proj, `_project_forms`)."""
    raise TypeError("_project runs inside compiled kernels only")


@njit(**NJIT)
def _project_product8(w_proj, mm, one, pr):
    """pr[0] = W_proj mm[0] for a Packed8 W_proj (int8 activations)."""
    buf = np.empty((1, w_proj.scale.shape[0]), dtype=np.float32)
    xq = np.zeros((1, 4 * w_proj.groups), dtype=np.int8)
    xs = np.empty(1, dtype=np.float32)
    products8_range(w_proj, mm, one, 1, buf, False, xq, xs, False)
    pr[0, :] = buf[0, :pr.shape[1]]


@njit(**NJIT)
def _project_product(w_proj, mm, one, pr):
    """pr[0] = W_proj mm[0] for a packed (kind, ...) W_proj."""
    matvec16_range(w_proj, 0, n_rows_of(w_proj), mm, one, 1, pr, False)


@overload(_project, jit_options=_OVERLOAD_OPTIONS)
def _project_forms(w_proj, m, aux, fp, h_out, mm, pr, one):
    product = _project_product8 if isinstance(w_proj, types.BaseNamedTuple) \
        else _project_product

    def impl(w_proj, m, aux, fp, h_out, mm, pr, one):
        mm[0, :] = m
        product(w_proj, mm, one, pr)
        n_out = h_out.shape[0]
        for p in range(n_out):
            h_out[p] = pr[0, p] + aux[11, p]
        clip_inplace(h_out, 0, n_out, fp[LSTM_PROJ_CLIP])
    return impl


@njit(**NJIT)
def lstm_sequence(xin, w_h, w_u, w_v, factored, w_proj, aux, ip, fp, lens, h, c, y):
    """One direction over xin [T, N, 4H] = W_x x_t (see `input_projection`); h [N, P] and
    c [N, H] carry the state in place; y [T, N, P] gets outputs (zero past each length).
    ip/fp/aux are packed as for `kernels.lstm._lstm_sequence`."""
    t_len, n_batch = xin.shape[0], xin.shape[1]
    n_cell = c.shape[1]
    n_out = h.shape[1]
    reverse = ip[LSTM_REVERSE] != 0
    rows = np.empty(n_batch, dtype=np.int64)
    times = np.empty(n_batch, dtype=np.int64)
    one = np.zeros(1, dtype=np.int64)
    z = np.empty((n_batch, 4 * n_cell), dtype=np.float32)
    tmp = np.empty((n_batch, n_rows_of(w_v) if factored else 1), dtype=np.float32)
    m = np.empty(n_cell, dtype=np.float32)
    mm = np.empty((1, n_cell), dtype=np.float32)
    pr = np.empty((1, n_out), dtype=np.float32)
    hq = np.empty((n_batch, n_out), dtype=np.int16)
    tq = np.empty((n_batch, tmp.shape[1]), dtype=np.int16)
    xs = np.empty(n_batch, dtype=np.float32)
    plain = _is_plain(ip, fp)
    for s in range(t_len):
        n_act = begin_step(s, lens, reverse, rows, times, y)
        if n_act == 0:
            continue
        for a in range(n_act):
            b = rows[a]
            z[b, :] = xin[times[a], b, :]
        # odd steps read W_h last row first: what the previous step read last is still in L2
        _recurrent(w_h, w_u, w_v, factored, h, rows, n_act, z, tmp, hq, tq, xs, s % 2 == 1)
        for a in range(n_act):
            b = rows[a]
            zb = z[b]
            cb = c[b]
            if plain:           # the float32 kernel's one-pass default cell
                _plain_cell(zb, cb, m, aux)
            else:
                _update_cell(zb, cb, aux, ip, fp)
                _update_hidden(zb, cb, m, aux, ip, fp)
            hb = h[b]
            if ip[LSTM_PROJECTION]:
                _project(w_proj, m, aux, fp, hb, mm, pr, one)
            else:
                for j in range(n_cell):
                    hb[j] = m[j]
            y[times[a], b, :] = hb


# NOTE: the GRU and RNN cell maths below mirror kernels.gru._gru_step / kernels.rnn._rnn_step
# (the float32 kernels take a float32 W_h array directly); only the products differ.
@njit(**NJIT)
def gru_sequence(xin, w_h, w_u, w_v, factored, aux, ip, fp, lens, h, y):
    """One GRU direction over xin [T, N, 3H] = W_x x_t; h [N, H] in place; y [T, N, H].
    aux/ip/fp packed as for `kernels.gru._gru_sequence`."""
    t_len, n_batch = xin.shape[0], xin.shape[1]
    n_hidden = h.shape[1]
    lbr = ip[GRU_LINEAR_BEFORE_RESET] != 0
    reverse = ip[GRU_REVERSE] != 0
    rows = np.empty(n_batch, dtype=np.int64)
    times = np.empty(n_batch, dtype=np.int64)
    xz = np.empty((n_batch, 3 * n_hidden), dtype=np.float32)
    rz = np.empty((n_batch, 3 * n_hidden), dtype=np.float32)
    tmp = np.empty((n_batch, n_hidden), dtype=np.float32)
    vt = np.empty((n_batch, n_rows_of(w_v) if factored else 1), dtype=np.float32)
    for s in range(t_len):
        n_act = begin_step(s, lens, reverse, rows, times, y)
        if n_act == 0:
            continue
        for a in range(n_act):
            xz[rows[a], :] = xin[times[a], rows[a], :]
        _recurrent_range(w_h, w_u, w_v, factored, 0, 3 * n_hidden if lbr else 2 * n_hidden,
                         h, rows, n_act, rz, False, vt, s % 2 == 1)
        for a in range(n_act):
            b = rows[a]
            _gru_gates(xz[b], rz[b], h[b], tmp[b], n_hidden, aux, ip, fp, lbr)
        if not lbr:
            # reset applied before the matmul: W_hh (r * h) needs r first, so a second pass
            _recurrent_range(w_h, w_u, w_v, factored, 2 * n_hidden, 3 * n_hidden, tmp, rows,
                             n_act, rz, False, vt, s % 2 == 1)
            for a in range(n_act):
                b = rows[a]
                for j in range(n_hidden):
                    xz[b, 2 * n_hidden + j] += aux[2, j] + rz[b, j] + aux[5, j]
        for a in range(n_act):
            b = rows[a]
            xb = xz[b]
            hb = h[b]
            _update_hidden_gru(xb, hb, n_hidden, ip, fp)
            y[times[a], b, :] = hb


@njit(**NJIT)
def rnn_sequence(xin, w_h, w_u, w_v, factored, aux, ip, fp, lens, h, y):
    """One simple-RNN direction over xin [T, N, H] = W_x x_t; h [N, H] in place."""
    t_len, n_batch = xin.shape[0], xin.shape[1]
    n_hidden = h.shape[1]
    reverse = ip[RNN_REVERSE] != 0
    rows = np.empty(n_batch, dtype=np.int64)
    times = np.empty(n_batch, dtype=np.int64)
    xz = np.empty((n_batch, n_hidden), dtype=np.float32)
    vt = np.empty((n_batch, n_rows_of(w_v) if factored else 1), dtype=np.float32)
    for s in range(t_len):
        n_act = begin_step(s, lens, reverse, rows, times, y)
        if n_act == 0:
            continue
        for a in range(n_act):
            xz[rows[a], :] = xin[times[a], rows[a], :]
        _recurrent_range(w_h, w_u, w_v, factored, 0, n_hidden, h, rows, n_act, xz, True, vt,
                         s % 2 == 1)
        for a in range(n_act):
            b = rows[a]
            xb = xz[b]
            for j in range(n_hidden):
                xb[j] += aux[0, j]
            clip_inplace(xb, 0, n_hidden, fp[RNN_GATE_CLIP])
            activate(xb, 0, n_hidden, ip[RNN_ACT], fp[RNN_ALPHA], fp[RNN_BETA])
            h[b, :] = xb
            y[times[a], b, :] = xb


# ---- int8 activations (kernels.s8dot): W_x and a dense W_h packed as `s8dot.Packed8` -------
@njit(**NJIT)
def products8_range(p, v, rows, n_rows, out, accumulate, xq, xs, backward):
    """out[rows[a], :p.rows] (+)= the int8-activation product of `p` with v[rows[a]], for
    a < n_rows (`s8dot.products8`); out needs the padded rows of `p` as columns, xq/xs are
    caller-owned scratch (int8 [>= n_rows, 4·p.groups] zero-initialised, float32 [>= n_rows]).
    A `s8dot_asymmetric.Packed8Asymmetric` p quantises with a zero point per vector, a
    `s8dot.Packed8Int7` to 7 bits."""
    _quantized_products(p, v, rows, n_rows, out, accumulate, xq, xs, backward)


def _quantized_products(p, v, rows, n_rows, out, accumulate, xq, xs, backward):
    """`products8_range`'s quantisation and product, by the record type of p."""
    raise TypeError("compiled kernels only")


@overload(_quantized_products, jit_options=_OVERLOAD_OPTIONS)
def _quantized_products_forms(p, v, rows, n_rows, out, accumulate, xq, xs, backward):
    if getattr(p, "instance_class", None) is s8dot_asymmetric.Packed8Asymmetric:
        def asymmetric(p, v, rows, n_rows, out, accumulate, xq, xs, backward):
            zp = np.empty(n_rows, dtype=np.int32)
            s8dot_asymmetric.quantize8_asymmetric(v, rows, n_rows, xq, xs, zp)
            s8dot_asymmetric.products8_asymmetric(p.blocks, p.scale, p.sums, p.groups, xq, xs,
                                                  zp, n_rows, out, rows, accumulate, backward)
        return asymmetric

    if getattr(p, "instance_class", None) is s8dot.Packed8Int7:
        def int7(p, v, rows, n_rows, out, accumulate, xq, xs, backward):
            s8dot.quantize7(v, rows, n_rows, xq, xs)
            s8dot.products7(p.blocks, p.scale, p.sums, p.groups, xq, xs, n_rows, out, rows,
                            accumulate, backward)
        return int7

    def symmetric(p, v, rows, n_rows, out, accumulate, xq, xs, backward):
        s8dot.quantize8(v, rows, n_rows, xq, xs)
        s8dot.products8(p.blocks, p.scale, p.sums, p.groups, xq, xs, n_rows, out, rows,
                        accumulate, backward)
    return symmetric


# A recurrent W_h with int8 activations is a Packed8 (dense) or a (U, V) pair of Packed8
# (factored, svd: W_h h = U (V h), V h quantised again before U). The three functions below
# take either; the form is chosen by type at compile time (`overload`).
def in_groups8(p):
    """Column groups of the first matrix a vector meets (scratch width / 4)."""
    raise TypeError("compiled kernels only")


def out_rows8(p):
    """Padded rows of the product (the width its output buffer needs)."""
    raise TypeError("compiled kernels only")


def recurrent8(p, v, rows, n_rows, out, accumulate, xq, xs, backward):
    """out[rows[a]] (+)= W_h v[rows[a]] with int8 activations; xq/xs: the caller's scratch
    for v (`products8_range`); a factored W_h quantises V v again into its own scratch."""
    raise TypeError("compiled kernels only")


def _dense8(p) -> bool:
    return isinstance(p, types.BaseNamedTuple)


@overload(in_groups8, jit_options=_OVERLOAD_OPTIONS)
def _in_groups8(p):
    return (lambda p: p.groups) if _dense8(p) else (lambda p: p[1].groups)


@overload(out_rows8, jit_options=_OVERLOAD_OPTIONS)
def _out_rows8(p):
    return (lambda p: p.scale.shape[0]) if _dense8(p) else (lambda p: p[0].scale.shape[0])


@overload(recurrent8, jit_options=_OVERLOAD_OPTIONS)
def _recurrent8(p, v, rows, n_rows, out, accumulate, xq, xs, backward):
    if _dense8(p):
        return lambda p, v, rows, n_rows, out, accumulate, xq, xs, backward: products8_range(
            p, v, rows, n_rows, out, accumulate, xq, xs, backward)

    def factored(p, v, rows, n_rows, out, accumulate, xq, xs, backward):
        u, w_v = p[0], p[1]
        # V's padded rows come out as 0, so the whole buffer is quantised (same max, and
        # the extra columns meet U's zero padding)
        tmp = np.zeros((v.shape[0], w_v.scale.shape[0]), dtype=np.float32)
        products8_range(w_v, v, rows, n_rows, tmp, False, xq, xs, backward)
        tq = np.zeros((n_rows, tmp.shape[1]), dtype=np.int8)
        products8_range(u, tmp, rows, n_rows, out, accumulate, tq, xs, backward)
    return factored


@njit(**NJIT)
def input_projection8(p, x):
    """W x_t for every step and batch row at once with int8 activations: x [T, N, I] ->
    [T, N, R] (a view of a buffer with the padded rows as columns)."""
    t_len, n_batch = x.shape[0], x.shape[1]
    m = t_len * n_batch
    flat = x.reshape(m, x.shape[2])
    out = np.empty((m, p.scale.shape[0]), dtype=np.float32)
    xq = np.zeros((m, 4 * p.groups), dtype=np.int8)
    xs = np.empty(m, dtype=np.float32)
    products8_range(p, flat, np.arange(m), m, out, False, xq, xs, False)
    return out.reshape(t_len, n_batch, out.shape[1])[:, :, :p.rows]


@njit(**NJIT)
def _plain_sequence8(xin, p_h, aux, reverse, length, h, c, y):
    """`lstm_sequence8` for the default cell without projection when every batch row has
    `length` steps (<= T; batch 1 always): per step one quantisation and one int8 product for
    all rows, then the fused cell pass; no per-step row bookkeeping. The same operations in
    the same order as the general loop, so the same bits."""
    t_len, n_batch = xin.shape[0], xin.shape[1]
    n = c.shape[1]
    rows = np.arange(n_batch)
    z = np.empty((n_batch, out_rows8(p_h)), dtype=np.float32)
    m = np.empty(n, dtype=np.float32)
    hq = np.zeros((n_batch, 4 * in_groups8(p_h)), dtype=np.int8)
    xs = np.empty(n_batch, dtype=np.float32)
    for t in range(length, t_len):
        y[t] = 0.0
    for s in range(length):
        t = length - 1 - s if reverse else s
        for b in range(n_batch):
            z[b, :4 * n] = xin[t, b, :]
        # odd steps read W_h last panel first: what the previous step read last is in L2
        recurrent8(p_h, h, rows, n_batch, z, True, hq, xs, s % 2 == 1)
        for b in range(n_batch):
            _plain_cell(z[b, :4 * n], c[b], m, aux)
            hb = h[b]
            yb = y[t, b]
            for j in range(n):
                hb[j] = m[j]
                yb[j] = m[j]


# NOTE: the step loop mirrors `lstm_sequence` (same cell and projection code); only the W_h
# product differs (dense W_h with int8 activations, padded gate buffer).
@njit(**NJIT)
def lstm_sequence8(xin, p_h, w_proj, aux, ip, fp, lens, h, c, y):
    """`lstm_sequence` with W_h h_{t-1} in int8 activations (`products8_range`)."""
    t_len, n_batch = xin.shape[0], xin.shape[1]
    n_cell = c.shape[1]
    reverse = ip[LSTM_REVERSE] != 0
    if ip[LSTM_PROJECTION] == 0 and _is_plain(ip, fp):
        length = shared_length(lens)
        if length >= 0:
            _plain_sequence8(xin, p_h, aux, reverse, length, h, c, y)
            return
    rows = np.empty(n_batch, dtype=np.int64)
    times = np.empty(n_batch, dtype=np.int64)
    one = np.zeros(1, dtype=np.int64)
    zp = np.empty((n_batch, out_rows8(p_h)), dtype=np.float32)
    m = np.empty(n_cell, dtype=np.float32)
    mm = np.empty((1, n_cell), dtype=np.float32)
    pr = np.empty((1, h.shape[1]), dtype=np.float32)
    hq = np.zeros((n_batch, 4 * in_groups8(p_h)), dtype=np.int8)
    xs = np.empty(n_batch, dtype=np.float32)
    plain = _is_plain(ip, fp)
    for s in range(t_len):
        n_act = begin_step(s, lens, reverse, rows, times, y)
        if n_act == 0:
            continue
        for a in range(n_act):
            b = rows[a]
            zp[b, :4 * n_cell] = xin[times[a], b, :]
        # odd steps read W_h last panel first: what the previous step read last is in L2
        recurrent8(p_h, h, rows, n_act, zp, True, hq, xs, s % 2 == 1)
        for a in range(n_act):
            b = rows[a]
            zb = zp[b, :4 * n_cell]
            cb = c[b]
            if plain:
                _plain_cell(zb, cb, m, aux)
            else:
                _update_cell(zb, cb, aux, ip, fp)
                _update_hidden(zb, cb, m, aux, ip, fp)
            hb = h[b]
            if ip[LSTM_PROJECTION]:
                _project(w_proj, m, aux, fp, hb, mm, pr, one)
            else:
                for j in range(n_cell):
                    hb[j] = m[j]
            y[times[a], b, :] = hb
