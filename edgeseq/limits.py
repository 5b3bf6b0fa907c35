"""Stated maxima for untrusted model files, in one table.

A model file is data from an unknown author: each size it states is checked against these
maxima (and against the bytes the file actually holds) before anything is allocated from it,
so a small file cannot ask for terabytes, hang a parser, or exhaust the stack. The values
are far above any recurrent model edgeseq targets (silero-vad: 27 nodes, a 40 KB header).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

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


LIMITS = Limits()


class DepthError(EdgeseqError):
    """Internal: JSON text nests deeper than allowed (callers re-raise with file context)."""


def check_json_depth(text: str | bytes, limit: int = LIMITS.json_depth) -> None:
    """Raise DepthError if brackets in `text` (outside strings) nest deeper than `limit`.

    Run before json.loads: CPython's decoder recurses once per level, so 200 000 levels
    end in RecursionError. Vectorised and linear (~10 ms a MB): a quote opens or closes a
    string unless an odd run of backslashes precedes it; brackets count outside strings.
    """
    if isinstance(text, str):
        text = text.encode("utf-8", errors="replace")
    if text.count(b"[") + text.count(b"{") <= limit:
        return                       # cannot nest deeper than it has brackets
    a = np.frombuffer(text, dtype=np.uint8)
    if not a.size:
        return
    idx = np.arange(a.size)
    # length of the backslash run ending just before each position
    last_other = np.maximum.accumulate(np.where(a != _BACKSLASH, idx, -1))
    run_before = idx - 1 - np.concatenate(([-1], last_other[:-1]))
    quote = (a == _QUOTE) & (run_before % 2 == 0)
    outside = np.cumsum(quote) % 2 == 0          # parity of real quotes seen so far
    step = ((a == _LBRACKET) | (a == _LBRACE)).astype(np.int32) \
        - ((a == _RBRACKET) | (a == _RBRACE)).astype(np.int32)
    deepest = int(np.cumsum(np.where(outside, step, 0)).max())
    if deepest > limit:
        raise DepthError(f"JSON nests {deepest} levels deep, more than the limit of {limit}")


_QUOTE, _BACKSLASH, _LBRACKET, _RBRACKET, _LBRACE, _RBRACE = b'"\\[]{}'


def loads(text: str | bytes, limit: int = LIMITS.json_depth):
    """json.loads after the depth check (raises DepthError or json.JSONDecodeError)."""
    check_json_depth(text, limit)
    return json.loads(text)
