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


def parse_shape(spec: str) -> tuple[str, tuple[int, ...]]:
    """'NAME=DIMS' with DIMS like 1,576 or 1x576."""
    name, sep, val = spec.partition("=")
    try:
        dims = tuple(int(x) for x in val.replace("x", ",").split(",") if x)
    except ValueError:
        dims = ()
    if not sep or not name or not dims:
        raise UnsupportedModelError(f"--shape expects NAME=DIMS (e.g. x=1,100,40), got '{spec}'")
    return name, dims
