"""The `--fix NAME=VALUE` and `--shape NAME=DIMS` syntax every converter accepts.

numpy only: parsing a command line must not need the framework of any one format."""
from __future__ import annotations

import numpy as np

from edgeseq.errors import UnsupportedModelError


def parse_fix(spec: str) -> tuple[str, np.ndarray | list]:
    """'NAME=VALUE' with VALUE a number, a comma list, or a .npy file."""
    name, sep, val = spec.partition("=")
    if not sep or not name:
        raise UnsupportedModelError(f"--fix expects NAME=VALUE, got '{spec}'")
    if val.endswith(".npy"):
        from edgeseq.files import load_npy   # no pickles, regular files, InputError if corrupt
        return name, load_npy(val, f"--fix {name}")
    try:
        return name, [float(x) if any(c in x for c in ".eE") else int(x)
                      for x in val.replace(" ", "").split(",") if x]
    except ValueError:
        raise UnsupportedModelError(f"--fix {name}: cannot parse '{val}' as numbers") from None


def parse_shape(spec: str) -> tuple[str, tuple[int | str, ...]]:
    """'NAME=DIMS' with DIMS like 1,576 or 1x576; a dim may be a symbol (1,T,13 keeps the
    sequence length dynamic while the other dims are fixed)."""
    name, sep, val = spec.partition("=")
    val = val.replace(" ", "")
    parts = val.split(",") if "," in val or not val.replace("x", "").isdigit() else val.split("x")
    dims: tuple = ()
    if all(p.isdigit() or p.isidentifier() for p in parts if p):
        dims = tuple(int(p) if p.isdigit() else p for p in parts if p)
    if not sep or not name or not dims:
        raise UnsupportedModelError(f"--shape expects NAME=DIMS with sizes or symbols "
                                    f"(e.g. x=1,100,40 or x=1,T,40), got '{spec}'")
    return name, dims
