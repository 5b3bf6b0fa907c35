"""Numba intrinsics of the ahead-of-time entry: raw addresses in an int64 table become typed
pointers (for `numba.carray`), and an output array is handed over to the caller by its
MemInfo (one reference taken here, dropped by the loader's `edgeseq_release`)."""
from __future__ import annotations

from numba import types
from numba.extending import intrinsic


def _pointer_cast(dtype):
    @intrinsic
    def cast(typingctx, addr):
        sig = types.CPointer(dtype)(types.int64)

        def codegen(context, builder, sig, args):
            return builder.inttoptr(args[0], context.get_value_type(sig.return_type))
        return sig, codegen
    return cast


f32_ptr = _pointer_cast(types.float32)
f64_ptr = _pointer_cast(types.float64)
i64_ptr = _pointer_cast(types.int64)


@intrinsic
def keep(typingctx, arr):
    """The MemInfo address of `arr` (0 for a view without one), after one incref: the array
    outlives the entry call until the caller releases it."""
    if not isinstance(arr, types.Array):
        return None
    sig = types.int64(arr)

    def codegen(context, builder, sig, args):
        ary = context.make_array(arr)(context, builder, args[0])
        context.nrt.incref(builder, arr, args[0])
        return builder.ptrtoint(ary.meminfo, context.get_value_type(types.int64))
    return sig, codegen
