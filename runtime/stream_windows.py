"""Convolutions over time in a Stream: each carries the last input frames its next output
needs, so a Conv1d front end (Keras Conv1D, padding 'valid' or 'causal') streams exactly.

A Conv1d with kernel k and dilation d reads (k-1)*d past frames. The stream keeps them as
the node's state slot "win" ([N, C, <= (k-1)*d]), starting as the left padding's zeros; a
push convolves the window followed by the chunk and keeps the last frames as the next
window. A chunk too short to complete an output yields zero frames. Right padding would need
future frames and is refused by the streaming rule (runtime/streaming.py). See
docs/design.md, "Streaming".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeseq.graph import Graph, Node
from edgeseq.ops import Op

SLOT = "win"


@dataclass(frozen=True)
class ConvWindow:
    """The carried input window of one Conv1d node whose time axis is its spatial axis."""
    node: Node
    width: int      # (k - 1) * dilation past frames
    left: int       # the node's left padding: the zeros a sequence starts with
    channels: int

    def run(self, kernel, ins: list, st: dict) -> list:
        """The node's outputs for this chunk; st["win"] is replaced by the new window."""
        x = ins[0]
        win = st.get(SLOT)
        if win is None:
            win = np.zeros(x.shape[:2] + (self.left,), np.float32)
        elif win.shape[0] != x.shape[0]:
            from edgeseq.errors import InputError
            raise InputError(f"stream: node '{self.node.name}' carries a window for batch "
                             f"{win.shape[0]}, but this chunk has batch {x.shape[0]}; call "
                             f"reset() to change batch")
        xin = np.concatenate([win, np.asarray(x, np.float32)], axis=2)
        st[SLOT] = np.ascontiguousarray(xin[:, :, max(0, xin.shape[2] - self.width):])
        if xin.shape[2] <= self.width:
            w = ins[1]
            return [np.zeros((x.shape[0], w.shape[0], 0), np.float32)]
        # NOTE: the plan's kernel pads `left` zeros itself (its attrs are the whole run's);
        # its first `left` outputs are then dropped, so fused activations are kept
        (y,) = kernel([np.ascontiguousarray(xin)] + list(ins[1:]))
        return [y[:, :, self.left:]]


def conv_windows(graph: Graph, axes: dict) -> dict[str, ConvWindow]:
    """{node name: ConvWindow} for the Conv1d nodes that convolve over the time axis (the
    streaming rule has checked stride 1 and no right padding)."""
    out = {}
    for n in graph.nodes:
        if n.op is Op.CONV1D and axes.get(n.inputs[0]) == 2:
            w = graph.value(n.inputs[1])
            width = (w.shape[2] - 1) * n.attrs["dilation"]
            if width > 0 or n.attrs["pads"][0]:
                out[n.name] = ConvWindow(n, width, n.attrs["pads"][0],
                                         w.shape[1] * n.attrs["group"])
    return out
