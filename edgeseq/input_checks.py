"""Checks on input values that a converted model's origin makes (beyond shape and dtype).

A graph lists them in `graph.metadata["input_checks"]` as {input name: check or [checks]}, a
check written "name" or "name:argument"; the reference interpreter and the runtime apply them
to every call, so a converted model refuses what its original refuses (or would answer with
a shape the graph cannot have) instead of computing an answer the original never gives.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from edgeseq.errors import InputError

KEY = "input_checks"


def _non_increasing(name: str, a: np.ndarray, arg: str, dims: dict) -> None:
    # NOTE: PyTorch's pack_padded_sequence(enforce_sorted=True) raises on unsorted lengths
    if a.ndim == 1 and np.any(a[1:] > a[:-1]):
        raise InputError(f"input '{name}': `lengths` array must be sorted in decreasing order "
                         f"(the model was exported with pack_padded_sequence(enforce_sorted="
                         f"True)); got {a.tolist()}")


def _longest_is(name: str, a: np.ndarray, arg: str, dims: dict) -> None:
    # NOTE: pad_packed_sequence without total_length returns max(lengths) steps; the graph
    # returns the input's full length, the same only when the longest sequence fills it
    steps = int(arg) if arg.lstrip("-").isdigit() else dims.get(arg)
    if steps is not None and a.size and int(np.max(a)) != steps:
        raise InputError(f"input '{name}': the longest sequence has {int(np.max(a))} steps but "
                         f"the inputs have {steps}; the model unpacks with pad_packed_sequence "
                         f"without total_length, which returns only the longest sequence's "
                         f"steps: pad the batch to its longest sequence (or export with "
                         f"total_length)")


def _right_padded(name: str, a: np.ndarray, arg: str, dims: dict) -> None:
    # NOTE: Keras Masking lifted into sequence_lens: exact only when, along the time axis,
    # no unmasked step (any feature != mask value) follows a masked one
    value, _, axis = arg.partition("@")
    if a.ndim < 2:
        return
    keep = np.moveaxis(np.any(a != np.float32(value), axis=-1), int(axis or 1), -1)
    late = keep[..., 1:] & ~keep[..., :-1]
    if np.any(late):
        row = tuple(int(i) for i in np.argwhere(late)[0])
        raise InputError(f"input '{name}': the Keras Masking mask (steps whose features all equal "
                         f"{value} are masked) is not a right padding: in batch row "
                         f"{list(row[:-1])} step {row[-1] + 1} is unmasked after a masked "
                         f"step; the converted model runs masked sequences only when the "
                         f"padding is at the end (Keras would hold the state through the gap)")


CHECKS: dict[str, Callable] = {"non_increasing": _non_increasing, "longest_is": _longest_is,
                               "right_padded": _right_padded}


def add(metadata: dict, name: str, check: str) -> None:
    """Record `check` ("name" or "name:argument") for input `name` in graph metadata."""
    have = metadata.setdefault(KEY, {}).get(name)
    have = [] if have is None else [have] if isinstance(have, str) else list(have)
    if check not in have:
        have.append(check)
    metadata[KEY][name] = have[0] if len(have) == 1 else have


def _bound_dims(graph, env: dict) -> dict:
    """Symbol -> size as the given inputs bind them."""
    out = {}
    for v in graph.inputs:
        if v.name in env:
            for d, n in zip(v.shape, np.shape(env[v.name])):
                if isinstance(d, str):
                    out.setdefault(d, int(n))
    return out


def check(graph, env: dict) -> None:
    """Apply the graph's input checks to the given inputs (absent inputs are skipped)."""
    table = graph.metadata.get(KEY) or {}
    dims = _bound_dims(graph, env) if table else {}
    for name, checks in table.items():
        for spec in ([checks] if isinstance(checks, str) else checks):
            what, _, arg = str(spec).partition(":")
            fn = CHECKS.get(what)
            if fn is None:
                raise InputError(f"input '{name}': unknown input check '{spec}' in the model; "
                                 f"known: {sorted(CHECKS)}")
            if name in env:
                fn(name, np.asarray(env[name]), arg, dims)


def check_stream(graph, env: dict, ended: dict) -> None:
    """The right-padding check across the chunks of a stream (each chunk is checked alone by
    `check`): a batch row that had a masked step in an earlier chunk must stay masked.
    `ended` ({input: bool per row}) is the stream's memory; updated here."""
    table = graph.metadata.get(KEY) or {}
    for name, checks in table.items():
        for spec in ([checks] if isinstance(checks, str) else checks):
            what, _, arg = str(spec).partition(":")
            a = env.get(name)
            if what != "right_padded" or a is None or np.ndim(a) < 2:
                continue
            value, _, axis = arg.partition("@")
            keep = np.moveaxis(np.any(np.asarray(a) != np.float32(value), axis=-1),
                               int(axis or 1), -1)
            prev = ended.get(name)
            if prev is not None and prev.shape == keep.shape[:-1] and np.any(prev & keep.any(-1)):
                row = [int(i) for i in np.argwhere(prev & keep.any(-1))[0]]
                raise InputError(f"input '{name}': the Keras Masking mask is not a right padding "
                                 f"across the stream: batch row {row} was masked in an earlier "
                                 f"chunk and has an unmasked step in this one (Keras would hold "
                                 f"the state through the gap); reset() starts a new sequence")
            if keep.shape[-1]:
                ended[name] = (prev if prev is not None and prev.shape == keep.shape[:-1]
                               else np.zeros(keep.shape[:-1], bool)) | ~keep.all(-1)
