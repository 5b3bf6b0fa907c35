"""Run a saved torch.export program (.pt2) in PyTorch itself, for `edgeseq compare`.

Outputs are named like the converter names them (output, or output_0, output_1, ...), so
the comparison pairs them by name.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseq.errors import InputError


def run_exported(path: Path, inputs: dict[str, np.ndarray], *,
                 trust_code: bool = False) -> dict[str, np.ndarray]:
    """Outputs of the program at `path` on `inputs` (by the program's input names); the
    archive is read as data unless `trust_code` (see _archive.py)."""
    from edgeseq.converters.torch import require_torch
    from edgeseq.converters.torch._archive import load_exported
    from edgeseq.converters.torch._packed import _custom_op
    torch = require_torch()
    _custom_op(torch)
    ep = load_exported(path, trust_code=trust_code)
    names = list(ep.graph_signature.user_inputs)
    missing = [n for n in names if n not in inputs]
    if missing:
        raise InputError(f"{path}: no value for input(s) {missing}; the program takes {names}")
    try:
        module = ep.module(check_guards=False)
        # NOTE: the converted graph may have a symbolic length; let the program run at others
        module._forward_pre_hooks.clear()
        with torch.no_grad():
            out = module(*(torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in names))
    except Exception as e:  # noqa: BLE001 - torch raises many types; say which file and why
        raise InputError(f"{path}: PyTorch could not run the program on the inputs "
                         f"{ {n: tuple(np.shape(inputs[n])) for n in names} }: "
                         f"{type(e).__name__}: {' '.join(str(e).split())[:300]}") from None
    flat = []

    def walk(x):
        if isinstance(x, (tuple, list)):
            for y in x:
                walk(y)
        else:
            flat.append(x.detach().numpy())
    walk(out)
    keys = ["output"] if len(flat) == 1 else [f"output_{k}" for k in range(len(flat))]
    return dict(zip(keys, flat))
