"""The calling convention between the loader and an ahead-of-time compiled graph function,
shared by the compiler (runtime/aot) and the loader (runtime/native).

The native entry is `int64 edgeseq_entry(int64 *table)`; `table` holds, in this order:
  per argument   [data address, dim 0, ..., dim rank-1]   graph inputs, the packed constants
                                                         wf / wi / wd, carried states, flags
  per result     [MemInfo address, data address, dim 0, ...]   written by the entry: graph
                                                         outputs, then the final states
It returns 0, or 1 when the generated code refused the inputs (a shape check). Each result
is owned by the caller until it passes the MemInfo to `void edgeseq_release(int64)`, or
until `void edgeseq_collect(int64 *table, int64 *desc, int64 n)` copies and releases them
all in one call: desc holds per result (its offset in the table, destination address or 0
for none, bytes to copy).
"""
from __future__ import annotations

from dataclasses import dataclass

ENTRY = "edgeseq_entry"
RELEASE = "edgeseq_release"
COLLECT = "edgeseq_collect"
DTYPES = ("float32", "int64", "float64")


@dataclass(frozen=True)
class Slot:
    """One array in the table: where its fields start, its dtype and rank."""
    offset: int
    dtype: str
    rank: int


@dataclass(frozen=True)
class Layout:
    """Argument and result slots of one compiled graph function."""
    args: tuple            # Slot per argument, in call order
    results: tuple         # Slot per result (meminfo at offset, data at offset + 1, dims after)
    size: int              # int64 words of the whole table

    @classmethod
    def of(cls, arg_specs: list, result_specs: list) -> "Layout":
        """arg_specs / result_specs: (dtype, rank) per array, in call / return order."""
        args, results, at = [], [], 0
        for dt, rank in arg_specs:
            args.append(Slot(at, dt, rank))
            at += 1 + rank
        for dt, rank in result_specs:
            results.append(Slot(at, dt, rank))
            at += 2 + rank
        return cls(tuple(args), tuple(results), at)


def arg_specs(inputs: list, n_states: int, workspace: bool) -> list:
    """(dtype, rank) of the generated function's arguments: graph inputs, wf, wi, wd,
    the carried states, flags, and with `workspace` the arena ws and its bump pointer wsp
    (runtime/codegen/context.py describes them)."""
    return ([(dt, rank) for _, dt, rank in inputs]
            + [("float32", 1), ("int64", 1), ("float64", 1)]
            + [("float32", 3)] * n_states + [("int64", 1)]
            + ([("float32", 1), ("int64", 1)] if workspace else []))
