"""A corpus of real converter outputs (TFLite converter, tf2onnx) from small Keras models, and a
table of what edgeseq makes of each file.

    python tools/real_exports.py                       # venv + build + evaluate (slow: ~20 min)
    python tools/real_exports.py --skip-build          # evaluate an existing corpus
    python tools/real_exports.py --fixtures tests/fixtures/real_exports   # copy the test subset

Build: a tool-made virtual environment (default /tmp/edgeseq-tf-venv; tensorflow-cpu, tf-keras
and tf2onnx pinned in VENV_PINS) runs this file with `_make`, once with tf-keras
(TF_USE_LEGACY_KERAS=1, "k2") and once with Keras 3 ("k3"). Every model in MODELS is written as
TFLite float, dynamic-range and int8, and as tf2onnx opset 13 and 17, beside one `.npz` per
model with fixed inputs (x, and h0/c0 where the model takes an initial state) and Keras' own
outputs y0, y1, ... on them. Evaluate (in the project's venv: edgeseq, onnxruntime and
ai-edge-litert): every file is run by its own runtime (the TFLite interpreter or onnxruntime),
converted by edgeseq, run by edgeseq, and compared with both; unidirectional float models are
also streamed in chunks. TensorFlow is never a dependency of edgeseq or its tests.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

VENV_PINS = ("tensorflow-cpu==2.21.0", "tf-keras==2.21.0", "tf2onnx==1.17.0")
T, F, U = 6, 5, 6            # steps, features, units: tiny, so fixtures stay a few KB
PAD = 2                      # Masking models: the last PAD steps of the fixed input are padding
# int8 last: the TF 2.21 converter crashes (SIGSEGV) on int8 Keras 3 loops, losing the process
VARIANTS = ("tflite_float", "tflite_dynamic", "onnx13", "onnx17", "tflite_int8")
# Small files the conformance tests read (tests/fixtures/real_exports).
FIXTURES = ("k3_lstm_dense.tflite_float.tflite", "k3_lstm_dense.onnx13.onnx",
            "k3_gru_ra.tflite_float.tflite", "k3_gru_ra.onnx17.onnx", "k2_gru_ra.tflite_float.tflite",
            "k2_gru_rb.onnx13.onnx", "k2_simplernn.onnx13.onnx", "k2_simplernn.tflite_float.tflite",
            "k2_return_state.tflite_float.tflite", "k3_bidi_sum.tflite_float.tflite",
            "k2_stateful.tflite_float.tflite", "k3_hard_sigmoid.tflite_float.tflite",
            "k2_initial_state.tflite_float.tflite", "k3_bidi_sum.onnx13.onnx",
            "k2_masking_lstm.tflite_float.tflite", "k3_masking_lstm.tflite_float.tflite",
            "k2_masking_lstm.onnx13.onnx", "k3_masking_lstm.onnx17.onnx",
            "k2_convlstm1d.tflite_float.tflite", "k3_convlstm1d.tflite_float.tflite",
            "k2_convlstm2d.tflite_float.tflite", "k3_convlstm2d.tflite_float.tflite",
            "k2_convlstm2d_valid.tflite_float.tflite", "k3_convlstm2d_valid.onnx13.onnx",
            "k3_convlstm2d.onnx17.onnx", "k2_convlstm1d.onnx13.onnx",
            "k2_convlstm2d_dilated.onnx13.onnx", "k2_unroll.tflite_float.tflite",
            "k3_unroll.onnx13.onnx", "k3_timedistributed.tflite_float.tflite",
            "k3_timedistributed.onnx13.onnx", "k2_layernorm.tflite_float.tflite",
            "k2_layernorm.onnx13.onnx")


# ---------------------------------------------------------------------------------------------
# build (runs inside the TensorFlow venv)
# ---------------------------------------------------------------------------------------------
def _models(keras):
    """name -> (builder, extra input names). Each builder returns a Keras model on (T, F)."""
    L = keras.layers

    # NOTE: batch 1 fixed: with a free batch dim the TF 2.21 converter cannot lower Keras 3's
    # TensorList loops (element_shape must be static); TFLite files are batch 1 anyway
    def seq(*layers, batch=1, shape=(T, F)):
        def build():
            x = keras.Input(shape=shape, batch_size=batch, name="x")
            h = x
            for layer in layers:
                h = layer()(h)
            return keras.Model(x, h)
        return build

    def return_state():
        x = keras.Input(shape=(T, F), batch_size=1, name="x")
        y, h, c = L.LSTM(U, return_sequences=True, return_state=True)(x)
        return keras.Model(x, [y, h, c])

    def initial_state():
        x = keras.Input(shape=(T, F), batch_size=1, name="x")
        h0 = keras.Input(shape=(U,), batch_size=1, name="h0")
        c0 = keras.Input(shape=(U,), batch_size=1, name="c0")
        y = L.LSTM(U, return_sequences=True)(x, initial_state=[h0, c0])
        return keras.Model([x, h0, c0], y)

    rs = dict(return_sequences=True)
    return {
        "lstm_dense": (seq(lambda: L.LSTM(U, **rs), lambda: L.Dense(3)), ()),
        "stacked": (seq(lambda: L.LSTM(U, **rs), lambda: L.LSTM(5), lambda: L.Dense(3)), ()),
        "bidi_concat": (seq(lambda: L.Bidirectional(L.LSTM(5, **rs), merge_mode="concat")), ()),
        "bidi_sum": (seq(lambda: L.Bidirectional(L.LSTM(5, **rs), merge_mode="sum")), ()),
        "gru_ra": (seq(lambda: L.GRU(U, reset_after=True, **rs)), ()),
        "gru_rb": (seq(lambda: L.GRU(U, reset_after=False, **rs)), ()),
        "simplernn": (seq(lambda: L.SimpleRNN(U, **rs)), ()),
        "conv_lstm": (seq(lambda: L.Conv1D(U, 3), lambda: L.LSTM(5, **rs)), ()),
        "masking_lstm": (seq(lambda: L.Masking(0.0), lambda: L.LSTM(U, **rs)), ()),
        "return_state": (return_state, ()),
        "initial_state": (initial_state, ("h0", "c0")),
        "stateful": (seq(lambda: L.LSTM(U, stateful=True, **rs), batch=1), ()),
        "unroll": (seq(lambda: L.LSTM(U, unroll=True, **rs)), ()),
        "hard_sigmoid": (seq(lambda: L.LSTM(U, recurrent_activation="hard_sigmoid", **rs)), ()),
        "relu": (seq(lambda: L.LSTM(U, activation="relu", **rs)), ()),
        "layernorm": (seq(lambda: L.LSTM(U, **rs), lambda: L.LayerNormalization(),
                          lambda: L.Dense(3)), ()),
        "timedistributed": (seq(lambda: L.LSTM(U, **rs),
                                lambda: L.TimeDistributed(L.Dense(3))), ()),
        # feature-map recurrences (ConvLSTM loop bodies): [T, L, C] and [T, H, W, C] inputs
        "convlstm1d": (seq(lambda: L.ConvLSTM1D(3, 3, padding="same", **rs),
                           shape=(T, 7, 2)), ()),
        "convlstm2d": (seq(lambda: L.ConvLSTM2D(3, (3, 3), padding="same", **rs),
                           shape=(T, 5, 6, 2)), ()),
        "convlstm2d_valid": (seq(lambda: L.ConvLSTM2D(4, (2, 3), padding="valid",
                                                      recurrent_activation="hard_sigmoid"),
                                 shape=(T, 5, 6, 2)), ()),
        "convlstm2d_dilated": (seq(lambda: L.ConvLSTM2D(3, (3, 3), padding="same",
                                                        dilation_rate=(2, 1), go_backwards=True,
                                                        **rs), shape=(T, 5, 6, 2)), ()),
    }


MODEL_NAMES = ("lstm_dense", "stacked", "bidi_concat", "bidi_sum", "gru_ra", "gru_rb", "simplernn",
               "conv_lstm", "masking_lstm", "return_state", "initial_state", "stateful",
               "unroll", "hard_sigmoid", "relu", "layernorm", "timedistributed", "convlstm1d",
               "convlstm2d", "convlstm2d_valid", "convlstm2d_dilated")


def _inputs(name: str, extra: tuple, rng, shape: tuple = (T, F)) -> dict:
    import numpy as np
    x = rng.standard_normal((1,) + tuple(shape)).astype(np.float32)
    if name.startswith("masking"):
        x[:, T - PAD:] = 0.0
    out = {"x": x}
    for e in extra:
        out[e] = (0.5 * rng.standard_normal((1, U))).astype(np.float32)
    return out


def _make(out: Path, tag: str, only: str) -> None:
    """Write model `only` in every variant (inside the TensorFlow venv; one process per model,
    so that a converter crash loses one model only)."""
    import numpy as np
    import tensorflow as tf
    if tag == "k2":
        import tf_keras as keras
    else:
        import keras
    import tf2onnx

    out.mkdir(parents=True, exist_ok=True)
    for name, (build, extra) in _models(keras).items():
        if name != only:
            continue
        rng = np.random.default_rng(sum(map(ord, name)))
        keras.utils.set_random_seed(1)
        model = build()
        # random biases and weights everywhere: zero biases would hide a wrongly mapped one
        model.set_weights([(0.4 * rng.standard_normal(w.shape)).astype(np.float32)
                           for w in model.get_weights()])
        inputs = _inputs(name, extra, rng, tuple(int(d) for d in model.inputs[0].shape[1:]))
        order = [i.name.split(":")[0] for i in model.inputs]
        feed = [inputs[n] for n in order] if len(order) > 1 else inputs["x"]
        ys = model(feed)
        ys = ys if isinstance(ys, (list, tuple)) else [ys]
        np.savez(out / f"{tag}_{name}.npz", **inputs,
                 **{f"y{k}": np.asarray(y) for k, y in enumerate(ys)})
        for layer in model.layers:   # stateful layers: convert from the zero state again
            if getattr(layer, "stateful", False) and hasattr(layer, "reset_states"):
                layer.reset_states()
        sig = [tf.TensorSpec((1,) + tuple(inputs[n].shape[1:]), tf.float32, name=n) for n in order]

        @tf.function(input_signature=sig)
        def fn(*args):
            return model(list(args) if len(args) > 1 else args[0])

        for variant in VARIANTS:
            base = out / f"{tag}_{name}.{variant}"
            try:
                if variant.startswith("tflite"):
                    data = _tflite(tf, fn, model, variant, inputs, order)
                    (base.with_suffix(base.suffix + ".tflite")).write_bytes(data)
                else:
                    opset = int(variant[4:])
                    proto, _ = tf2onnx.convert.from_function(fn, input_signature=sig, opset=opset)
                    (base.with_suffix(base.suffix + ".onnx")).write_bytes(
                        proto.SerializeToString())
            except Exception as e:   # noqa: BLE001 - record what the converter could not write
                msg = str(e).strip().splitlines()
                (base.with_suffix(base.suffix + ".failed")).write_text(
                    f"{type(e).__name__}: {msg[-1] if msg else ''}"[:300])
            print(f"{tag} {name} {variant}", flush=True)


def _tflite(tf, fn, model, variant: str, inputs: dict, order: list) -> bytes:
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if variant != "tflite_float":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "tflite_int8":
        import numpy as np
        rng = np.random.default_rng(0)

        def rep():
            for _ in range(20):
                yield [rng.standard_normal(inputs[n].shape).astype(np.float32) for n in order]
        conv.representative_dataset = rep
    return conv.convert()


def build(venv: Path, out: Path, workers: int = 2) -> None:
    """Create the TensorFlow venv if missing, then write the corpus with tf-keras and Keras 3."""
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(["nice", "-n", "10", str(py), "-m", "pip", "install", "-q", *VENV_PINS],
                       check=True)
    jobs = [(tag, name) for name in MODEL_NAMES for tag in ("k3", "k2")
            if not (out / f"{tag}_{name}.npz").exists()]
    with ThreadPoolExecutor(workers) as pool:   # one process per model: a crash loses one
        list(pool.map(lambda job: _make_one(py, out, *job), jobs))


def _make_one(py: Path, out: Path, tag: str, name: str) -> None:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1" if tag == "k2" else "0",
               TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    r = subprocess.run(["nice", "-n", "10", str(py), __file__, "_make", str(out), tag, name],
                       env=env, capture_output=True, text=True)
    for variant in VARIANTS if r.returncode != 0 else ():
        base = f"{tag}_{name}.{variant}"
        if not any((out / (base + ext)).exists() for ext in (".tflite", ".onnx", ".failed")):
            (out / (base + ".failed")).write_text(
                f"the converter process died (exit {r.returncode})")
    print(f"built {tag}_{name}", flush=True)


# ---------------------------------------------------------------------------------------------
# evaluate (runs in the project's venv)
# ---------------------------------------------------------------------------------------------
def _peer(path: Path, feeds: dict) -> list:
    """Outputs of the file's own runtime on `feeds`, in the file's output order."""
    import numpy as np
    if path.suffix == ".onnx":
        import onnxruntime as ort
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in s.get_inputs()]
        return s.run(None, {n: feeds[_match(n, feeds)] for n in names})
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    for d in it.get_input_details():
        v = feeds[_match(d["name"], feeds)]
        if d["dtype"] != np.float32:
            scale, zero = d["quantization"]
            v = np.clip(np.round(v / scale + zero), -128, 127).astype(d["dtype"])
        it.set_tensor(d["index"], v)
    it.invoke()
    outs = []
    for d in it.get_output_details():
        v = it.get_tensor(d["index"])
        if d["dtype"] != np.float32:
            scale, zero = d["quantization"]
            v = (v.astype(np.float32) - zero) * scale
        outs.append(v)
    return outs


def _match(name: str, feeds: dict) -> str:
    """The feed whose key names this graph input ('serving_default_x:0', 'x', 'h0', ...)."""
    base = name.split(":")[0]
    for k in sorted(feeds, key=len, reverse=True):
        if base == k or base.endswith("_" + k) or base.endswith("/" + k):
            return k
    return "x"


def _pair(got: list, want: list) -> list:
    """Match outputs by shape (converters reorder them)."""
    import numpy as np
    out, free = [], list(range(len(got)))
    for w in want:
        for k in free:
            if np.shape(got[k]) == np.shape(w):
                out.append((got[k], w))
                free.remove(k)
                break
    return out


def _err(got: list, want: list) -> float:
    import numpy as np
    pairs = _pair(got, want)
    if len(pairs) != len(want):
        return float("inf")
    return max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
               for a, b in pairs)


def evaluate_file(path: Path) -> dict:
    """Peer run, edgeseq conversion, run, comparison and a streaming check for one file."""
    import numpy as np
    from edgeseq.errors import EdgeseqError
    ref = np.load(path.parent / (path.name.split(".")[0] + ".npz"))
    feeds = {k: ref[k] for k in ref.files if not k.startswith("y")}
    keras_y = [ref[k] for k in sorted(k for k in ref.files if k.startswith("y"))]
    row = {"file": path.name, "status": "", "peer_vs_keras": None, "err_peer": None,
           "err_keras": None, "stream": ""}
    try:
        peer = _peer(path, feeds)
    except Exception as e:   # noqa: BLE001 - the file's own runtime failed: not counted
        row["status"] = f"peer fails: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
        return row
    row["peer_vs_keras"] = _err(peer, keras_y)
    try:
        model = _convert(path)
    except EdgeseqError as e:
        row["status"] = "refused: " + str(e).replace("\n", " | ")[:400]
        return row
    except Exception as e:   # noqa: BLE001 - a crash is a finding, reported as such
        row["status"] = f"CRASH {type(e).__name__}: {e}"[:300]
        return row
    from edgeseq.runtime import Model
    names = [v.name for v in model.inputs]
    run_feeds = {n: feeds[_match(n, feeds)] for n in names}
    compiled = Model(model)
    got = compiled.run(run_feeds)
    got_list = [got[v.name] for v in model.outputs]
    row["err_peer"] = _err(got_list, peer)
    row["err_keras"] = _err(got_list, keras_y)
    row["status"] = "converted"
    row["stream"] = _stream(compiled, model, run_feeds, got_list)
    return row


def _convert(path: Path):
    if path.suffix == ".onnx":
        from edgeseq.converters.onnx import convert
    else:
        from edgeseq.converters.tflite import convert
    return convert(path)


def _stream(compiled, graph, feeds: dict, whole: list) -> str:
    """'yes (err)' when chunked pushes reproduce the whole-sequence run, else why not."""
    import numpy as np
    from edgeseq.errors import EdgeseqError
    try:
        stream = compiled.stream()
        x_name = "x" if "x" in feeds else next(n for n in feeds if feeds[n].ndim >= 3)
        parts = []
        for lo, hi in ((0, 2), (2, 3), (3, T)):
            # initial states only with the first chunk (given again, they would restart it)
            chunk = dict(feeds) if lo == 0 else {x_name: None}
            chunk[x_name] = feeds[x_name][:, lo:hi]
            parts.append(stream.push(chunk))
    except (EdgeseqError, ValueError, NotImplementedError) as e:
        return "no: " + str(e).splitlines()[0][:60]
    errs = []
    for k, v in enumerate(graph.outputs):
        want = whole[k]
        axis = stream.axes.get(v.name)
        if axis is not None:
            got = np.concatenate([p[v.name] for p in parts], axis=axis)
        else:   # a final value: the last push gives the whole run's
            got = parts[-1][v.name]
        errs.append(float(np.max(np.abs(got - want))) if np.shape(got) == np.shape(want)
                    else float("inf"))
    return f"yes {max(errs):.1e}"


def _files(out: Path, only: str = "") -> list[Path]:
    """Model files whose reference (.npz) is written (a model still being built is skipped)."""
    return sorted(p for p in out.iterdir() if p.suffix in (".tflite", ".onnx") and only in p.name
                  and (out / (p.name.split(".")[0] + ".npz")).exists())


def evaluate(out: Path, only: str = "") -> list[dict]:
    files = _files(out, only)
    rows = [evaluate_file(p) for p in files]
    rows += [{"file": p.name, "status": "export failed: " + p.read_text()[:80]}
             for p in sorted(out.glob("*.failed")) if only in p.name]
    return rows


def table(rows: list[dict]) -> str:
    def f(v):
        return "" if v is None else f"{v:.1e}"
    lines = ["| file | result | max err vs own runtime | vs Keras | own runtime vs Keras | "
             "streams |", "|---|---|---|---|---|---|"]
    for r in rows:
        status = r["status"].replace("|", "/")[:180]
        lines.append(f"| {r['file']} | {status} | {f(r.get('err_peer'))} | "
                     f"{f(r.get('err_keras'))} | {f(r.get('peer_vs_keras'))} | "
                     f"{r.get('stream', '')} |")
    runnable = [r for r in rows if r["status"] and not r["status"].startswith(
        ("peer fails", "export failed"))]
    float_ok = [r for r in runnable if r["status"] == "converted" and _ok(r)]
    wrong = [r for r in runnable if r["status"] == "converted" and not _ok(r)]
    lines.append("")
    lines.append(f"runnable by their own runtime: {len(runnable)}; converted and matching: "
                 f"{len(float_ok)} ({100 * len(float_ok) / max(1, len(runnable)):.1f} %); "
                 f"converted but NOT matching: {len(wrong)}; refused: "
                 f"{sum(r['status'].startswith('refused') for r in runnable)}; stream: "
                 f"{sum(str(r.get('stream', '')).startswith('yes') for r in rows)}")
    return "\n".join(lines)


def _ok(r: dict) -> bool:
    """float files: <= 1e-5 vs their runtime; quantised files: within the int8 bound (the
    peer's own deviation from Keras, plus 0.05) — docs/tflite.md."""
    if r["err_peer"] is None:
        return False
    if "int8" in r["file"] or "dynamic" in r["file"]:
        return r["err_peer"] <= max(1e-5, 2 * (r["peer_vs_keras"] or 0) + 0.05)
    return r["err_peer"] <= 1e-5


def main(argv=None) -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_make":
        _make(Path(sys.argv[2]), sys.argv[3], sys.argv[4])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", type=Path, default=Path("/tmp/edgeseq-tf-venv"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/edgeseq-real-exports"))
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--fixtures", type=Path, help="copy the test subset (FIXTURES) here")
    ap.add_argument("--only", help="evaluate files whose name contains this")
    ap.add_argument("--shard", help="K/N: evaluate every N-th file from the K-th and save the "
                                    "rows (run N shards side by side, then --table)")
    ap.add_argument("--table", action="store_true", help="print the table of saved shards")
    ap.add_argument("--cells-off", action="store_true",
                    help="disable the recurrent-cell patterns: every loop runs as a general "
                         "Loop node (docs/real_exports.md, 'General loops')")
    a = ap.parse_args(argv)
    if a.cells_off:
        from edgeseq.converters import loops
        loops.CELLS.clear()
    if a.fixtures:
        a.fixtures.mkdir(parents=True, exist_ok=True)
        for name in FIXTURES:
            if not (a.out / name).exists():
                print(f"not built: {name}")
                continue
            shutil.copy(a.out / name, a.fixtures / name)
            npz = name.split(".")[0] + ".npz"
            shutil.copy(a.out / npz, a.fixtures / npz)
        return 0
    if not a.skip_build:
        build(a.venv, a.out)
    if a.table:
        rows = [r for p in sorted(a.out.glob("rows.*.json")) for r in json.loads(p.read_text())]
        print(table(sorted(rows, key=lambda r: (r["status"].startswith("export"), r["file"]))))
        return 0
    if a.shard:
        k, n = (int(v) for v in a.shard.split("/"))
        rows = [evaluate_file(p) for p in _files(a.out, a.only or "")[k::n]]
        if k == 0:
            rows += [{"file": p.name, "status": "export failed: " + p.read_text()[:80]}
                     for p in sorted(a.out.glob("*.failed"))]
        (a.out / f"rows.{k}.json").write_text(json.dumps(rows))
        return 0
    rows = evaluate(a.out, a.only or "")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
