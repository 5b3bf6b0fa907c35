"""Held-out sweep: ONNX recurrent models built with onnx.helper at sizes and attribute
combinations no issue names, run in onnxruntime (the peer) and through edgeseq's converter ->
.eseq save/load -> runtime `run` and `stream` (odd chunk sizes). Prints max abs error per case.

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


def build(op: str, rng: np.random.Generator, *, T: int, N: int, n_input: int, hidden: int,
          direction: str = "forward", seq_lens=None, initial: bool = False,
          peephole: bool = False, input_forget: int = 0, clip: float | None = None,
          activations=None, alpha=None, beta=None, linear_before_reset: int | None = None,
          outputs=("Y", "Y_h", "Y_c")):
    """A one-node ONNX recurrent model with random weights (initializers), plus its feeds.
    seq_lens: None (absent) or an int32 array of length N."""
    d = 2 if direction == "bidirectional" else 1
    g = GATES[op]
    s = 1.0 / np.sqrt(hidden)
    inits = [numpy_helper.from_array(rng.uniform(-s, s, (d, g * hidden, n_input)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.uniform(-s, s, (d, g * hidden, hidden)).astype(np.float32), "R"),
             numpy_helper.from_array(rng.uniform(-s, s, (d, 2 * g * hidden)).astype(np.float32), "B")]
    node_in = ["X", "W", "R", "B", "", "", ""]
    feeds = {"X": rng.standard_normal((T, N, n_input)).astype(np.float32)}
    ins = [helper.make_tensor_value_info("X", TensorProto.FLOAT, (T, N, n_input))]
    if seq_lens is not None:
        feeds["sequence_lens"] = np.asarray(seq_lens, np.int32)
        ins.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, (N,)))
        node_in[4] = "sequence_lens"
    if initial:
        for k, nm in enumerate(["initial_h"] + (["initial_c"] if op == "LSTM" else [])):
            feeds[nm] = (0.5 * rng.standard_normal((d, N, hidden))).astype(np.float32)
            ins.append(helper.make_tensor_value_info(nm, TensorProto.FLOAT, (d, N, hidden)))
            node_in[5 + k] = nm
    if peephole:
        inits.append(numpy_helper.from_array(rng.uniform(-s, s, (d, 3 * hidden)).astype(np.float32), "P"))
        node_in = (node_in + [""])[:7] + ["P"]
    node_in = node_in[:8] if op == "LSTM" else node_in[:6]
    while not node_in[-1]:
        node_in.pop()
    names = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    outs = [o if o in outputs else "" for o in names]
    while not outs[-1]:
        outs.pop()
    attrs = {"hidden_size": hidden, "direction": direction}
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
    shapes = {"Y": (T, d, N, hidden), "Y_h": (d, N, hidden), "Y_c": (d, N, hidden)}
    out_info = [helper.make_tensor_value_info(o, TensorProto.FLOAT, shapes[o]) for o in outs if o]
    graph = helper.make_graph([node], "heldout", ins, out_info, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, feeds


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


def chunked(m, feeds, chunks):
    """Stream X in the given chunk sizes (time axis 0); concatenate Y, keep last states."""
    s = m.stream()
    extra = {k: v for k, v in feeds.items() if k != "X"}
    ys, last, t0 = [], None, 0
    for k, c in enumerate(chunks):
        push = {"X": feeds["X"][t0:t0 + c]}
        if k == 0:
            push.update(extra)
        last = s.push(push)
        ys.append(last.get("Y"))
        t0 += c
    out = dict(last)
    if ys[0] is not None:
        out["Y"] = np.concatenate(ys, axis=0)
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
                initial=bool(rng.integers(2)))
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
    return case


def run_case(case: dict, rng: np.random.Generator, tmpdir: Path, tag: str):
    model, feeds = build(case["op"], rng, **{k: v for k, v in case.items() if k != "op"})
    want = run_ort(model, feeds)
    m = through_artifact(model, tmpdir, tag)
    got = m.run(feeds)
    errs = {k: max_abs(got[k], want[k]) for k in want}
    T = case["T"]
    cut = sorted({0, T} | {min(T, c) for c in (1, 3)})
    chunks = [b - a for a, b in zip(cut, cut[1:]) if b > a]
    if case.get("direction", "forward") == "forward" and case.get("seq_lens") is None:
        st = chunked(m, feeds, chunks)
        errs.update({f"stream:{k}": max_abs(st[k], want[k]) for k in want})
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
                errs = run_case(case, rng, Path(d), f"c{k}")
                e = max(errs.values())
                worst = max(worst, e)
                status = f"{e:.2e}"
            except Exception as ex:  # a sweep reports every failure and goes on
                status = f"FAIL {type(ex).__name__}: {ex}"
            desc = {k2: (v.tolist() if isinstance(v, np.ndarray) else v) for k2, v in case.items()}
            print(f"{k:3d} {time.perf_counter() - t0:6.2f}s {status}  {desc}", flush=True)
    print(f"worst max abs error: {worst:.2e}")


if __name__ == "__main__":
    main()
