"""Kernels the generated whole-graph functions (runtime/codegen) call through a function
pointer instead of linking them into their own module.

A Numba call of an `@njit` kernel links the kernel's code into the caller's module, and LLVM
re-optimises and re-emits it for every caller: a generated function that calls the LSTM,
panel and convolution kernels took 10-17 s to compile, most of it spent on those kernels
again. Called through a pointer, a kernel is compiled once (and cached on disk, `cache=True`)
for the one signature listed here, and the generated function holds only the call.

`ENTRIES` is the one table: entry name -> the kernel and its argument types (C-contiguous
arrays, int64, bool: one specialisation per kernel). For each entry this module exposes an
intrinsic of the same name, `name(address, *args)`, that calls the kernel's compiled code
at `address` with Numba's calling convention (its exceptions propagate as from a direct
call). The address is never part of the generated source (that is cached on disk by its
text): the caller passes a table of addresses taken at load, `address(name)`.
"""
from __future__ import annotations

from dataclasses import dataclass

from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.core.typing import signature
from numba.extending import intrinsic

from edgeseq.runtime.kernels import const_views, graph_ops, gru, gru_plain, lstm, panels, rnn

__all__ = ["ENTRIES", "Entry", "address"]

_F32 = {r: types.Array(types.float32, r, "C") for r in (1, 2, 3, 4)}
_I64 = types.Array(types.int64, 1, "C")
_F64 = types.Array(types.float64, 1, "C")
_i, _b, _f = types.int64, types.boolean, types.float64


@dataclass(frozen=True)
class Entry:
    """A kernel callable through a pointer, with the one signature it is compiled for."""
    name: str
    kernel: object            # the @njit dispatcher
    args: tuple               # Numba argument types
    # linked in the JIT form too: the kernel's loops gain from the caller's constants
    linked: bool = False

    def compile_result(self):
        """The kernel compiled (or loaded from Numba's cache) for `args`."""
        self.kernel.compile(self.args)
        return self.kernel.overloads[self.args]

    def address(self) -> int:
        """Address of the compiled kernel's Numba-convention function in this process."""
        cres = self.compile_result()
        addr = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
        if not addr:
            raise RuntimeError(f"kernel entry '{self.name}': no compiled function address")
        return addr


