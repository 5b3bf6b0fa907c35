"""Per-layer delta threshold calibration (runtime/delta_calibrate.py) on the demo
classifier (2 x LSTM 128, real Japanese Vowels utterances)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgeseq
from edgeseq.converters.onnx import convert
from edgeseq.errors import InputError
from edgeseq.runtime import Model
from edgeseq.runtime.delta_calibrate import calibrate, relative_rms

DATA = Path(edgeseq.__file__).parent / "data"


@pytest.fixture(scope="module")
def demo():
    model = Model(convert(DATA / "demo_classifier.onnx"))
    x = np.load(DATA / "demo_test.npz")["x"]
    return model, {"x": x[:60]}


@pytest.fixture(scope="module")
def result(demo):
    model, cal = demo
    return calibrate(model, cal, budget=4.0)


def test_relative_rms_is_the_formula(rng):
    a, b = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    c, d = rng.standard_normal(4), rng.standard_normal(4)
    want = np.sqrt((np.sum((a - b) ** 2) + np.sum((c - d) ** 2)) / (np.sum(b * b) + np.sum(d * d)))
    assert relative_rms({"p": a, "q": c}, {"p": b, "q": d}) == pytest.approx(want, rel=1e-12)


def test_calibration_reaches_budget_and_reports_what_the_thresholds_do(demo, result):
    model, cal = demo
    assert result.met and result.mac_reduction >= 4.0
    names = [n.name for n in model.graph.recurrent_nodes()]
    assert list(result.thresholds) == names
    out = model.run(cal, delta=result.thresholds)
    assert model.last_stats.mac_reduction == pytest.approx(result.mac_reduction, rel=1e-12)
    assert relative_rms(out, model.run(cal)) == pytest.approx(result.loss, rel=1e-9)
    # the greedy path: each accepted move raises exactly one threshold and saves MACs
    hist = result.history
    assert hist[-1]["thresholds"] == result.thresholds
    for prev, cur in zip(hist, hist[1:]):
        assert cur["mac_reduction"] > prev["mac_reduction"]
        changed = [(n, k) for n in names for k in (0, 1)
                   if cur["thresholds"][n][k] != prev["thresholds"][n][k]]
        assert len(changed) == 1
        n, k = changed[0]
        assert cur["thresholds"][n][k] == pytest.approx(1.3 * prev["thresholds"][n][k])


def test_calibrated_thresholds_beat_one_uniform_threshold(demo, result):
    """At the MAC reduction the search reached, the smallest uniform θ that does as well
    deviates clearly more from the dense outputs (the point of per-layer thresholds)."""
    model, cal = demo
    dense = model.run(cal)
    th = 0.0
    while True:
        th += 0.0025
        out = model.run(cal, delta=th)
        if model.last_stats.mac_reduction >= result.mac_reduction:
            break
    assert result.loss < 0.75 * relative_rms(out, dense)


def test_calibration_tunes_only_the_named_layers(demo):
    model, cal = demo
    first = next(model.graph.recurrent_nodes()).name
    res = calibrate(model, cal, budget=1.2, layers=[first])
    assert list(res.thresholds) == [first] and res.met


def test_calibration_bad_arguments_are_input_errors(demo):
    model, cal = demo
    with pytest.raises(InputError, match="budget"):
        calibrate(model, cal, budget=1.0)
    with pytest.raises(InputError, match="unknown recurrent node"):
        calibrate(model, cal, budget=2.0, layers=["nope"])
    with pytest.raises(InputError, match="factor"):
        calibrate(model, cal, budget=2.0, factor=1.0)
