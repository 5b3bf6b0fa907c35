"""Lifting a converter's loop (TFLite WHILE, ONNX Loop) whose body is a recurrent cell into one
LSTM/GRU/RNN node: shared by the format-specific loop handlers.

The ConvLSTM pattern lives in `loops_conv.py`; the format modules import it (registering it).
A format hands over a `Step`: the loop body as a float64 function of (x_t, states) that can
also report any intermediate value and accept overrides of it, plus a normalised view of the
body's ops (`BodyOp`). Each registered cell pattern (`@cell("lstm")`) finds the tensors that
carry its gate pre-activations (the dataflow match), reads the weights off them by probing
with unit vectors (a pre-activation is affine in x_t and h), and proposes candidates
(activation choices, GRU reset forms). A candidate is accepted only when the lifted node, run
by `edgeseq.reference`, reproduces the loop run by the format's own body interpreter on a
random probe sequence (`verify`); otherwise the next candidate is tried, and a loop no
candidate reproduces is refused with the reasons.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import Op


class NoMatch(Exception):
    """The body is not this cell (the message says which part did not match)."""


@dataclass(frozen=True)
class BodyOp:
    """One op of a loop body, normalised across formats: kind in upper case TFLite spelling
    (ADD, MUL, SPLIT, LOGISTIC, TANH, ...), operand and result tensor keys."""
    kind: str
    inputs: tuple
    outputs: tuple
    # format options a pattern may need (convolutions: layout, padding, strides, dilations)
    attrs: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Step:
    """The loop body as a function of one time step.

    run(x [N, I], states [list of [N, S]], overrides {key: array}) -> {key: array} for every
    tensor of the body; `x_key` and `state_keys` name the body tensors that hold x_t and the
    incoming states, `new_state_keys` the outgoing states, `out_key` the per-step output
    written to the sequence output (None when the loop writes none).
    """
    run: Callable[[np.ndarray, list, dict], dict]
    ops: list[BodyOp]
    x_key: object
    state_keys: list
    new_state_keys: list
    out_key: object
    n_batch: int
    n_input: int
    state_sizes: list[int]
    # per-step shapes when x_t and the states are feature maps ([N, *L, C], channels last):
    # run() and the loop then take them flattened to [N, I] / [N, S]
    x_shape: tuple | None = None
    state_shapes: list | None = None

    def consumers(self, key) -> list[BodyOp]:
        return [op for op in self.ops if key in op.inputs]

    def producer(self, key) -> BodyOp | None:
        return next((op for op in self.ops if key in op.outputs), None)


@dataclass
class Candidate:
    """A proposed recurrent node: op, attrs (IR), weights (IR slots, one direction, float64),
    and which loop states are h and c (indices into Step.state_keys)."""
    op: Op
    attrs: dict
    weights: dict
    h_index: int
    c_index: int | None = None
    label: str = ""
    # how the reference runs a candidate that is not a [T, N, I] node (flattened in and out,
    # as Step.run takes them): run(candidate, xs, init) -> (y, finals); None: node_graph
    run: Callable | None = None


@dataclass
class Lifted:
    """A verified candidate and how far it was from the loop on the probe."""
    candidate: Candidate
    error: float
    notes: list[str] = field(default_factory=list)


CELLS: dict[str, Callable[[Step], list[Candidate]]] = {}


def cell(name: str):
    """Register `match(step) -> candidates` as a cell pattern; a duplicate is an error."""
    def deco(fn):
        if name in CELLS:
            raise AssertionError(f"duplicate cell pattern {name}")
        CELLS[name] = fn
        return fn
    return deco


# ---- probing ---------------------------------------------------------------------------------
def affine(step: Step, key, over: dict | None = None, vary=("x", "h"),
           h_index: int = 0) -> dict:
    """Read tensor `key` as an affine function of x_t and state h_index (other states zero):
    {"b": [G], "x": [G, I], "h": [G, S]} for the parts in `vary`. Raises NoMatch when the
    tensor is not affine (checked at a random point) or depends on what is not varied."""
    over = over or {}
    n, i_size = step.n_batch, step.n_input
    sizes = step.state_sizes

    def at(x, h):
        states = [np.zeros((n, s)) for s in sizes]
        states[h_index] = h
        return np.asarray(step.run(x, states, over)[key], np.float64).reshape(n, -1)[0]

    x0, h0 = np.zeros((n, i_size)), np.zeros((n, sizes[h_index]))
    b = at(x0, h0)
    out = {"b": b}
    for part, size in (("x", i_size), ("h", sizes[h_index])):
        if part == "x" and "x" not in vary:
            continue      # x held at zero: its contribution is part of the constant term
        cols = []
        for k in range(size):
            e = np.zeros((n, size))
            e[:, k] = 1.0
            cols.append(at(e, h0) - b if part == "x" else at(x0, e) - b)
        out[part] = np.stack(cols, axis=1)
    rng = np.random.default_rng(7)
    xr, hr = rng.standard_normal((n, i_size)), rng.standard_normal((n, sizes[h_index]))
    want = b + (out["x"] @ xr[0] if "x" in vary else 0) + ("h" in vary) * (out["h"] @ hr[0])
    got = at(xr if "x" in vary else x0, hr if "h" in vary else h0)
    scale = 1.0 + np.max(np.abs(want))
    if not np.allclose(got, want, atol=1e-9 * scale, rtol=1e-9):
        raise NoMatch(f"tensor {key} is not affine in {'/'.join(vary)}")
    for part in ("h",):
        if part not in vary and np.max(np.abs(out[part]), initial=0) > 1e-12:
            raise NoMatch(f"tensor {key} depends on {part}")
    return out


def split_ops(step: Step, parts: int) -> list[BodyOp]:
    return [op for op in step.ops if op.kind == "SPLIT" and len(op.outputs) == parts]


def _gate_sum(step: Step, key):
    """The value that adds a recurrent part to gate input `key`: the output of its only
    consumer (an ADD, or a GEMM/FULLY_CONNECTED that takes it as bias), or None."""
    users = step.consumers(key)
    if len(users) != 1 or len(users[0].outputs) != 1:
        return None
    return users[0].outputs[0]


# Activation choices a Keras cell may use, as IR (name, alpha, beta): Keras 3 hard_sigmoid is
# relu6(x + 3) / 6, tf-keras' is clip(0.2 x + 0.5, 0, 1).
GATE_ACTS = (("sigmoid", 0.0, 0.0), ("hard_sigmoid", 1 / 6, 0.5), ("hard_sigmoid", 0.2, 0.5))
CELL_ACTS = (("tanh", 0.0, 0.0), ("relu", 0.0, 0.0), ("sigmoid", 0.0, 0.0))


def _act_attrs(names: list[tuple]) -> dict:
    return {"activations": tuple(a for a, _, _ in names),
            "activation_alpha": tuple(al for _, al, _ in names),
            "activation_beta": tuple(be for _, _, be in names)}


# ---- cell patterns ---------------------------------------------------------------------------
@cell("lstm")
def _lstm(step: Step) -> list[Candidate]:
    """Keras LSTM: one [N, 4H] pre-activation z = W_x x + W_h h + b split into i, f, c, o."""
    if len(step.state_keys) != 2 or step.x_shape is not None:
        raise NoMatch("an LSTM body carries two [batch, units] states (h, c)")
    out = []
    for h_index in (0, 1):
        hs = step.state_sizes[h_index]
        for sp in split_ops(step, 4):
            z = next(k for k in sp.inputs if k not in _CONST_AXES(step, sp))
            try:
                a = affine(step, z, h_index=h_index)
            except NoMatch:
                continue
            if a["b"].shape[0] != 4 * hs:
                continue
            for g in GATE_ACTS:
                for c in CELL_ACTS[:2]:
                    out.append(Candidate(
                        Op.LSTM, {"hidden_size": hs, **_act_attrs([g, c, c])},
                        {"w_x": a["x"], "w_h": a["h"], "b": a["b"]}, h_index, 1 - h_index,
                        f"LSTM({g[0]}/{c[0]})"))
    if not out:
        raise NoMatch("no 4-way split of a pre-activation affine in x_t and h")
    return out


def _CONST_AXES(step: Step, op: BodyOp) -> set:
    """Operands of a SPLIT that are its axis (scalars) rather than its data."""
    return set(op.inputs[:1]) if len(op.inputs) == 2 else set()


@cell("gru")
def _gru(step: Step) -> list[Candidate]:
    """Keras GRU (gates z, r, h): x-part W_x x + b_x split in three; each gate adds a recurrent
    part: affine in h for z and r; for the candidate, affine in h once r is forced to one
    (reset_after: r * (W_hh h + b_hh); reset before: W_hh (r * h))."""
    if len(step.state_keys) != 1:
        raise NoMatch("a GRU body carries one state")
    hs = step.state_sizes[0]
    out = []
    for sp in split_ops(step, 3):
        data = [k for k in sp.inputs if k not in _CONST_AXES(step, sp)][0]
        try:
            ax = affine(step, data, vary=("x",))
        except NoMatch:
            continue
        if ax["b"].shape[0] != 3 * hs:
            continue
        sums = [_gate_sum(step, sp.outputs[k]) for k in range(3)]
        if None in sums:
            continue
        try:
            # each gate sum at x = 0 is b_x + (recurrent part), affine in h
            rz = [affine(step, sums[k], vary=("h",)) for k in range(2)]
            # force r = 1: its pre-activation at +40 saturates sigmoid and hard sigmoids to 1
            big = np.full((step.n_batch, hs), 40.0)
            rh = affine(step, sums[2], over={sums[1]: big}, vary=("h",))
        except NoMatch:
            continue
        w_h = np.concatenate([rz[0]["h"], rz[1]["h"], rh["h"]])
        b_h = np.concatenate([rz[0]["b"], rz[1]["b"], rh["b"]]) - ax["b"]
        for lbr in (True, False):
            for g in GATE_ACTS:
                for c in CELL_ACTS[:2]:
                    out.append(Candidate(
                        Op.GRU, {"hidden_size": hs, "linear_before_reset": lbr,
                                 **_act_attrs([g, c])},
                        {"w_x": ax["x"], "w_h": w_h, "b_x": ax["b"], "b_h": b_h}, 0, None,
                        f"GRU(reset_after={lbr}, {g[0]}/{c[0]})"))
    if not out:
        raise NoMatch("no 3-way split of an x_t pre-activation whose gates add recurrent "
                      "parts affine in h")
    return out


_ACT_KINDS = {"TANH": "tanh", "RELU": "relu", "LOGISTIC": "sigmoid"}


@cell("rnn")
def _rnn(step: Step) -> list[Candidate]:
    """SimpleRNN: h' = act(W_x x + W_h h + b), the activation producing the new state."""
    if len(step.state_keys) != 1:
        raise NoMatch("a simple RNN body carries one state")
    prod = step.producer(step.new_state_keys[0])
    seen = 0
    while prod is not None and prod.kind in ("RESHAPE", "IDENTITY") and seen < 4:
        prod, seen = step.producer(prod.inputs[0]), seen + 1
    if prod is None or prod.kind not in _ACT_KINDS:
        raise NoMatch("the new state is not produced by tanh, relu or sigmoid")
    a = affine(step, prod.inputs[0])
    hs = step.state_sizes[0]
    return [Candidate(Op.RNN, {"hidden_size": hs, **_act_attrs([(_ACT_KINDS[prod.kind], 0, 0)])},
                      {"w_x": a["x"], "w_h": a["h"], "b": a["b"]}, 0, None,
                      f"RNN({_ACT_KINDS[prod.kind]})")]


