"""Make .tflite fixtures with TensorFlow's own converter from small Keras LSTM models.

    python -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0
    TF_USE_LEGACY_KERAS=1 /tmp/tfenv/bin/python tools/make_keras_tflite_fixtures.py tests/fixtures/tflite
    TF_USE_LEGACY_KERAS=0 /tmp/tfenv/bin/python tools/make_keras_tflite_fixtures.py tests/fixtures/tflite

Offline tool: edgeseq and its tests never need TensorFlow. Only with tf-keras and
TF_USE_LEGACY_KERAS=1 does a Keras LSTM become the fused UNIDIRECTIONAL_SEQUENCE_LSTM (Keras 3
emits a WHILE loop). For every model it writes `<name>.tflite` (float, dynamic-range hybrid
int8, float16 weights, and full-integer int8 where the converter manages) and `<name>.npz`
with a fixed input `x` and Keras' own output `y` for it (a third, independent reference).
With TF_USE_LEGACY_KERAS=0 it writes `keras3_lstm_while.tflite` instead: what Keras 3 makes of
an LSTM (a WHILE loop), for the converter's refusal message.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

LEGACY = os.environ["TF_USE_LEGACY_KERAS"] == "1"
if LEGACY:
    import tf_keras as keras  # noqa: E402
else:
    import keras  # noqa: E402  (Keras 3)

T, N_IN = 10, 8


def stacked() -> keras.Model:
    """LSTM(16, sequences) -> LSTM(12, last step) -> Dense(4, softmax)."""
    x = keras.Input(shape=(T, N_IN), batch_size=1)
    h = keras.layers.LSTM(16, return_sequences=True)(x)
    h = keras.layers.LSTM(12)(h)
    return keras.Model(x, keras.layers.Dense(4, activation="softmax")(h))


def bidirectional() -> keras.Model:
    """Bidirectional(LSTM(8, sequences)) -> Dense(3) per step."""
    x = keras.Input(shape=(T, N_IN), batch_size=1)
    h = keras.layers.Bidirectional(keras.layers.LSTM(8, return_sequences=True))(x)
    return keras.Model(x, keras.layers.Dense(3)(h))


def hybrid() -> keras.Model:
    """LSTM(40) over 26 features: big enough ([40, 26] >= 1024 elements per gate) for the
    dynamic-range quantiser to make its weights int8; Dense(4) per step."""
    x = keras.Input(shape=(T, 26), batch_size=1)
    h = keras.layers.LSTM(40, return_sequences=True)(x)
    return keras.Model(x, keras.layers.Dense(4)(h))


# name -> (builder, conversion modes). Dynamic-range quantisation skips weights below 1024
# elements, so the small models are written float / fp16 / int8 (glue quantised; TF keeps the
# LSTM float) and the hybrid model hybrid only.
MODELS = {"keras_stacked": (stacked, ("float", "fp16", "int8")),
          "keras_bidi": (bidirectional, ("float", "fp16", "int8")),
          "keras_lstm40": (hybrid, ("hybrid",))}


def convert(model: keras.Model, mode: str, calib: np.ndarray) -> bytes:
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode == "hybrid":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([c[None]] for c in calib)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return conv.convert()


def main(argv: list[str] | None = None) -> int:
    out = Path((argv or sys.argv[1:] or ["tests/fixtures/tflite"])[0])
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    if not LEGACY:
        x = keras.Input(shape=(T, N_IN), batch_size=1)
        model = keras.Model(x, keras.layers.LSTM(8)(x))
        path = out / "keras3_lstm_while.tflite"
        path.write_bytes(convert(model, "float", None))
        print(path, path.stat().st_size, "bytes")
        return 0
    for name, (make, modes) in MODELS.items():
        model = make()
        shape = tuple(model.inputs[0].shape[1:])
        x = rng.standard_normal((1,) + shape).astype(np.float32)
        calib = rng.standard_normal((32,) + shape).astype(np.float32)
        np.savez(out / f"{name}.npz", x=x, y=model(x).numpy())
        for mode in modes:
            try:
                data = convert(model, mode, calib)
            except Exception as e:  # the converter refuses some combinations; say which
                print(f"{name} {mode}: not converted ({type(e).__name__}: {str(e)[:200]})")
                continue
            path = out / f"{name}_{mode}.tflite"
            path.write_bytes(data)
            print(path, len(data), "bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
