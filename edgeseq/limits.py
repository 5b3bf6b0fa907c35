"""Stated maxima for untrusted model files, in one table.

A model file is data from an unknown author: each size it states is checked against these
maxima (and against the bytes the file actually holds) before anything is allocated from it,
so a small file cannot ask for terabytes, hang a parser, or exhaust the stack. The values
are far above any recurrent model edgeseq targets (silero-vad: 27 nodes, a 40 KB header).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from edgeseq.errors import EdgeseqError


@dataclass(frozen=True)
class Limits:
    """Maxima checked while reading an artifact and validating a graph."""
    header_bytes: int = 16 * 2**20       # safetensors JSON header (graph text included)
    json_depth: int = 64                 # nesting of [ / { in any JSON text of a model file
    nodes: int = 100_000                 # nodes of one graph (load time is ~30 us a node)
    tensors: int = 100_000               # constant tensors of one artifact
    rank: int = 8                        # dims of any value, constant or attribute shape
    dim: int = 2**31 - 1                 # one dim (and any size-like integer attribute)
    memory_bytes: int = 4 * 2**30        # a run's working memory (runtime Model default)
    loop_depth: int = 8                  # Loop bodies nested inside Loop bodies
    loop_iterations: int = 1_000_000     # iterations of one Loop node in one run
    native_code_bytes: int = 64 * 2**20  # one target's object code in an artifact


LIMITS = Limits()


class DepthError(EdgeseqError):
    """Internal: JSON text nests deeper than allowed (callers re-raise with file context)."""


def loads(text: str | bytes):
    """json.loads that turns the decoder's RecursionError into DepthError.

    NOTE: CPython's C decoder recurses once per level and stops cleanly at the recursion
    limit (~1000), so 200 000 levels cost one short parse and no stack overflow; the
    stated `json_depth` is then enforced on the free-form parts with `check_depth`."""
    try:
        return json.loads(text)
    except RecursionError:
        raise DepthError(f"JSON nests deeper than the parser's recursion limit "
                         f"({sys.getrecursionlimit()}); the limit is {LIMITS.json_depth}") from None


def check_depth(value, limit: int = LIMITS.json_depth) -> None:
    """Raise DepthError if lists/dicts in a parsed JSON value nest deeper than `limit`
    (an explicit stack: no recursion, linear in the value's size)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        elif not isinstance(v, list):
            continue
        if depth > limit:
            raise DepthError(f"JSON nests more than {limit} levels deep")
        stack.extend((x, depth + 1) for x in v if isinstance(x, (list, dict)))