# ---- verification ----------------------------------------------------------------------------
def node_graph(cand: Candidate, n_input: int, n_batch: int, n_states: int) -> Graph:
    """A one-node graph of the candidate (time-major, initial states as inputs)."""
    consts, weights = {}, {}
    for slot, w in cand.weights.items():
        consts[f"w.{slot}"] = np.asarray(w, np.float32)[None]
        weights[slot] = f"w.{slot}"
    hs = cand.attrs["hidden_size"]
    ins = [Value("x", "float32", ("T", n_batch, n_input)), Value("h0", "float32", (1, n_batch, hs))]
    names = ["x", "", "h0"]
    outs = ["y", "y_h"]
    if cand.op == Op.LSTM:
        ins.append(Value("c0", "float32", (1, n_batch, hs)))
        names.append("c0")
        outs.append("y_c")
    node = Node("lifted", cand.op, names, outs, dict(cand.attrs), weights)
    return Graph("probe", ins, [Value(o, "float32", ()) for o in outs], [node], consts).validate()


def run_candidate(cand: Candidate, xs: np.ndarray, init: list) -> tuple[np.ndarray, list]:
    """The candidate run by the float64 reference: y [T, N, H] and final states (loop order)."""
    if cand.run is not None:
        return cand.run(cand, xs, init)
    from edgeseq import reference
    g = node_graph(cand, xs.shape[2], xs.shape[1], len(init))
    feeds = {"x": xs.astype(np.float32), "h0": init[cand.h_index][None].astype(np.float32)}
    if cand.c_index is not None:
        feeds["c0"] = init[cand.c_index][None].astype(np.float32)
    out = reference.run(g, feeds)
    finals = [None] * len(init)
    finals[cand.h_index] = out["y_h"][0]
    if cand.c_index is not None:
        finals[cand.c_index] = out["y_c"][0]
    return out["y"][:, 0], finals


