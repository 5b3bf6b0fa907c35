"""Peer runtimes: run an original model file in its own runtime (for `edgeseq compare`).

A small registry keyed by file suffix. Each runner takes (path, inputs) and returns a dict of
output name -> array; heavy imports (onnxruntime, ai-edge-litert ...) happen inside the runner.
Other converters register their format with `register(".tflite", "module:function")`.
"""
from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Callable

import numpy as np

from edgeseq.errors import InputError, UnsupportedModelError

PeerRunner = Callable[[Path, dict], dict]

PEERS: dict[str, str | PeerRunner] = {
    ".onnx": "edgeseq.peers:run_onnxruntime",
    ".tflite": "edgeseq.converters.tflite.interpreter:run_tflite",
    ".pt2": "edgeseq.converters.torch.peer:run_exported",
}


def register(suffix: str, runner: str | PeerRunner) -> None:
    """Register a peer runner ("module:function" or a callable) for a file suffix."""
    PEERS[suffix.lower()] = runner


def peer_for(path: str | Path) -> PeerRunner:
    suffix = Path(path).suffix.lower()
    if suffix not in PEERS:
        raise UnsupportedModelError(f"{path}: no peer runtime for '{suffix}' files; "
                                    f"known: {sorted(PEERS)}")
    r = PEERS[suffix]
    if isinstance(r, str):
        module, fn = r.split(":")
        r = getattr(importlib.import_module(module), fn)
    return r


def run_peer(path: str | Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of the original model at `path` on `inputs`, from its own runtime."""
    return peer_for(path)(Path(path), inputs)


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
              "tensor(float16)": np.float16, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(bool)": np.bool_}


@functools.lru_cache(maxsize=8)
def _ort_session(path: str, mtime_ns: int):
    """One onnxruntime session per model file version (streaming loops call run_peer often)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def run_onnxruntime(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """onnxruntime (CPU) outputs; inputs are cast to the model's declared element types."""
    sess = _ort_session(str(path), path.stat().st_mtime_ns)
    feeds = {}
    for meta in sess.get_inputs():
        if meta.name not in inputs:
            raise InputError(f"{path.name}: onnxruntime needs input '{meta.name}' "
                             f"({meta.type} {meta.shape}); given: {sorted(inputs)}")
        feeds[meta.name] = np.asarray(inputs[meta.name], dtype=_ORT_TYPES.get(meta.type))
    names = [o.name for o in sess.get_outputs()]
    try:
        return dict(zip(names, sess.run(names, feeds)))
    except Exception as e:   # onnxruntime's errors share no base class but Exception
        raise InputError(f"{path.name}: onnxruntime refused the inputs "
                         f"{ {k: tuple(np.shape(v)) for k, v in feeds.items()} }: "
                         f"{' '.join(str(e).split())}") from None
