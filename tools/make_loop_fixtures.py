"""Small TFLite/ONNX files with loops no recurrent-cell pattern reproduces, for
tests/conformance/test_tflite_general_loop.py (written to tests/fixtures/loops):

- `<tag>_gated_cell`: keras.layers.RNN over a custom cell h' = tanh(x W + h U) * sigmoid(h V)
  (return_sequences, then Dense), as TFLite float and tf2onnx opset 13, with `.npz` holding
  the input x and Keras' own output y0;
- `tf_stop_early.tflite`: a tf.while_loop that accumulates x_t until the sum passes a bound
  (the condition depends on the data: no scan over time), with its `.npz` (x, y0 from TF).

Runs in the TensorFlow venv of tools/real_exports.py (tensorflow-cpu 2.21, tf-keras, tf2onnx):

    python tools/make_loop_fixtures.py [--venv /tmp/edgeseq-tf-venv] [--out tests/fixtures/loops]

tags: k2 = tf-keras (TF_USE_LEGACY_KERAS=1), k3 = Keras 3. TensorFlow is never a test
dependency: the files are checked in.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

T, F, U = 6, 5, 6


def _make(out: Path, tag: str) -> None:
    import numpy as np
    import tensorflow as tf
    if tag == "k2":
        import tf_keras as keras
    else:
        import keras
    import tf2onnx

    class GatedCell(keras.layers.Layer):
        """h' = tanh(x W + h U) * sigmoid(h V): a cell no pattern edgeseq knows."""

        def __init__(self, units, **kw):
            super().__init__(**kw)
            self.units = units
            self.state_size = units

        def build(self, input_shape):
            self.w = self.add_weight(shape=(int(input_shape[-1]), self.units), name="w")
            self.u = self.add_weight(shape=(self.units, self.units), name="u")
            self.v = self.add_weight(shape=(self.units, self.units), name="v")

        def call(self, x, states):
            h = states[0]
            h2 = tf.tanh(tf.matmul(x, self.w) + tf.matmul(h, self.u)) * \
                tf.sigmoid(tf.matmul(h, self.v))
            return h2, [h2]

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    keras.utils.set_random_seed(1)
    x_in = keras.Input(shape=(T, F), batch_size=1, name="x")
    h = keras.layers.RNN(GatedCell(U), return_sequences=True)(x_in)
    model = keras.Model(x_in, keras.layers.Dense(3)(h))
    model.set_weights([(0.5 * rng.standard_normal(w.shape)).astype(np.float32)
                       for w in model.get_weights()])
    x = rng.standard_normal((1, T, F)).astype(np.float32)
    np.savez(out / f"{tag}_gated_cell.npz", x=x, y0=np.asarray(model(x)))
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    (out / f"{tag}_gated_cell.tflite").write_bytes(conv.convert())
    sig = [tf.TensorSpec((1, T, F), tf.float32, name="x")]

    @tf.function(input_signature=sig)
    def fn(a):
        return model(a)
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=sig, opset=13)
    (out / f"{tag}_gated_cell.onnx").write_bytes(proto.SerializeToString())
    if tag != "k3":
        return

    @tf.function(input_signature=[tf.TensorSpec((T, 1, F), tf.float32, name="x")])
    def stop_early(xs):
        def cond(i, acc):
            return tf.logical_and(i < T, tf.reduce_sum(acc) < 2.0)

        def body(i, acc):
            return i + 1, acc + tf.abs(tf.gather(xs, i))
        _, acc = tf.while_loop(cond, body, [tf.constant(0), tf.zeros((1, F))])
        return acc
    conv = tf.lite.TFLiteConverter.from_concrete_functions(
        [stop_early.get_concrete_function()], stop_early)
    (out / "tf_stop_early.tflite").write_bytes(conv.convert())
    xs = rng.standard_normal((T, 1, F)).astype(np.float32)
    np.savez(out / "tf_stop_early.npz", x=xs, y0=stop_early(xs).numpy())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", default="/tmp/edgeseq-tf-venv")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests" /
                                         "fixtures" / "loops"))
    args = ap.parse_args(argv)
    py = Path(args.venv) / "bin" / "python"
    for tag in ("k2", "k3"):
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1" if tag == "k2" else "0",
                   TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        subprocess.run(["nice", "-n", "10", str(py), __file__, "_make", args.out, tag],
                       env=env, check=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "_make":
        _make(Path(sys.argv[2]), sys.argv[3])
    else:
        sys.exit(main())
