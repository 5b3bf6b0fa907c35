"""Every unidirectional real export streams: pushed in chunks (of 2, 1, 1, 2 steps: the
first too short for a Conv1D front end's first output), the outputs concatenated along their
time axis (or, for final values such as return_state or return_sequences=False, the last
push's) equal Keras' outputs stored beside the file (tests/fixtures/real_exports, written by
tools/real_exports.py; see test_real_exports.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeseq.errors import GraphError
from edgeseq.ops import RECURRENT, Op
from edgeseq.runtime import Model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "real_exports"
FILES = sorted(p.name for p in FIXTURES.glob("*") if p.suffix in (".tflite", ".onnx"))
TOL = 1e-5
# what does not stream, by design (backward layers, go_backwards) or not yet, and the reason
# the refusal must give
NOT_STREAMING = {"bidi": "only forward streams|reverses the time axis", "masking": "sequence_l|reduces over"}


def _convert(path: Path):
    if path.suffix == ".onnx":
        from edgeseq.converters.onnx import convert
    else:
        from edgeseq.converters.tflite import convert
    return convert(path)


def _feeds(graph, path: Path) -> tuple[dict, list]:
    ref = np.load(FIXTURES / (path.name.split(".")[0] + ".npz"))
    arrays = {k: ref[k] for k in ref.files if not k.startswith("y")}
    feeds = {}
    for v in graph.inputs:
        base = v.name.split(":")[0]
        key = next((k for k in sorted(arrays, key=len, reverse=True)
                    if base == k or base.endswith("_" + k) or base.endswith("/" + k)), "x")
        feeds[v.name] = arrays[key]
    return feeds, [ref[k] for k in sorted(k for k in ref.files if k.startswith("y"))]


def _streams(name: str) -> bool:
    return not any(k in name for k in NOT_STREAMING)


@pytest.mark.parametrize("name", FILES)
def test_unidirectional_exports_stream_and_match_keras(name):
    path = FIXTURES / name
    graph = _convert(path)
    backward = any((n.op in RECURRENT and n.attrs.get("direction", "forward") != "forward")
                   or (n.op is Op.SLICE and min(n.attrs["steps"]) < 0) for n in graph.nodes)
    if backward or not _streams(name):
        reason = next((v for k, v in NOT_STREAMING.items() if k in name),
                      NOT_STREAMING["bidi"])
        with pytest.raises(GraphError, match=f"cannot stream: node .*({reason})"):
            Model(graph).stream()
        return
    feeds, keras = _feeds(graph, path)
    x_name = max(feeds, key=lambda n: feeds[n].ndim)
    stream = Model(graph).stream()
    parts, lo = [], 0
    for size in (2, 1, 1, 2):
        chunk = dict(feeds) if lo == 0 else {}      # initial states start the stream only
        chunk[x_name] = feeds[x_name][:, lo:lo + size]
        parts.append(stream.push(chunk))
        lo += size
    assert lo == feeds[x_name].shape[1]
    got = []
    for v in graph.outputs:
        axis = stream.axes.get(v.name)
        got.append(np.concatenate([p[v.name] for p in parts], axis=axis) if axis is not None
                   else parts[-1][v.name])
    free = list(range(len(got)))
    for want in keras:      # outputs matched by shape (converters may reorder them)
        k = next(k for k in free if got[k].shape == want.shape)
        free.remove(k)
        assert np.max(np.abs(got[k] - want)) <= TOL, (name, k)


def test_the_streaming_corpus_covers_the_export_shapes_that_used_to_refuse():
    """Conv1D front ends, return_state, return_sequences=False and initial_state inputs."""
    for kind in ("conv_lstm", "return_state", "stacked", "initial_state"):
        assert any(kind in f and _streams(f) for f in FILES), kind
