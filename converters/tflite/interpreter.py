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
            self.it.set_tensor(d["index"], np.asarray(inputs[d["name"]], dtype=d["dtype"]))
        self.it.invoke()
        return {d["name"]: np.array(self.it.get_tensor(d["index"]))
                for d in self.it.get_output_details()}


def run_tflite(path: str | Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of a fresh TFLite interpreter on `inputs` (one invoke, zero initial state)."""
    return TfliteSession(path).run(inputs)
