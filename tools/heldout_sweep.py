"""Held-out sweep: ONNX recurrent models built with onnx.helper at sizes and attribute
combinations no issue names, run in onnxruntime (the peer) and through edgeseq's converter ->
.eseq save/load -> runtime `run` and `stream` (odd chunk sizes). Prints per case the max abs error
relative to max(1, max |onnxruntime output|) (unbounded activations such as Relu grow large).

    .venv/bin/python tools/heldout_sweep.py [--cases N] [--seed S]

The test tier (tests/conformance/test_heldout_onnx.py) runs a fixed, well-spread subset."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
ACTS = {"LSTM": 3, "GRU": 2, "RNN": 1}
# ONNX recurrent activations -> (number of alpha, number of beta) values each takes
ODD_ACTS = {"Sigmoid": (0, 0), "Tanh": (0, 0), "Relu": (0, 0), "HardSigmoid": (1, 1),
            "Softsign": (0, 0), "LeakyRelu": (1, 0), "ScaledTanh": (1, 1), "Elu": (1, 0),
            "Affine": (1, 1), "Softplus": (0, 0), "ThresholdedRelu": (1, 0)}


def build(op: str, rng: np.random.Generator, *, T: int, N: int, n_input: int, hidden: int,
          direction: str = "forward", seq_lens=None, initial: bool = False,
          peephole: bool = False, input_forget: int = 0, clip: float | None = None,
          activations=None, alpha=None, beta=None, linear_before_reset: int | None = None,
          outputs=("Y", "Y_h", "Y_c"), layout: int = 0):
    """A one-node ONNX recurrent model with random weights (initializers), plus its feeds.
    seq_lens: None (absent) or an int32 array of length N. The time axis is symbolic ("T"),
    as exporters write it. layout=1 (batch-first) draws the same weights and data as layout=0
    from the same rng state, so `to_layout0` can map its outputs onto an onnxruntime run of
    the layout=0 twin (onnxruntime refuses layout=1)."""
    d = 2 if direction == "bidirectional" else 1
    g = GATES[op]
    s = 1.0 / np.sqrt(hidden)
    def uniform(*shape):
        return rng.uniform(-s, s, shape).astype(np.float32)

    inits = [numpy_helper.from_array(uniform(d, g * hidden, n_input), "W"),
             numpy_helper.from_array(uniform(d, g * hidden, hidden), "R"),
             numpy_helper.from_array(uniform(d, 2 * g * hidden), "B")]
    node_in = ["X", "W", "R", "B", "", "", ""]
    feeds = {"X": rng.standard_normal((T, N, n_input)).astype(np.float32)}
    ins = [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                         ("N", "T", n_input) if layout else ("T", N, n_input))]
    if seq_lens is not None:
        feeds["sequence_lens"] = np.asarray(seq_lens, np.int32)
        ins.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, (N,)))
        node_in[4] = "sequence_lens"
    if initial:
        for k, nm in enumerate(["initial_h"] + (["initial_c"] if op == "LSTM" else [])):
            feeds[nm] = (0.5 * rng.standard_normal((d, N, hidden))).astype(np.float32)
            ins.append(helper.make_tensor_value_info(
                nm, TensorProto.FLOAT, ("N", d, hidden) if layout else (d, N, hidden)))
            node_in[5 + k] = nm
    if peephole:
        inits.append(numpy_helper.from_array(uniform(d, 3 * hidden), "P"))
        node_in = (node_in + [""])[:7] + ["P"]
    node_in = node_in[:8] if op == "LSTM" else node_in[:6]
    while not node_in[-1]:
        node_in.pop()
    names = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    outs = [o if o in outputs else "" for o in names]
    while not outs[-1]:
        outs.pop()
    attrs = {"hidden_size": hidden, "direction": direction}
    if layout:
        attrs["layout"] = 1
        feeds = {k: (v.transpose(1, 0, 2) if v.ndim == 3 else v) for k, v in feeds.items()}
    if op == "LSTM" and input_forget:
        attrs["input_forget"] = input_forget
    if clip is not None:
        attrs["clip"] = clip
    if activations:
        attrs["activations"] = list(activations)
    if alpha:
        attrs["activation_alpha"] = list(alpha)
    if beta:
        attrs["activation_beta"] = list(beta)
    if linear_before_reset is not None:
        attrs["linear_before_reset"] = linear_before_reset
    node = helper.make_node(op, node_in, outs, name="rec", **attrs)
    shapes = {"Y": ("T", d, N, hidden), "Y_h": (d, N, hidden), "Y_c": (d, N, hidden)}
    if layout:
        shapes = {"Y": ("N", "T", d, hidden), "Y_h": ("N", d, hidden), "Y_c": ("N", d, hidden)}
    out_info = [helper.make_tensor_value_info(o, TensorProto.FLOAT, shapes[o]) for o in outs if o]
    graph = helper.make_graph([node], "heldout", ins, out_info, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, feeds


def to_batch_first(outputs: dict) -> dict:
    """layout=0 outputs ([T, D, N, H], [D, N, H]) in layout=1 order ([N, T, D, H], [N, D, H])."""
    return {k: v.transpose(2, 0, 1, 3) if v.ndim == 4 else v.transpose(1, 0, 2)
            for k, v in outputs.items()}


def expected(case: dict, seed: int) -> tuple:
    """(model, feeds, onnxruntime's outputs in the model's layout). A sequence of length 0
    keeps its initial state as final state in edgeseq (docs/reference.md), where onnxruntime
    returns zeros: those rows of Y_h / Y_c take the initial state."""
    kw = {k: v for k, v in case.items() if k != "op"}
    model, feeds = build(case["op"], np.random.default_rng(seed), **kw)
    if not case.get("layout"):
        peer_model, peer_feeds = model, feeds
    else:
        peer_model, peer_feeds = build(case["op"], np.random.default_rng(seed),
                                       **{**kw, "layout": 0})
    want = run_ort(peer_model, peer_feeds)
    lens = peer_feeds.get("sequence_lens")
    if lens is not None:
        for out, init in (("Y_h", "initial_h"), ("Y_c", "initial_c")):
            if out in want:
                zero = np.asarray(lens) == 0
                want[out][:, zero] = peer_feeds[init][:, zero] if init in peer_feeds else 0.0
    if case.get("layout"):
        want = to_batch_first(want)
    return model, feeds, want


def run_ort(model, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


def through_artifact(model, tmpdir: Path, tag: str):
    """convert -> save -> edgeseq.load (the path a user takes)."""
    import edgeseq
    from edgeseq import artifact
    from edgeseq.converters.onnx import convert
    path = tmpdir / f"{tag}.onnx"
    onnx.save(model, path)
    g = convert(path)
    art = artifact.save(g, tmpdir / f"{tag}.eseq")
    return edgeseq.load(art)


def chunked(m, feeds, chunks, axis: int = 0):
    """Stream X in the given chunk sizes along its time axis; concatenate Y, keep the last
    states. Inputs other than X go with the first chunk."""
    s = m.stream()
    extra = {k: v for k, v in feeds.items() if k != "X"}
    ys, last, t0 = [], None, 0
    for k, c in enumerate(chunks):
        push = {"X": np.take(feeds["X"], np.arange(t0, t0 + c), axis=axis)}
        if k == 0:
            push.update(extra)
        last = s.push(push)
        ys.append(last.get("Y"))
        t0 += c
    out = dict(last)
    if ys[0] is not None:
        out["Y"] = np.concatenate(ys, axis=axis)
    return out


def max_abs(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, f"shape {a.shape} vs {b.shape}"
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def random_case(rng: np.random.Generator) -> dict:
    op = str(rng.choice(["LSTM", "GRU", "RNN"]))
    T = int(rng.choice([1, 2, 7, 257]))
    N = int(rng.choice([1, 3, 8]))
    case = dict(op=op, T=T, N=N, n_input=int(rng.choice([1, 2, 33, 513])),
                hidden=int(rng.choice([1, 3, 17, 33, 300])),
                direction=str(rng.choice(["forward", "reverse", "bidirectional"])),
                initial=bool(rng.integers(2)), layout=int(rng.integers(2)))
    lens = rng.choice(["none", "zeros", "full", "mixed"])
    if lens == "zeros":
        case["seq_lens"] = rng.integers(0, T + 1, N).astype(np.int32)
        case["seq_lens"][0] = 0
    elif lens == "full":
        case["seq_lens"] = np.full(N, T, np.int32)
    elif lens == "mixed":
        case["seq_lens"] = rng.integers(1, T + 1, N).astype(np.int32)
    if rng.integers(3) == 0:
        case["clip"] = float(rng.choice([0.5, 2.0]))
    if op == "GRU":
        case["linear_before_reset"] = int(rng.integers(2))
    if op == "LSTM" and rng.integers(2):
        case["peephole"] = True
    if rng.integers(3) == 0:   # odd activations (alpha/beta consumed in order, as in ONNX)
        d = 2 if case["direction"] == "bidirectional" else 1
        names, alpha, beta = [], [], []
        for _ in range(ACTS[op] * d):
            nm = str(rng.choice(list(ODD_ACTS)))
            names.append(nm)
            n_alpha, n_beta = ODD_ACTS[nm]
            alpha += [float(np.round(rng.uniform(0.1, 0.9), 3))] * n_alpha
            beta += [float(np.round(rng.uniform(0.1, 0.9), 3))] * n_beta
        case.update(activations=names, alpha=alpha or None, beta=beta or None)
    return case


def run_case(case: dict, seed: int, tmpdir: Path, tag: str,
             relative: bool = False) -> dict[str, float]:
    """Max abs error per output of edgeseq (converted, saved, loaded) against onnxruntime, for
    `run` and, where the model streams (forward, no lengths), for `stream` in odd chunks.
    relative: divide by max(1, max |peer output|) (unbounded activations grow large); a peer
    output that overflowed (inf/NaN in onnxruntime) raises FloatingPointError."""
    model, feeds, want = expected(case, seed)
    if not all(np.isfinite(w).all() for w in want.values()):
        raise FloatingPointError("onnxruntime's outputs overflow (inf/NaN): no reference")
    scale = max(1.0, *(float(np.max(np.abs(w))) for w in want.values() if w.size)) \
        if relative else 1.0
    m = through_artifact(model, tmpdir, tag)
    got = m.run(feeds)
    errs = {k: max_abs(got[k], want[k]) / scale for k in want}
    T = case["T"]
    cut = sorted({0, T} | {min(T, c) for c in (1, 4, 11)})
    chunks = [b - a for a, b in zip(cut, cut[1:]) if b > a]
    if case.get("direction", "forward") == "forward" and case.get("seq_lens") is None:
        st = chunked(m, feeds, chunks, axis=1 if case.get("layout") else 0)
        errs.update({f"stream:{k}": max_abs(st[k], want[k]) / scale for k in want})
    return errs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=60)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    worst = 0.0
    with tempfile.TemporaryDirectory() as d:
        for k in range(a.cases):
            case = random_case(rng)
            t0 = time.perf_counter()
            try:
                errs = run_case(case, a.seed * 1000 + k, Path(d), f"c{k}", relative=True)
                e = max(errs.values())
                worst = max(worst, e)
                status = f"{e:.2e}"
            except FloatingPointError as ex:
                status = f"skip: {ex}"
            except Exception as ex:  # a sweep reports every failure and goes on
                status = f"FAIL {type(ex).__name__}: {ex}"
            desc = {k2: (v.tolist() if isinstance(v, np.ndarray) else v) for k2, v in case.items()}
            print(f"{k:3d} {time.perf_counter() - t0:6.2f}s {status}  {desc}", flush=True)
    print(f"worst error (max abs / max(1, max |onnxruntime output|)): {worst:.2e}")


if __name__ == "__main__":
    main()
