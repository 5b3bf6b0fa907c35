"""Float operations that the fast-math flags of the surrounding kernel cannot re-associate,
contract into an FMA or replace by a reciprocal estimate.

Why: the integer product kernels end in float arithmetic (int total -> float, × row scale,
× vector step; the activation step and its reciprocal). Inside an `@njit(**NJIT)` function
LLVM may evaluate such a chain differently in two copies of the same loop (e.g. after
unswitching the row order), which made the two row orders of a product differ in the last bit
on AArch64. These intrinsics emit plain `sitofp`/`fmul`/`fdiv` without fast-math flags, so
every code path rounds exactly as the float64 reference's float32 emulation does.

Numba's fastmath pass adds its flags to every float instruction that has *no* flags; these
carry `nsz` alone (the sign of a zero is all it may ignore), so the pass leaves them alone.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_OWN = ("nsz",)      # any flag keeps Numba's fastmath pass off the instruction


@intrinsic
def scaled_total(typingctx, total, row_scale, vec_scale):
    """float32((float32(total) * row_scale) * vec_scale), each step rounded to float32."""
    if not (isinstance(total, types.Integer) and row_scale == types.float32
            and vec_scale == types.float32):
        return None

    def codegen(context, builder, sig, args):
        t = context.cast(builder, args[0], sig.args[0], types.int64)
        f = builder.sitofp(t, ir.FloatType())
        return builder.fmul(builder.fmul(f, args[1], flags=_OWN), args[2], flags=_OWN)

    return types.float32(total, row_scale, vec_scale), codegen


@intrinsic
def div32(typingctx, a, b):
    """a / b in float32, correctly rounded (never a reciprocal estimate)."""
    if not (a == types.float32 and b == types.float32):
        return None

    def codegen(context, builder, sig, args):
        return builder.fdiv(args[0], args[1], flags=_OWN)

    return types.float32(a, b), codegen


@intrinsic
def mul32(typingctx, a, b):
    """a * b in float32, rounded once (never fused with a following add)."""
    if not (a == types.float32 and b == types.float32):
        return None

    def codegen(context, builder, sig, args):
        return builder.fmul(args[0], args[1], flags=_OWN)

    return types.float32(a, b), codegen


# |x| as its IEEE bits: for non-negative floats the integer order is the float order, and an
# integer max reduction vectorises (a float one needs the `nnan` flag the kernels never set):
# max |v| over a vector in 1/4 of the time, the same value (NaN: bits above +inf, as NaN
# propagates through the reference's np.max).
@intrinsic
def abs_bits(typingctx, x):
    """The int32 bits of |x| (x float32)."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        bits = builder.bitcast(args[0], ir.IntType(32))
        return builder.and_(bits, ir.Constant(ir.IntType(32), 0x7FFFFFFF))

    return types.int32(x), codegen


@intrinsic
def from_bits(typingctx, bits):
    """The float32 whose IEEE bits are `bits` (int32)."""
    if bits != types.int32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(bits), codegen
