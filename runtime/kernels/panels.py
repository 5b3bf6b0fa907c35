"""Panel GEMV: y += W x with W stored as column panels, accumulators kept in registers.

Layout (chosen at load time, `to_panels`): W [R, K] becomes P [ceil(R/64)*4, K, 16]: panel p
holds rows 16p..16p+15, and for each k their 16 weights are contiguous. One pass over a group
of four panels keeps 64 outputs in eight 8-lane vector accumulators: per k it broadcasts x[k]
and issues eight FMAs on contiguous weight loads, with no horizontal reductions. Numba cannot
express vector registers, so the inner loop is written as LLVM IR (`_panel_group`).
Measured against eight-row dot products: 1.3x faster at 256 units (8.0 vs 10.6 us for a
1024x256 GEMV), 1.2x at 512, equal at 1024 (memory-bound).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from edgeseq.runtime.kernels.flags import NJIT

PANEL = 16      # rows per panel: two 8-lane vectors
GROUP = 4       # panels per pass: eight independent accumulators hide the FMA latency
ROWS_PER_GROUP = PANEL * GROUP


ALIGN = 64      # bytes: one panel row (16 floats) is then exactly one cache line


def aligned_zeros(n: int) -> np.ndarray:
    """n float32 zeros starting on a 64-byte boundary. NOTE: NumPy only guarantees 16-byte
    alignment; a panel row straddling two cache lines made the 128-unit GEMV 1.3x slower
    (3.0 vs 2.36 us for 512x128, min of 3000 calls)."""
    raw = np.zeros(n + ALIGN // 4, dtype=np.float32)
    start = (-raw.ctypes.data % ALIGN) // 4
    return raw[start:start + n]


def to_panels(w: np.ndarray) -> np.ndarray:
    """[R, K] float32 -> [ceil(R/64)*4, K, 16] panels (rows padded with zeros), 64-byte
    aligned."""
    r, k = w.shape
    rp = -(-r // ROWS_PER_GROUP) * ROWS_PER_GROUP
    padded = np.zeros((rp, k), dtype=np.float32)
    padded[:r] = w
    out = aligned_zeros(rp * k).reshape(rp // PANEL, k, PANEL)
    out[...] = padded.reshape(rp // PANEL, PANEL, k).transpose(0, 2, 1)
    return out


def padded_rows(rows: int) -> int:
    """Output length a panel GEMV writes for `rows` weight rows."""
    return -(-rows // ROWS_PER_GROUP) * ROWS_PER_GROUP


def _splat(builder: ir.IRBuilder, value, lanes: int = 8) -> ir.Value:
    """A vector holding `value` in every lane (IR for a broadcast)."""
    i32 = ir.IntType(32)
    vt = ir.VectorType(ir.FloatType(), lanes)
    one = builder.insert_element(ir.Constant(vt, ir.Undefined), value, ir.Constant(i32, 0))
    return builder.shuffle_vector(one, ir.Constant(vt, ir.Undefined),
                                  ir.Constant(ir.VectorType(i32, lanes), [0] * lanes))


@intrinsic
def _panel_group(typingctx, wp, x, out, g, k_len):
    """out[64g : 64g+64] += panels 4g..4g+3 of wp times x (k_len >= 1).
    Per k: one broadcast of x[k] and four 16-lane FMAs, each on one panel row (one cache line
    when the panels are 64-byte aligned). Measured (512x128, min of 5000 calls): 1.83 us vs
    2.12 us with eight 8-lane accumulators; 256 units 6.45 vs 7.36 us. Without AVX-512 LLVM
    splits each into two 8-lane FMAs (the previous form)."""
    # contiguous float32 only: the IR assumes unit strides
    if not all(isinstance(a, types.Array) and a.layout == "C" and a.dtype == types.float32
               for a in (wp, x, out)):
        return None
    sig = types.void(wp, x, out, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        w_a = context.make_array(signature.args[0])(context, builder, args[0])
        x_a = context.make_array(signature.args[1])(context, builder, args[1])
        o_a = context.make_array(signature.args[2])(context, builder, args[2])
        g, k_len = args[3], args[4]
        f32, i64 = ir.FloatType(), ir.IntType(64)
        v16 = ir.VectorType(f32, PANEL)
        fma = cgutils.get_or_insert_function(builder.module,
                                             ir.FunctionType(v16, [v16, v16, v16]),
                                             "llvm.fma.v16f32")
        panel_len = builder.mul(k_len, ir.Constant(i64, PANEL))
        starts = [builder.mul(builder.add(builder.mul(g, ir.Constant(i64, GROUP)),
                                          ir.Constant(i64, p)), panel_len) for p in range(GROUP)]
        entry = builder.block
        loop = builder.append_basic_block("panel_loop")
        done = builder.append_basic_block("panel_done")
        builder.branch(loop)
        builder.position_at_end(loop)
        k = builder.phi(i64)
        k.add_incoming(ir.Constant(i64, 0), entry)
        accs = []
        for _ in range(GROUP):
            acc = builder.phi(v16)
            acc.add_incoming(ir.Constant(v16, [0.0] * PANEL), entry)
            accs.append(acc)
        splat = _splat(builder, builder.load(builder.gep(x_a.data, [k])), PANEL)
        koff = builder.mul(k, ir.Constant(i64, PANEL))
        new = []
        for p in range(GROUP):
            idx = builder.add(starts[p], koff)
            w = builder.load(builder.bitcast(builder.gep(w_a.data, [idx]), v16.as_pointer()),
                             align=4)
            new.append(builder.call(fma, [w, splat, accs[p]]))
        k1 = builder.add(k, ir.Constant(i64, 1))
        k.add_incoming(k1, loop)
        for acc, v in zip(accs, new):
            acc.add_incoming(v, loop)
        builder.cbranch(builder.icmp_signed("<", k1, k_len), loop, done)
        builder.position_at_end(done)
        base = builder.mul(g, ir.Constant(i64, ROWS_PER_GROUP))
        for j, v in enumerate(new):
            at = builder.add(base, ir.Constant(i64, PANEL * j))
            ptr = builder.bitcast(builder.gep(o_a.data, [at]), v16.as_pointer())
            builder.store(builder.fadd(builder.load(ptr, align=4), v), ptr, align=4)
        return context.get_dummy_value()
    return sig, codegen


@njit(**NJIT)
def panel_gemv_acc(wp, x, out):
    """out[:R_padded] += W x for panels wp [R_padded/16, K, 16], x [K] and out [>= R_padded]
    (all C-contiguous float32). K = 0 adds nothing."""
    k_len = wp.shape[1]
    if k_len == 0:
        return
    for g in range(wp.shape[0] // GROUP):
        _panel_group(wp, x, out, g, k_len)


def _rows_codegen(n_rows: int, n_panels: int):
    """Codegen of o_i[16p : 16p + 16n_panels] += panels p.. of wp times x_i for n_rows
    vectors x_i at once (arguments wp, x_0.., o_0.., p, k_len): each 16-lane weight load
    feeds n_rows FMAs, n_rows * n_panels accumulators."""
    def codegen(context, builder, signature, args):
        n_arr = 1 + 2 * n_rows
        data = [context.make_array(t)(context, builder, v).data
                for t, v in zip(signature.args[:n_arr], args[:n_arr])]
        w_ptr, xs, outs = data[0], data[1:1 + n_rows], data[1 + n_rows:n_arr]
        p, k_len = args[n_arr], args[n_arr + 1]
        i64 = ir.IntType(64)
        v16 = ir.VectorType(ir.FloatType(), 16)
        fma = cgutils.get_or_insert_function(builder.module,
                                             ir.FunctionType(v16, [v16, v16, v16]),
                                             "llvm.fma.v16f32")
        panel_len = builder.mul(k_len, ir.Constant(i64, PANEL))
        starts = [builder.mul(builder.add(p, ir.Constant(i64, h)), panel_len)
                  for h in range(n_panels)]
        entry = builder.block
        loop = builder.append_basic_block("rows_loop")
        done = builder.append_basic_block("rows_done")
        builder.branch(loop)
        builder.position_at_end(loop)
        k = builder.phi(i64)
        k.add_incoming(ir.Constant(i64, 0), entry)
        accs = []
        for _ in range(n_rows * n_panels):
            acc = builder.phi(v16)
            acc.add_incoming(ir.Constant(v16, [0.0] * 16), entry)
            accs.append(acc)
        koff = builder.mul(k, ir.Constant(i64, PANEL))
        w = [builder.load(builder.bitcast(builder.gep(w_ptr, [builder.add(st, koff)]),
                                          v16.as_pointer()), align=4) for st in starts]
        new = []
        for r in range(n_rows):
            splat = _splat(builder, builder.load(builder.gep(xs[r], [k])), 16)
            for h in range(n_panels):
                new.append(builder.call(fma, [w[h], splat, accs[n_panels * r + h]]))
        k1 = builder.add(k, ir.Constant(i64, 1))
        k.add_incoming(k1, loop)
        for acc, v in zip(accs, new):
            acc.add_incoming(v, loop)
        builder.cbranch(builder.icmp_signed("<", k1, k_len), loop, done)
        builder.position_at_end(done)
        base = builder.mul(p, ir.Constant(i64, PANEL))
        for r in range(n_rows):
            for h in range(n_panels):
                at = builder.add(base, ir.Constant(i64, 16 * h))
                ptr = builder.bitcast(builder.gep(outs[r], [at]), v16.as_pointer())
                builder.store(builder.fadd(builder.load(ptr, align=4), new[n_panels * r + h]),
                              ptr, align=4)
        return context.get_dummy_value()
    return codegen


def _rows_signature(arrays: tuple):
    # contiguous float32 only: the IR assumes unit strides
    if not all(isinstance(a, types.Array) and a.layout == "C" and a.dtype == types.float32
               for a in arrays):
        return None
    return types.void(*arrays, types.intp, types.intp)


@intrinsic
def _panel_rows4(typingctx, wp, x0, x1, x2, x3, o0, o1, o2, o3, p, k_len):
    """o_i[16p : 16p+32] += panels p, p+1 of wp times x_i, for four vectors x_0..x_3 at once:
    each 16-lane weight load feeds four FMAs (batch rows share the weights from registers).
    16-lane vectors here (AVX-512 where the CPU has it): measured 1.2x faster than 8 lanes
    for 16 batch rows at 256 units; compute-bound, unlike the one-row GEMV."""
    sig = _rows_signature((wp, x0, x1, x2, x3, o0, o1, o2, o3))
    return None if sig is None else (sig, _rows_codegen(4, 2))


@intrinsic
def _panel_rows8(typingctx, wp, x0, x1, x2, x3, x4, x5, x6, x7, o0, o1, o2, o3, o4, o5, o6,
                 o7, p, k_len):
    """o_i[16p : 16p+16] += panel p of wp times x_i for eight vectors: the odd last panel of
    `project_panels` with as many accumulators (eight) as a pair pass over four rows."""
    sig = _rows_signature((wp, x0, x1, x2, x3, x4, x5, x6, x7, o0, o1, o2, o3, o4, o5, o6, o7))
    return None if sig is None else (sig, _rows_codegen(8, 1))


# rows of v per block of `panel_gemv_rows_acc`: 64 rows of up to 1024 inputs (256 KiB) stay
# in L2 while every panel pair passes over them
ROW_BLOCK = 64


@njit(**NJIT)
def panel_gemv_rows_acc(wp, v, rows, n_rows, out):
    """out[b] += W v[b] for b in rows[:n_rows] (v [N, K], out [N, >= R_padded]): four batch
    rows share each pass over a panel pair (`_panel_rows4`), the rest one at a time. Rows
    go in blocks of ROW_BLOCK, and within a block each panel pair (K x 32 weights) serves
    every four rows before the next pair is read, so for many rows (the input projection of
    a whole sequence) W streams from memory once per block instead of once per four rows:
    100 rows x 1024 inputs by 4096 weight rows 26.4 -> 17.0 ms and 29.3 -> 26.8 ms (min of
    alternating calls, two runs at load 7-9), equal where W fits in L2; the sums are the
    same either way (bitwise)."""
    k_len = wp.shape[1]
    if k_len == 0:
        return
    n4 = n_rows - n_rows % 4
    for r0 in range(0, n4, ROW_BLOCK):
        r1 = min(r0 + ROW_BLOCK, n4)
        # panels come in groups of four, so pairs never run past the end
        for p in range(0, wp.shape[0], 2):
            for a in range(r0, r1, 4):
                b0, b1, b2, b3 = rows[a], rows[a + 1], rows[a + 2], rows[a + 3]
                _panel_rows4(wp, v[b0], v[b1], v[b2], v[b3], out[b0], out[b1], out[b2],
                             out[b3], p, k_len)
    for a in range(n4, n_rows):
        panel_gemv_acc(wp, v[rows[a]], out[rows[a]])


@njit(**NJIT)
def panel_rows_acc(wp, v, n_rows, out):
    """out[r] += W v[r] for the consecutive rows r < n_rows (v [>= n_rows, K], out
    [>= n_rows, >= R_padded]): `panel_gemv_rows_acc` without an index array to allocate
    (the same blocks and sums, bitwise)."""
    k_len = wp.shape[1]
    if k_len == 0:
        return
    n4 = n_rows - n_rows % 4
    for r0 in range(0, n4, ROW_BLOCK):
        r1 = min(r0 + ROW_BLOCK, n4)
        for p in range(0, wp.shape[0], 2):
            for a in range(r0, r1, 4):
                _panel_rows4(wp, v[a], v[a + 1], v[a + 2], v[a + 3], out[a], out[a + 1],
                             out[a + 2], out[a + 3], p, k_len)
    for a in range(n4, n_rows):
        panel_gemv_acc(wp, v[a], out[a])


@njit(**NJIT)
def project_panels(x, wp):
    """[T, N, R_padded] input contributions W x[t, b] from W_x in panels (x C-contiguous):
    four (t, b) rows per pass over a panel pair, in row blocks (`panel_rows_acc`). Used
    for streamed chunks and, for small models, whole sequences (29x128 by 512 rows: 30 us vs
    42 us for NumPy's GEMM plus its call overhead). wp may hold any number of panels (an
    odd last one runs over eight rows at a time, the last rows as one repeated group, never
    through the four-panel GEMV), so a 75-row GRU W_x needs 5 panels, not 8; the sums are
    the same (bitwise)."""
    n_rows = x.shape[0] * x.shape[1]
    n_pan = wp.shape[0]
    n_even = n_pan - n_pan % 2
    width = n_pan * PANEL
    # room for a whole last group of 8 rows: the tails need no allocation of their own
    buf = np.zeros(-(-n_rows // 8) * 8 * width, dtype=np.float32)
    o2 = buf.reshape(-1, width)
    x2 = x.reshape(n_rows, x.shape[2])
    k_len = wp.shape[1]
    if n_rows > 0 and k_len > 0:
        n4 = n_rows - n_rows % 4
        last = n_rows - 1
        if n_even > 0 and n_even % 4 == 0:
            # NOTE: whole panel quads: the tail rows take the one-row GEMV (a streamed step
            # is one row: the repeated-row quad below would do 4x its FMAs, +23 % a step)
            panel_rows_acc(wp[:n_even], x2, n_rows, o2)
        elif n_even > 0:
            wpe = wp[:n_even]
            panel_rows_acc(wpe, x2, n4, o2)
            if n4 < n_rows:
                # the tail quad repeats the last row; its copies land in the padding rows
                r1, r2, r3 = min(n4 + 1, last), min(n4 + 2, last), min(n4 + 3, last)
                for p in range(0, n_even, 2):
                    _panel_rows4(wpe, x2[n4], x2[r1], x2[r2], x2[r3], o2[n4], o2[n4 + 1],
                                 o2[n4 + 2], o2[n4 + 3], p, k_len)
        if n_even < n_pan:
            for a in range(0, n_rows, 8):
                _panel_rows8(wp, x2[a], x2[min(a + 1, last)], x2[min(a + 2, last)],
                             x2[min(a + 3, last)], x2[min(a + 4, last)], x2[min(a + 5, last)],
                             x2[min(a + 6, last)], x2[min(a + 7, last)], o2[a], o2[a + 1],
                             o2[a + 2], o2[a + 3], o2[a + 4], o2[a + 5], o2[a + 6], o2[a + 7],
                             n_even, k_len)
    return buf[:n_rows * width].reshape((x.shape[0], x.shape[1], width))


def to_whole_panels(w: np.ndarray) -> np.ndarray:
    """`to_panels` trimmed to the panels that hold rows of w (rows padded to a multiple of
    16, not 64): the layout `project_panels` needs at least."""
    return np.ascontiguousarray(to_panels(w)[:-(-w.shape[0] // PANEL)])
