"""The shipped JapaneseVowels classifier, compressed: artifact size and accuracy targets of the
compression issue, measured with the runtime on the shipped test set (370 sequences)."""
from __future__ import annotations

from importlib import resources

import numpy as np
import onnxruntime as ort
import pytest

from edgeseq.artifact import save
from edgeseq.converters.onnx import convert
from edgeseq.quant.pipeline import compress
from edgeseq.runtime import Model

DATA = resources.files("edgeseq") / "data"


@pytest.fixture(scope="module")
def classifier():
    z = np.load(DATA / "demo_test.npz")
    graph = convert(str(DATA / "demo_classifier.onnx"))
    sess = ort.InferenceSession(str(DATA / "demo_classifier.onnx"),
                                providers=["CPUExecutionProvider"])
    acc_ort = float((sess.run(None, {"x": z["x"]})[0].argmax(-1) == z["y"]).mean())
    return graph, z["x"], z["y"], acc_ort


def _measure(graph, x, y, tmp_path, name):
    logits = Model(graph).run({"x": x})["logits"]
    return float((logits.argmax(-1) == y).mean()), save(graph, tmp_path / f"{name}.eseq").stat().st_size


def test_shipped_test_set_is_well_formed(classifier):
    _, x, y, acc_ort = classifier
    z = np.load(DATA / "demo_test.npz")
    assert x.shape == (370, 29, 12) and x.dtype == np.float32
    assert z["lengths"].min() == 7 and z["lengths"].max() == 29
    # left padding: the frames before each sequence's start are exactly zero
    for k in range(0, 370, 37):
        assert not x[k, :29 - z["lengths"][k]].any() and x[k, -1].any()
    assert set(np.unique(y)) == set(range(9)) and acc_ort > 0.95


@pytest.mark.parametrize("opts,max_ratio,max_loss", [
    (dict(weights="int8"), 0.27, 0.005),
    (dict(lstmp=32, weights="int8"), 0.12, 0.01),
    (dict(svd_rank=32, weights="int8"), 0.17, 0.01),
    (dict(weights="fp16"), 0.51, 0.0),
])
def test_compressed_classifier_meets_targets(classifier, tmp_path, opts, max_ratio, max_loss):
    graph, x, y, acc_ort = classifier
    acc0, bytes0 = _measure(graph, x, y, tmp_path, "fp32")
    assert acc0 == acc_ort
    q, report = compress(graph, **opts)
    acc, nbytes = _measure(q, x, y, tmp_path, "q")
    assert nbytes <= max_ratio * bytes0, (nbytes, bytes0)
    assert acc >= acc0 - max_loss - 1e-9, (acc, acc0)
    assert sum(r["bytes_after"] for r in report) < sum(r["bytes_before"] for r in report)
