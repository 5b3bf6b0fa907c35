"""Run a .tflite model in a TFLite interpreter (the peer edgeseq is compared against).

`ai_edge_litert` is imported first; `tflite_runtime` (2.14, the last release of the older
package, which still ships on some ARM board images but does not work with NumPy 2) is the
fallback."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseq.errors import InputError, UnsupportedModelError


def interpreter_class():
    """The Interpreter class of ai-edge-litert, else tflite-runtime."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise UnsupportedModelError(
                "running .tflite models needs 'ai-edge-litert' (pip install 'edgeseq[tflite]') "
                "or 'tflite-runtime'") from None
    return Interpreter


class TfliteSession:
    """One interpreter; variable tensors (LSTM states) persist across `run` calls, as they do
    across TFLite's invoke()."""

    def __init__(self, path: str | Path, num_threads: int = 1):
        self.path = Path(path)
        self.it = interpreter_class()(model_path=str(path), num_threads=num_threads)
        self.it.allocate_tensors()

    def reset(self) -> None:
        """Zero the variable tensors (start a new sequence)."""
        self.it.reset_all_variables()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        details = self.it.get_input_details()
        names = [d["name"] for d in details]
        missing = sorted(set(names) - set(inputs))
        if missing:
            raise InputError(f"{self.path.name}: the TFLite model needs input(s) {missing}; "
                             f"given: {sorted(inputs)}")
        resized = False
        for d in details:
            a = np.asarray(inputs[d["name"]])
            if tuple(a.shape) != tuple(d["shape"]):
                self.it.resize_tensor_input(d["index"], list(a.shape))
                resized = True
        if resized:
            self.it.allocate_tensors()
        for d in self.it.get_input_details():
            self.it.set_tensor(d["index"], _to_model(np.asarray(inputs[d["name"]]), d))
        self.it.invoke()
        return {d["name"]: _from_model(np.array(self.it.get_tensor(d["index"])), d)
                for d in self.it.get_output_details()}


def _to_model(a: np.ndarray, d: dict) -> np.ndarray:
    """Real-valued input -> the model's type (quantised with its scale and zero point when
    the model takes int8/int16 and `a` is float, as edgeseq graphs take real values)."""
    scale, zp = d.get("quantization", (0.0, 0))
    if np.issubdtype(d["dtype"], np.integer) and a.dtype.kind == "f" and scale:
        info = np.iinfo(d["dtype"])
        return np.clip(np.round(a / scale) + zp, info.min, info.max).astype(d["dtype"])
    return a.astype(d["dtype"])


def _from_model(a: np.ndarray, d: dict) -> np.ndarray:
    """A quantised output -> its real values (float32)."""
    scale, zp = d.get("quantization", (0.0, 0))
    if a.dtype.kind in "iu" and scale:
        return ((a.astype(np.float64) - zp) * scale).astype(np.float32)
    return a


def run_tflite(path: str | Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of a fresh TFLite interpreter on `inputs` (one invoke, zero initial state)."""
    return TfliteSession(path).run(inputs)
