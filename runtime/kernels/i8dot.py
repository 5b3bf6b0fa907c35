"""Integer products of int8 weight rows with int16-quantised activations.

Why: on int8 weights the float path (widen each weight to float32, FMA) is bound by the
int->float conversions, not by memory. Quantising the activation vector to int16 once per
call (symmetric, scale max|v|/32767: error ≤ max|v|/65534 per element, ~1.5e-5 relative) lets
the CPU multiply-add int16 pairs into int32 directly (x86: vpmaddwd / AVX-VNNI vpdpwssd;
AArch64: smull/smlal/sdot-style lowering of the same IR), twice the MACs per instruction of
float32 FMA, and no conversion per weight.

The tiles are written as generic LLVM vector IR, not x86 intrinsics: per 32-element block,
sext <32 x i8> and <32 x i16> to <32 x i32>, multiply, add even and odd lanes (the shape the
x86 backend folds into vpmaddwd/vpdpwssd), accumulate in <16 x i32>. Numba's own loop
vectoriser, given the same maths as a scalar loop, picked an 8-lane form (xmm vpmaddwd, half
the lanes of each ymm add unused) that was no faster than the float path; see docs/quant.md.

Overflow: each of the 16 int32 lanes of an accumulator collects n/16 products of |w| ≤ 128
and |v| ≤ 32767 (≤ 4 194 176 each) over a block of n elements, so a block of at most
BLOCK = 8192 keeps every lane below 2^31; the lanes are summed in int64 (the block total may
exceed 2^31), and so are the blocks and the K % 32 rest, so one row's total is exact; it is
scaled once, float32(float32(total) · row scale) · vector step, with operations that fast-math
cannot re-associate (`kernels.strict`). Results therefore do not depend on the row order or
the code path (the two row orders differed in the last bit on AArch64 when the blocks were
summed in float32). (With one int32 total per block, blocks of 512 were needed: the all-steps
projection at 1024 inputs took 56 µs per step vs 51, two horizontal sums per 4x4 tile
instead of one.)
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from edgeseq.runtime.kernels.flags import NJIT
from edgeseq.runtime.kernels.strict import abs_bits, from_bits, scaled_total

LANES = 32
BLOCK = 8192
# Weight bytes fetched ahead of use (llvm.prefetch, a hint that never faults: past the end of
# the matrix it is harmless). The batch-1 W_h GEMV streams 4 MB per step from L3 (more than
# this machine's 2 MB L2 per core); measured at 4096x1024: 156-182 µs per GEMV without,
# 146-150 µs with prefetching the next 4x1 tile (4 KB ahead); with the alternating row order
# (see `products`): 126 µs without, 107 µs with.
PREFETCH = 4096
Q16 = np.float32(32767.0)


def _make_tile(n_rows: int, n_vec: int, lanes: int, prefetch: bool):
    """Intrinsic tile(w, j0, x, a0, k0, n, acc, pf):
    acc[r, q] = Σ_{k0≤k<k0+n} w[j0+r, k]·x[a0+q, k] (int64) for r < n_rows, q < n_vec; w int8
    [R, K] and x int16 [M, K] C-contiguous, n a multiple of `lanes` (the caller does the tail);
    with `prefetch`, weight bytes pf ahead of each row's reads (negative: behind, for a
    backward pass over the rows) are prefetched. Each loaded weight block feeds n_vec products
    and each activation block n_rows, so loads stay below the multiply-adds."""

    @intrinsic
    def tile(typingctx, w, j0, x, a0, k0, n, acc, pf):
        if not (isinstance(w, types.Array) and w.dtype == types.int8 and w.ndim == 2
                and w.layout == "C" and isinstance(x, types.Array) and x.dtype == types.int16
                and x.ndim == 2 and x.layout == "C" and isinstance(acc, types.Array)
                and acc.dtype == types.int64 and acc.ndim == 2 and acc.layout == "C"):
            return None

        def codegen(context, builder, sig, args):
            wa = context.make_array(sig.args[0])(context, builder, args[0])
            xa = context.make_array(sig.args[2])(context, builder, args[2])
            oa = context.make_array(sig.args[6])(context, builder, args[6])
            j0v, a0v, k0v, nv, pfv = args[1], args[3], args[4], args[5], args[7]
            kw = cgutils.unpack_tuple(builder, wa.shape, 2)[1]
            kx = cgutils.unpack_tuple(builder, xa.shape, 2)[1]
            ko = cgutils.unpack_tuple(builder, oa.shape, 2)[1]
            i32 = ir.IntType(32)
            v8 = ir.VectorType(ir.IntType(8), lanes)
            v16 = ir.VectorType(ir.IntType(16), lanes)
            v32 = ir.VectorType(i32, lanes)
            h32 = ir.VectorType(i32, lanes // 2)
            even = ir.Constant(h32, [2 * i for i in range(lanes // 2)])
            odd = ir.Constant(h32, [2 * i + 1 for i in range(lanes // 2)])

            def c(v):
                return ir.Constant(nv.type, v)

            def row_ptr(arr, first, r, width):
                return builder.gep(arr.data, [builder.add(
                    builder.mul(builder.add(first, c(r)), width), k0v)])

            wp = [row_ptr(wa, j0v, r, kw) for r in range(n_rows)]
            xp = [row_ptr(xa, a0v, q, kx) for q in range(n_vec)]
            accs = [[cgutils.alloca_once_value(builder, ir.Constant(h32, None))
                     for _ in range(n_vec)] for _ in range(n_rows)]
            pfn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
                ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32, i32]), "llvm.prefetch.p0i8")
            with cgutils.for_range(builder, builder.udiv(nv, c(lanes))) as loop:
                off = builder.mul(loop.index, c(lanes))
                if prefetch:
                    # one 64-byte line per row every second 32-byte block: a prefetch per
                    # block doubled the load-port work (4096x1024 GEMV: 116 vs 107 µs)
                    even_blk = builder.icmp_unsigned("==", builder.and_(loop.index, c(1)), c(0))
                    with builder.if_then(even_blk):
                        for p in wp:        # (read, highest locality, data cache)
                            builder.call(pfn, [builder.gep(p, [builder.add(off, pfv)]),
                                               ir.Constant(i32, 0), ir.Constant(i32, 3),
                                               ir.Constant(i32, 1)])
                ws = [builder.sext(builder.load(builder.bitcast(
                    builder.gep(p, [off]), v8.as_pointer()), align=1), v32) for p in wp]
                xs = [builder.sext(builder.load(builder.bitcast(
                    builder.gep(p, [off]), v16.as_pointer()), align=2), v32) for p in xp]
                for r in range(n_rows):
                    for q in range(n_vec):
                        p = builder.mul(ws[r], xs[q])
                        s = builder.add(builder.shuffle_vector(p, p, even),
                                        builder.shuffle_vector(p, p, odd))
                        builder.store(builder.add(builder.load(accs[r][q]), s), accs[r][q])
            i64 = ir.IntType(64)
            h64 = ir.VectorType(i64, lanes // 2)
            red = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, [h64]),
                                                 f"llvm.vector.reduce.add.v{lanes // 2}i64")
            for r in range(n_rows):
                for q in range(n_vec):
                    ptr = builder.gep(oa.data, [builder.add(builder.mul(c(r), ko), c(q))])
                    builder.store(builder.call(red, [builder.sext(builder.load(accs[r][q]), h64)]),
                                  ptr)
            return context.get_dummy_value()

        return types.void(w, types.intp, x, types.intp, types.intp, types.intp, acc,
                          types.intp), codegen

    return tile


# 32 lanes for the bulk of each row, 8 lanes for the K % 32 rest (input sizes such as 80)
_tile44, _tile41, _tile14, _tile11 = (_make_tile(r, v, LANES, True) for r, v in
                                      ((4, 4), (4, 1), (1, 4), (1, 1)))
_tail44, _tail41, _tail14, _tail11 = (_make_tile(r, v, 8, False) for r, v in
                                      ((4, 4), (4, 1), (1, 4), (1, 1)))


@njit(**NJIT)
def quantize16(v, rows, n_rows, xq, xs):
    """xq[a] = round(v[rows[a]] / xs[a]) as int16, xs[a] = max|v[rows[a]]| / 32767 (1 for a
    zero vector), for a < n_rows."""
    for a in range(n_rows):
        b = rows[a]
        bits = np.int32(0)
        for k in range(v.shape[1]):
            bits = max(bits, abs_bits(v[b, k]))     # vectorises; max|v| exactly
        mx = from_bits(bits)
        s = mx / Q16 if mx > 0 else np.float32(1.0)
        inv = np.float32(1.0) / s
        for k in range(v.shape[1]):
            xq[a, k] = np.int16(np.rint(v[b, k] * inv))
        xs[a] = s


@njit(**NJIT)
def _tile(w, j, nr, xq, a, nv, k0, n, acc, pf):
    if nr == 4:
        if nv == 4:
            _tile44(w, j, xq, a, k0, n, acc, pf)
        else:
            _tile41(w, j, xq, a, k0, n, acc, pf)
    elif nv == 4:
        _tile14(w, j, xq, a, k0, n, acc, pf)
    else:
        _tile11(w, j, xq, a, k0, n, acc, pf)


@njit(**NJIT)
def _tail(w, j, nr, xq, a, nv, k0, n, acc):
    if nr == 4:
        if nv == 4:
            _tail44(w, j, xq, a, k0, n, acc, 0)
        else:
            _tail41(w, j, xq, a, k0, n, acc, 0)
    elif nv == 4:
        _tail14(w, j, xq, a, k0, n, acc, 0)
    else:
        _tail11(w, j, xq, a, k0, n, acc, 0)


@njit(**NJIT)
def products(w, scale, xq, xs, n_vec, out, dst, accumulate, backward=False):
    """out[dst[a], j] (+)= scale[j]·xs[a]·Σ_k w[j, k]·xq[a, k] for a < n_vec, every row j.
    Weight rows outer (the matrix streams from memory once per call), 4x4 tiles of rows x
    vectors, single rows/vectors at the edges; the K % 32 rest in 8-lane tiles, the K % 8 rest
    in scalar integer code. backward: row tiles last to first (same results: rows are
    independent). A recurrent GEMV alternating direction step by step finds the rows it read
    last still in L2 at its start, instead of LRU evicting every row before its reuse when
    the matrix is larger than L2 (measured 4096x1024 int8, 4 MB vs 2 MB L2: see
    docs/quant.md)."""
    n, k_len = w.shape
    n4 = n - n % 4
    pf = -PREFETCH if backward else PREFETCH
    kv = k_len - k_len % LANES
    k8 = k_len - k_len % 8
    acc = np.zeros((4, 4), dtype=np.int64)
    if n_vec == 1 and kv == k_len:
        _gemv1(w, scale, xq, xs[0], out, dst[0], accumulate, n4, kv, pf, backward, acc)
        first = n4 // 4             # rows [n4, n) below, as single-row tiles
    else:
        first = 0
    tot = np.zeros((4, 4), dtype=np.int64)
    for ti in range(first, n4 // 4 + n % 4):
        if ti < n4 // 4:
            nr = 4
            j = n4 - 4 - 4 * ti if backward else 4 * ti
        else:
            nr = 1
            j = n4 + ti - n4 // 4
        a = 0
        while a < n_vec:
            nv = 4 if a + 4 <= n_vec else 1
            tot[:] = 0
            for k0 in range(0, kv, BLOCK):
                _tile(w, j, nr, xq, a, nv, k0, min(BLOCK, kv - k0), acc, pf)
                for r in range(nr):
                    for q in range(nv):
                        tot[r, q] += acc[r, q]
            if kv < k8:
                _tail(w, j, nr, xq, a, nv, kv, k8 - kv, acc)
                for r in range(nr):
                    for q in range(nv):
                        tot[r, q] += acc[r, q]
            if k8 < k_len:
                for r in range(nr):
                    for q in range(nv):
                        s = np.int64(0)
                        for k in range(k8, k_len):
                            s += np.int64(w[j + r, k]) * np.int64(xq[a + q, k])
                        tot[r, q] += s
            for r in range(nr):
                for q in range(nv):
                    val = scaled_total(tot[r, q], scale[j + r], xs[a + q])
                    b = dst[a + q]
                    out[b, j + r] = out[b, j + r] + val if accumulate else val
            a += nv


@njit(**NJIT)
def _gemv1(w, scale, xq, x_step, out, b, accumulate, n4, kv, pf, backward, acc):
    """Rows [0, n4) of `products` for one vector whose length is a multiple of LANES: 4x1
    tiles with the per-tile bookkeeping in scalars (the general loop's 4x4 scratch and
    dynamic tile shape cost ~7 µs per 4096-row call, ~5 % of the batch-1 GEMV)."""
    for ti in range(n4 // 4):
        j = n4 - 4 - 4 * ti if backward else 4 * ti
        t0 = np.int64(0)
        t1 = np.int64(0)
        t2 = np.int64(0)
        t3 = np.int64(0)
        for k0 in range(0, kv, BLOCK):
            _tile41(w, j, xq, 0, k0, min(BLOCK, kv - k0), acc, pf)
            t0 += acc[0, 0]
            t1 += acc[1, 0]
            t2 += acc[2, 0]
            t3 += acc[3, 0]
        v0 = scaled_total(t0, scale[j], x_step)
        v1 = scaled_total(t1, scale[j + 1], x_step)
        v2 = scaled_total(t2, scale[j + 2], x_step)
        v3 = scaled_total(t3, scale[j + 3], x_step)
        if accumulate:
            out[b, j] += v0
            out[b, j + 1] += v1
            out[b, j + 2] += v2
            out[b, j + 3] += v3
        else:
            out[b, j] = v0
            out[b, j + 1] = v1
            out[b, j + 2] = v2
            out[b, j + 3] = v3