def verify(cand: Candidate, loop: Callable, xs: np.ndarray, init: list) -> float:
    """Largest difference between the lifted node and the loop itself on the probe."""
    want_y, want_states = loop(xs, init)
    got_y, got_states = run_candidate(cand, xs, init)
    errs = [np.max(np.abs(a - b)) for a, b in zip(got_states, want_states)]
    if want_y is not None:   # the whole sequence, or (a [1, N, H] buffer) the last step only
        if want_y.shape[0] not in (1, got_y.shape[0]):
            return float("inf")
        errs.append(np.max(np.abs(got_y[-want_y.shape[0]:] - want_y)))
    return float(max(errs))


# The probe runs in float64 on float32-representable values; the reference rounds the inputs
# to float32 only, so a right candidate agrees to ~1e-7 and a wrong one is off by > 1e-2.
TOLERANCE = 1e-5


# The probe runs the loop step by step in an interpreter: bound its work (a hostile file may
# declare any length or width).
MAX_PROBE_STEPS = 4096
MAX_PROBE_ELEMENTS = 1 << 22


def lift(step: Step, loop: Callable, t_len: int) -> Lifted:
    """The first registered cell candidate that reproduces the loop on a random probe, or
    NoMatch listing why each pattern failed."""
    width = max([step.n_input] + step.state_sizes)
    # NOTE: unit-vector probing runs the body once per input and state feature (width runs of
    # width values); feature-map steps are read from their convolutions instead (loops_conv)
    probes = width if step.x_shape is None else 1
    if t_len > MAX_PROBE_STEPS or t_len * step.n_batch * width > MAX_PROBE_ELEMENTS or \
            step.n_batch * width * probes > 4 * MAX_PROBE_ELEMENTS:
        raise NoMatch(f"the loop is too large to verify on a probe ({t_len} steps, batch "
                      f"{step.n_batch}, width {width}; limits {MAX_PROBE_STEPS} steps, "
                      f"{MAX_PROBE_ELEMENTS} elements)")
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((t_len, step.n_batch, step.n_input)).astype(np.float32)
    init = [(0.5 * rng.standard_normal((step.n_batch, s))).astype(np.float32)
            for s in step.state_sizes]
    xs64, init64 = xs.astype(np.float64), [s.astype(np.float64) for s in init]
    memo = []

    def looped(*_):     # the loop on the probe, run once for every candidate of every pattern
        if not memo:
            memo.append(loop(xs64, init64))
        return memo[0]
    reasons = []
    for name, match in CELLS.items():
        try:
            cands = match(step)
        except NoMatch as e:
            reasons.append(f"{name}: {e}")
            continue
        best = None
        for cand in cands:
            err = verify(cand, looped, xs64, init64)
            if err <= TOLERANCE:
                return Lifted(cand, err)
            best = err if best is None else min(best, err)
        reasons.append(f"{name}: the dataflow matched but no variant reproduced the loop on a "
                       f"probe (closest: {best:.2g} off)")
    raise NoMatch("; ".join(reasons))
