"""How generated code spells a call of a compiled kernel: through a function pointer (the
JIT: the kernel's body stays out of the generated function's module, so LLVM does not
optimise it again for every graph) or linked (ahead-of-time compilation: one standalone
object without Numba's runtime, runtime/aot).

Emitters write `lw.call("project_panels", x, w)` with an entry name of
kernels/pointer_calls.ENTRIES (the one table of kernels called this way and their
signatures). Pointer form: `K.project_panels(kt[0], x, w)`, where `kt` is the generated
function's last argument, the kernels' addresses taken at load in the order of
`KernelCalls.used` (never in the source: that is cached on disk by its text).
Linked form: `P.project_panels(x, w)`, a plain Numba call.

EDGESEQ_CODEGEN_LINKED=1 makes the linked form the default (runtime/aot sets it).
"""
from __future__ import annotations

import os
import re

import numpy as np

from edgeseq.runtime.kernels.pointer_calls import ENTRIES, address

__all__ = ["KernelCalls", "addresses", "linked_by_default"]

POINTER_MODULE = "K"
TABLE_ARG = "kt"
# kernel module -> its alias in generated code (the linked form)
ALIASES = {"graph_ops": "G", "panels": "P", "lstm": "LSTM", "gru": "GRU",
           "gru_plain": "GRUP", "rnn": "RNN", "const_views": "CV"}


_LITERAL = re.compile(r"^np\.(?:int64|bool_)\((-?\d+|True|False)\)$")


def linked_by_default() -> bool:
    return os.environ.get("EDGESEQ_CODEGEN_LINKED", "0") == "1"


def _module(name: str) -> str:
    return ENTRIES[name].kernel.py_func.__module__.rpartition(".")[2]


class KernelCalls:
    """The kernel calls of one generated function, in one of the two forms."""

    def __init__(self, linked: bool) -> None:
        self.linked = linked
        self.used: list[str] = []        # entry names, in address-table order
        self.spelled_linked: set[str] = set()

    def call(self, name: str, *args: str) -> str:
        """The expression calling entry `name` with these argument expressions."""
        if name not in ENTRIES:
            raise KeyError(f"no kernel entry '{name}' (kernels/pointer_calls.py ENTRIES)")
        if self.linked or ENTRIES[name].linked:
            self.spelled_linked.add(name)
            fn = ENTRIES[name].kernel.py_func.__name__
            mod = _module(name)
            return f"{ALIASES.get(mod, mod)}.{fn}({', '.join(args)})"
        if name not in self.used:
            self.used.append(name)
        # NOTE: the pointer entries cast their arguments, so a constant needs no np.int64(..)
        # wrapper (that keeps linked helpers to one specialisation) and lowers to less IR
        args = [_LITERAL.sub(r"\1", a) for a in args]
        return f"{POINTER_MODULE}.{name}({TABLE_ARG}[{self.used.index(name)}], {', '.join(args)})"

    def import_lines(self) -> list[str]:
        mods = sorted({_module(n) for n in self.spelled_linked})
        lines = [f"from edgeseq.runtime.kernels import {m} as {ALIASES.get(m, m)}" for m in mods]
        if self.used:
            lines.append(f"from edgeseq.runtime.kernels import pointer_calls as {POINTER_MODULE}")
        return lines

    def arguments(self) -> list[str]:
        """Extra arguments of the generated function (after the workspace)."""
        return [] if self.linked else [TABLE_ARG]


def addresses(names) -> np.ndarray:
    """The `kt` argument: each entry's compiled kernel address in this process, compiling
    (or loading from Numba's cache) the kernels not yet compiled."""
    return np.array([address(n) for n in names] or [0], dtype=np.int64)