_TABLE = (
    # the input projection of a recurrent node: x [T, N, I], W_x in panels
    Entry("project_panels", panels.project_panels, (_F32[3], _F32[3])),
    # the default LSTM / GRU cell over full lengths (kernels/lstm.py, kernels/gru_plain.py)
    Entry("lstm_plain_sequence", lstm._plain_sequence,
          (_F32[3], _F32[3], _F32[2], _i, _b, _i, _F32[2], _F32[2], _F32[3])),
    Entry("gru_plain_sequence", gru_plain.plain_gru_sequence,
          (_F32[3], _F32[3], _F32[3], _F32[2], _i, _b, _i, _F32[2], _F32[3])),
    # the general sequence kernels (lengths, clips, projections, other activations)
    Entry("lstm_sequence", lstm._lstm_sequence,
          (_F32[3], _F32[2], _i, _F32[3], _F32[2], _F32[2], _I64, _F64, _I64, _F32[2],
           _F32[2], _F32[3])),
    Entry("gru_sequence", gru._gru_sequence,
          (_F32[3], _F32[2], _i, _F32[3], _F32[3], _F32[2], _I64, _F64, _I64, _F32[2],
           _F32[3])),
    Entry("rnn_sequence", rnn._rnn_sequence,
          (_F32[3], _F32[2], _i, _F32[3], _F32[2], _I64, _F64, _I64, _F32[2], _F32[3])),
    # glue ops with their arena (kernels/graph_ops.py)
    Entry("linear_ws", graph_ops.linear_ws,
          (_F32[2], _F32[3], _i, _F32[1], _b, _f, _F32[1], _I64)),
    # NOTE: through a pointer since a quiet-machine A/B: silero's push 0.51 vs 0.50x
    # onnxruntime (within noise; 4 % slower at load ~5), its cold start 6.8-7.1 s vs 7.4 s
    # (linked, the loops specialise on the kernel size, stride and fused activation)
    Entry("conv1d_ws", graph_ops.conv1d_ws,
          (_F32[3], _F32[3], _F32[1], _b, _i, _i, _i, _i, _i, _i, _i, _F32[1], _I64),
          linked=False),
    Entry("softmax_ws", graph_ops.softmax_ws, (_F32[3], _b, _F32[1], _I64)),
    Entry("reduce_ws", graph_ops.reduce_ws, (_F32[3], _b, _F32[1], _I64)),
    Entry("gather_ws", graph_ops.gather_ws, (_F32[3], _I64, _F32[1], _I64)),
    Entry("put_axis1", graph_ops.put_axis1, (_F32[3], _F32[3], _i)),
    Entry("slice_bounds", graph_ops.slice_bounds, (_i, _i, _i, _i)),
    Entry("slice3_ws", graph_ops.slice3_ws, (_F32[3], _i, _i, _i, _i, _F32[1], _I64)),
    Entry("permute3_ws", graph_ops.permute3_ws, (_F32[3], _i, _i, _i, _F32[1], _I64)),
    # a recurrent node's initial state and lengths
    Entry("state3", graph_ops.state3, (_i, _i, _i, _F32[3], _F32[3], _b, _i)),
    Entry("full_lengths_ws", graph_ops.full_lengths_ws, (_i, _i, _F32[1], _I64)),
    Entry("lengths_ws", graph_ops.lengths_ws, (_I64, _F32[1], _I64)),
    # the arena's buffers, the results' copies out of it, views of the packed constants: a
    # few lines each, but every one inlined cost the generated function's compile too
    *(Entry(f"take{r}", getattr(graph_ops, f"take{r}"), (_F32[1], _I64) + (_i,) * r)
      for r in (1, 2, 3, 4)),
    *(Entry(f"detach{r}", graph_ops.detach, (_F32[r], _F32[1])) for r in (1, 2, 3, 4)),
    *(Entry(f"view{r}", getattr(const_views, f"view{r}"), (_F32[1], _i) + (_i,) * r)
      for r in (2, 3, 4)),
)
ENTRIES: dict[str, Entry] = {e.name: e for e in _TABLE}


def address(name: str) -> int:
    return ENTRIES[name].address()


def _caller(entry: Entry):
    """The intrinsic `entry.name(address, *args)`: arguments are cast to the entry's types
    (a literal int becomes int64); anything that cannot be is a typing error naming the
    entry, never a second specialisation."""
    want = entry.args

    def typer(typingctx, addr, *args):
        if not isinstance(addr, types.Integer) or len(args) != len(want):
            raise TypingError(f"kernel entry '{entry.name}' takes an address and "
                              f"{len(want)} arguments, got {(addr,) + tuple(args)}")
        for k, (got, w) in enumerate(zip(args, want)):
            if got != w and typingctx.can_convert(got, w) is None:
                raise TypingError(f"kernel entry '{entry.name}' argument {k}: {got} where "
                                  f"{w} is expected (kernels/pointer_calls.py)")
        ret = entry.compile_result().signature.return_type
        sig = signature(ret, types.int64, types.StarArgTuple.from_types(want))

        def codegen(context, builder, sig, llargs):
            vals = cgutils.unpack_tuple(builder, llargs[1])
            fnty = context.call_conv.get_function_type(ret, want)
            fptr = builder.inttoptr(llargs[0], fnty.as_pointer())
            status, out = context.call_conv.call_function(builder, fptr, ret, want, vals)
            with cgutils.if_unlikely(builder, status.is_error):
                context.call_conv.return_status_propagate(builder, status)
            return out
        return sig, codegen
    typer.__name__ = entry.name
    typer.__qualname__ = entry.name
    return intrinsic(typer)


for _e in _TABLE:
    globals()[_e.name] = _caller(_e)
