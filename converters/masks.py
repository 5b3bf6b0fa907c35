"""Keras `Masking` around a lifted loop: the per-step mask becomes `sequence_lens`.

Keras holds the state at a masked step and repeats the last output there; a recurrent node
with `sequence_lens` stops at the length and writes zeros past it. The two agree only when
the mask is a right padding (every masked step after every unmasked one): then
lengths = the number of unmasked steps, and Keras' outputs = where(mask, y, y_h). A
converted model therefore checks on every call that its input's mask is a right padding
(`edgeseq.input_checks` "right_padded") instead of answering differently from Keras.
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def emit_lengths(emit: Callable, tmp: Callable, mask: str) -> str:
    """lengths [N] int32 = count of true steps of a time-major [T, N, 1] bool mask."""
    from edgeseq.ops import Op
    f, n, lens = tmp("mask_f"), tmp("mask_n"), tmp("lengths")
    emit(Op.CAST, [mask], [f], to="float32")
    emit(Op.REDUCE_SUM, [f], [n], axes=(0, 2), keepdims=False)
    emit(Op.CAST, [n], [lens], to="int32")
    return lens


def emit_keras_outputs(emit: Callable, mask: str, y_seq: str, y_last: str, out: str) -> None:
    """Keras' output sequence: y inside the length, the last output (y_h) past it."""
    from edgeseq.ops import Op
    emit(Op.WHERE, [mask, y_seq, y_last], [out])


def keras_outputs(mask: np.ndarray, y: np.ndarray, y_last: np.ndarray) -> np.ndarray:
    """The same glue on arrays (for the probe): mask [T, N, 1], y [T, N, H], y_last [N, H]."""
    return np.where(mask, y, y_last[None])


def right_padded_mask(t_len: int, n_batch: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """A probe mask: each row unmasked for a random length in [1, T], masked after it."""
    lens = rng.integers(1, t_len + 1, size=n_batch)
    lens[0] = max(1, t_len - 2)
    return (np.arange(t_len)[:, None] < lens[None, :])[..., None], lens


def run_with_lengths(cand, xs: np.ndarray, init: list, lens: np.ndarray):
    """The candidate node run by the float64 reference with sequence_lens: y [T, N, H], y_h
    [N, H] and final states (loop order)."""
    from edgeseq import reference
    from edgeseq.graph import Value
    from edgeseq.converters import loops
    g = loops.node_graph(cand, xs.shape[2], xs.shape[1], len(init))
    node = g.nodes[0]
    node.inputs[1] = "lens"
    g.inputs.append(Value("lens", "int32", (xs.shape[1],)))
    feeds = {"x": xs.astype(np.float32), "lens": lens.astype(np.int32),
             "h0": init[cand.h_index][None].astype(np.float32)}
    if cand.c_index is not None:
        feeds["c0"] = init[cand.c_index][None].astype(np.float32)
    out = reference.run(g.validate(), feeds)
    finals = [None] * len(init)
    finals[cand.h_index] = out["y_h"][0]
    if cand.c_index is not None:
        finals[cand.c_index] = out["y_c"][0]
    return out["y"][:, 0], out["y_h"][0], finals


def verify(cand, loop: Callable, t_len: int, x_shape: tuple, state_sizes: list) -> float:
    """Largest difference between the loop run with a right-padded mask, loop(xs, init,
    mask) -> (y, states), and the node with sequence_lens plus Keras' output glue."""
    rng = np.random.default_rng(2)
    n_batch, n_input = x_shape
    xs = rng.standard_normal((t_len, n_batch, n_input)).astype(np.float32).astype(np.float64)
    init = [(0.5 * rng.standard_normal((n_batch, s))).astype(np.float32).astype(np.float64)
            for s in state_sizes]
    mask, lens = right_padded_mask(t_len, n_batch, rng)
    want_y, want_states = loop(xs, init, mask)
    y, y_h, finals = run_with_lengths(cand, xs, init, lens)
    errs = [np.max(np.abs(a - b)) for a, b in zip(finals, want_states) if a is not None]
    if want_y is not None:
        got = keras_outputs(mask, y, y_h)
        if want_y.shape[0] == 1:      # a last-step buffer: Keras' last output is y_h
            got = y_h[None]
        errs.append(np.max(np.abs(got - want_y)))
    return float(max(errs))


# Body op kinds a masked step's select is written with (tf2onnx: m * new + (1 - m) * old)
SELECT_KINDS = frozenset({"SELECT", "SELECT_V2", "WHERE", "MUL"})


def output_carries(new: dict, readers: dict) -> dict:
    """A masked Keras loop also carries its last output (repeated at masked steps): a state
    whose new value, on an unmasked step, equals another state's and that only selects read
    is that carry, not part of the cell. new: state -> its new value on a probe step;
    readers: state -> kinds of the body ops that read it. Returns carry -> the state it copies."""
    carries = {}
    for k in new:
        if not readers[k] <= SELECT_KINDS:
            continue
        j = next((j for j in new if j != k and j not in carries and
                  np.shape(new[j]) == np.shape(new[k]) and np.array_equal(new[j], new[k])), None)
        if j is not None:
            carries[k] = j
    return carries
