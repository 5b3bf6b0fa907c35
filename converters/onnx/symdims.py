"""Values of symbolic shape arithmetic (see `symbolic.py`): dims that are products of an
integer and symbols, shape vectors of them, and a tensor filled with one value. Kept apart so
that `symbolic.py` and `batchperm.py` both read them without importing each other."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SymDim:
    """c * product(symbols)."""
    coef: int
    syms: tuple[str, ...] = ()

    @staticmethod
    def of(d) -> "SymDim":
        return SymDim(int(d)) if isinstance(d, (int, np.integer)) else SymDim(1, (str(d),))

    def __mul__(self, o: "SymDim") -> "SymDim":
        return SymDim(self.coef * o.coef, tuple(sorted(self.syms + o.syms)))

    @property
    def is_int(self) -> bool:
        return not self.syms


@dataclass(frozen=True)
class SymVec:
    """A 1-D (or 0-d, `scalar`) int tensor whose entries may be symbolic."""
    dims: tuple[SymDim, ...]
    scalar: bool = False

    def concrete(self) -> np.ndarray | None:
        if all(d.is_int for d in self.dims):
            a = np.array([d.coef for d in self.dims], dtype=np.int64)
            return a.reshape(()) if self.scalar else a
        return None


@dataclass(frozen=True)
class Filled:
    """ConstantOfShape of a symbolic shape: every element equals `value`."""
    shape: SymVec
    value: float
    dtype: str
