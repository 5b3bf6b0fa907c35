"""int8-activation products with a zero point per vector: TFLite's hybrid kernels with
`asymmetric_quantize_inputs` (what TF's dynamic-range quantiser writes).

Each activation vector is quantised as TFLite's AsymmetricQuantizeFloats does
(`quantize8_asymmetric`; the float64 reference `edgeseq.reference.
quantize_activations8_asymmetric` defines the same bits): the range [min(0, min v),
max(0, max v)] over 255 steps, a zero point zp in [-128, 127], q in [-128, 127]. The product
is the symmetric kernels' (`s8dot`, the same packed weights and formulations) with each row's
integer total less zp·Σ_k w[j, k] (the packed row sums), still exact in int32, then the same
float32 scaling: float32(float32(Σ_k w[j, k]·(q[k] − zp)) · scale[j]) · step.

q = −128 is within every formulation's exact range: VNNI reads q + 128 ∈ [0, 255] as u8;
AVX2's `vpmaddubsw(|q|, w xor [q < 0])` reads |−128| = 0x80 as the unsigned 128 and keeps
each pair within [−32768, 32512] (see `s8dot`); the others widen to int16/int32.
"""
from __future__ import annotations


import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from edgeseq.runtime.kernels.flags import NJIT
from edgeseq.runtime.kernels.s8dot import CHOSEN, OFFSET, Packed8, make_tile, packed8
from edgeseq.runtime.kernels.strict import mul32

_OWN = ("nsz",)         # any flag keeps Numba's fastmath pass off the instruction (strict.py)
_FLOATS = (types.float32, types.float64)


class Packed8Asymmetric(Packed8):
    """A `s8dot.Packed8` whose products quantise the activations with a zero point (a Numba
    record type of its own: the kernels pick the form by type)."""
    __slots__ = ()


def packed8_asymmetric(w: np.ndarray, scale: np.ndarray) -> Packed8Asymmetric:
    """`Packed8Asymmetric` of an int8 [R, K] matrix and its float32 per-row scale [R]."""
    return packed8(w, scale, Packed8Asymmetric)


@intrinsic
def div_strict(typingctx, a, b):
    """a / b, correctly rounded in the operands' float type (never a reciprocal)."""
    if not (a in _FLOATS and a == b):
        return None

    def codegen(context, builder, sig, args):
        return builder.fdiv(args[0], args[1], flags=_OWN)

    return a(a, b), codegen


@intrinsic
def round_away(typingctx, x):
    """x rounded to an integer value, halves away from zero (C's round, TFLite's
    TfLiteRound): llvm.round."""
    if x not in _FLOATS:
        return None

    def codegen(context, builder, sig, args):
        ty = args[0].type
        fn = builder.module.declare_intrinsic("llvm.round", [ty])
        return builder.call(fn, [args[0]])

    return x(x), codegen


@intrinsic
def order_bits(typingctx, x):
    """int32 key of float32 x whose integer order is the float order (NaN aside): the IEEE
    bits, magnitude bits flipped for negatives. An integer min/max vectorises."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        bits = builder.bitcast(args[0], ir.IntType(32))
        sign = builder.ashr(bits, ir.Constant(ir.IntType(32), 31))
        return builder.xor(bits, builder.and_(sign, ir.Constant(ir.IntType(32), 0x7FFFFFFF)))

    return types.int32(x), codegen


@intrinsic
def from_order_bits(typingctx, key):
    """The float32 of an `order_bits` key."""
    if key != types.int32:
        return None

    def codegen(context, builder, sig, args):
        sign = builder.ashr(args[0], ir.Constant(ir.IntType(32), 31))
        bits = builder.xor(args[0], builder.and_(sign, ir.Constant(ir.IntType(32), 0x7FFFFFFF)))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(key), codegen


@njit(**NJIT)
def quantize8_asymmetric(v, rows, n_rows, xq, xs, zp):
    """xq[a, :K] = clip(zp[a] + round(v[rows[a]] · inv), -128, 127) + OFFSET as (wrapping)
    int8, xs[a] the step, zp[a] the zero point, for a < n_rows, rounded exactly as TFLite's
    AsymmetricQuantizeFloats (module doc; the reference `quantize_activations8_asymmetric`).
    Columns of xq past K are left as they are (the packed weights are zero there)."""
    for a in range(n_rows):
        b = rows[a]
        lo = hi = np.int32(0)                   # the range always holds 0
        for k in range(v.shape[1]):
            key = order_bits(v[b, k])
            lo = min(lo, key)
            hi = max(hi, key)
        rmin, rmax = from_order_bits(lo), from_order_bits(hi)
        if rmin == rmax:
            for k in range(v.shape[1]):
                xq[a, k] = np.int8(OFFSET)       # q = 0 (as u8 bits 128 on VNNI)
            xs[a] = np.float32(1.0)
            zp[a] = 0
            continue
        scale = div_strict(np.float64(rmax - rmin), 255.0)
        lo_s, hi_s = div_strict(np.float64(rmin), scale), div_strict(np.float64(rmax), scale)
        zd = -128.0 - lo_s if 128.0 + abs(lo_s) < 127.0 + abs(hi_s) else 127.0 - hi_s
        z = -128 if zd <= -128.0 else 127 if zd >= 127.0 else int(round_away(zd))
        step = np.float32(scale)
        inv = np.float32(div_strict(1.0, np.float64(step)))
        for k in range(v.shape[1]):
            q = z + np.int32(round_away(mul32(v[b, k], inv)))
            xq[a, k] = np.int8(min(max(q, -128), 127) + OFFSET)     # wraps as u8 bits
        xs[a] = step
        zp[a] = z


# the same tiles as `s8dot.products8` (4 panels for one vector, 2 x 4 for many, the edges one
# each; one-vector tiles only where the formulation says so), with the zero-point correction
_gemv4, _tile24, _tile14, _tile11 = (make_tile(CHOSEN, p, v, prefetch=False, zero_points=True)
                                     for p, v in ((4, 1), (2, 4), (1, 4), (1, 1)))
_GEMV_ONLY = CHOSEN.gemv_tiles_only


# NOTE: the tile walk is `s8dot.products8`'s (same panel order, so the same bits in both row
# orders); only the tiles and their zp argument differ
@njit(**NJIT)
def products8_asymmetric(bp, scale, wsum, groups, xq, xs, zp, n_vec, out, dst, accumulate,
                         backward=False):
    """`s8dot.products8` for `quantize8_asymmetric` activations: out[dst[a], j] (+)=
    float32(float32(Σ_k w[j, k]·(q[a, k] − zp[a])) · scale[j]) · xs[a]."""
    n_panels = bp.shape[0] // groups
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
                    _gemv4(bp, first, groups, xq, a, dst, out, scale, wsum, xs, accumulate, 0,
                           zp)
                else:
                    _tile11(bp, first, groups, xq, a, dst, out, scale, wsum, xs, accumulate, 0,
                            zp)
                a += 1
            elif a + 4 <= n_vec:
                if step == 2:
                    _tile24(bp, first, groups, xq, a, dst, out, scale, wsum, xs, accumulate, 0,
                            zp)
                else:
                    _tile14(bp, first, groups, xq, a, dst, out, scale, wsum, xs, accumulate, 0,
                            zp)
                a += 4
            else:
                for pp in range(step):
                    _tile11(bp, first + pp, groups, xq, a, dst, out, scale, wsum, xs,
                            accumulate, 0, zp)
                a += 1
        p += step
