"""ONNX op handlers, registered by decorator and keyed by (op_type, domain, since-opset).

The model's opset for a domain picks the newest handler whose `since` is <= it, so an op whose
operands moved from attributes to inputs (Slice at 10, Squeeze at 13, ...) gets one small
handler per form. Registering the same key twice is a programming error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# (op_type, domain) -> sorted list of (since, handler)
_HANDLERS: dict[tuple[str, str], list[tuple[int, Callable]]] = {}


@dataclass(frozen=True)
class Handler:
    op_type: str
    domain: str
    since: int
    fn: Callable


def handler(op_type: str, since: int = 1, domain: str = ""):
    """Register `fn(ctx, node)` as the converter of `op_type` for opsets >= `since`."""
    def deco(fn: Callable) -> Callable:
        versions = _HANDLERS.setdefault((op_type, domain), [])
        if any(s == since for s, _ in versions):
            raise AssertionError(f"duplicate ONNX handler for {domain or 'ai.onnx'}::{op_type} "
                                 f"since opset {since}")
        versions.append((since, fn))
        versions.sort(key=lambda e: e[0])
        return fn
    return deco


def lookup(op_type: str, domain: str, opset: int) -> Handler | None:
    """The handler for `op_type` at `opset`, or None if there is none."""
    domain = "" if domain == "ai.onnx" else domain
    best = None
    for since, fn in _HANDLERS.get((op_type, domain), ()):
        if since <= opset:
            best = Handler(op_type, domain, since, fn)
    return best


def supported() -> list[str]:
    """Human-readable list of supported ops, e.g. 'LSTM (opset >= 7)'."""
    out = []
    for (op, domain), versions in sorted(_HANDLERS.items()):
        name = f"{domain}::{op}" if domain else op
        out.append(f"{name} (opset>={versions[0][0]})")
    return out
