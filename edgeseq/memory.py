"""An estimate of a run's working memory, checked against a budget before anything is
allocated (the runtime's `Model(graph, memory_limit=...)`, and `edgeseq run` on the
reference engine).

A run keeps every value it computes until it returns (see `Model._execute`), and each
recurrent kernel holds float32 copies of its weights and projects every step's input at
once; so the estimate is the sum of every node output's bytes, plus per recurrent node its
weights and a (T*N, D*G*H) float32 buffer. Dims that are symbols ("T", "N")
count as 1 when a Model is built (the smallest run) and as the caller's sizes on each call;
a symbol made by shape inference ("<node>:<k>", e.g. a Conv1d output length) counts as the
largest size among the call's inputs. It is an estimate: scratch buffers inside a kernel are
not counted, so keep the budget below the machine's memory by a margin.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeseq.errors import MemoryLimitError
from edgeseq.graph import Graph
from edgeseq.ops import RECURRENT


@dataclass(frozen=True)
class Term:
    """Bytes one node adds: `coef` times the product of the sizes of `symbols`."""
    node: str
    op: str
    coef: int
    symbols: tuple[str, ...]

    def bytes(self, sizes: dict[str, int], other: int) -> int:
        n = self.coef
        for s in self.symbols:
            n *= sizes.get(s, other)
        return n


class MemoryEstimate:
    """Working memory of a graph's run as a polynomial in its symbolic dims."""

    def __init__(self, graph: Graph) -> None:
        terms: list[Term] = []
        for node in graph.nodes:
            for name in node.outputs:
                v = graph.values.get(name) if name else None
                if v is None:
                    continue
                coef = np.dtype(v.dtype).itemsize if v.dtype in _ITEMSIZE else 8
                syms = []
                for d in v.shape:
                    if isinstance(d, str):
                        syms.append(d)
                    else:
                        coef *= int(d)
                terms.append(Term(node.name, node.op.value, coef, tuple(syms)))
            if node.op in RECURRENT:
                n = sum(int(graph.constants[c].size) for c in node.weights.values())
                terms.append(Term(node.name, node.op.value, 4 * n, ()))
                # the input projection of every step at once: (T*N, D*G*H) float32
                w_x = graph.weight(node, "w_x")
                x = graph.value(node.inputs[0]) if node.inputs and node.inputs[0] else None
                if w_x is not None and x is not None and len(x.shape) >= 2:
                    coef = 4 * int(np.prod(w_x.shape[:-1]))
                    syms = [d for d in x.shape[:2] if isinstance(d, str)]
                    for d in x.shape[:2]:
                        coef *= 1 if isinstance(d, str) else int(d)
                    terms.append(Term(node.name, node.op.value, coef, tuple(syms)))
        self.terms = terms
        # the per-call check sums these: one entry per distinct set of symbols
        grouped: dict[tuple[str, ...], int] = {}
        for t in terms:
            key = tuple(sorted(t.symbols))
            grouped[key] = grouped.get(key, 0) + t.coef
        self._grouped = list(grouped.items())
        # (input name, axis, symbol) for every symbolic dim of a graph input
        self._input_dims = [(v.name, k, d) for v in graph.inputs
                            for k, d in enumerate(v.shape) if isinstance(d, str)]
        self._approved: dict[str, int] = {}

    def total(self, sizes: dict[str, int] | None = None) -> int:
        """Estimated bytes for a run with these symbol sizes (absent: 1)."""
        sizes = sizes or {}
        other = max(sizes.values(), default=1)
        total = 0
        for syms, coef in self._grouped:
            n = coef
            for s in syms:
                n *= sizes.get(s, other)
            total += n
        return total

    def check(self, limit: int | None, where: str, sizes: dict[str, int] | None = None) -> None:
        """Raise MemoryLimitError naming the node where the estimate passes `limit`."""
        if limit is None or self.total(sizes) <= limit:
            return
        sizes = sizes or {}
        other = max(sizes.values(), default=1)
        running = 0
        for t in self.terms:
            b = t.bytes(sizes, other)
            running += b
            if running > limit:
                dims = ", ".join(f"{k}={v}" for k, v in sorted(sizes.items())) or "every symbol 1"
                raise MemoryLimitError(
                    f"{where}: estimated working memory passes the limit of {_fmt(limit)} at "
                    f"node '{t.node}' ({t.op}), which needs {_fmt(b)} (total {_fmt(running)} so "
                    f"far; {dims}); pass memory_limit=... to Model/load to allow more")

    def check_call(self, limit: int | None, where: str, env: dict) -> None:
        """The check for one call's inputs; sizes within an approved call's are not re-summed."""
        if limit is None or not self._input_dims:
            return
        sizes: dict[str, int] = {}
        for name, axis, sym in self._input_dims:
            a = env.get(name)
            if a is not None and axis < np.ndim(a):     # (the reference engine checks ranks later)
                n = np.shape(a)[axis]
                if n > sizes.get(sym, 0):
                    sizes[sym] = n
        approved = self._approved
        if all(n <= approved.get(s, 0) for s, n in sizes.items()):
            return
        self.check(limit, where, sizes)
        # NOTE: the estimate grows with every size, so a call whose sizes are all <= an
        # approved call's passes too; a race between threads only repeats a check
        self._approved = sizes


_ITEMSIZE = {"float16", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
             "int64", "bool"}


def _fmt(n: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
