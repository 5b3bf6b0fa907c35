"""The official ONNX backend node tests for LSTM, GRU and RNN, run against edgeseq.

Only the selected tests are collected (the other ~3000 ONNX tests are removed, not skipped).
They use constant weights (np.ones * scale) and so cannot see a gate-order mistake; the
randomised tests in test_onnx_recurrent.py cover that against onnxruntime.
"""
from __future__ import annotations

import re
import warnings

import onnx.backend.test

from edgeseq.converters.onnx.backend import EdgeseqBackend

INCLUDE = re.compile(r"^test_(lstm_|gru_|simple_rnn_|rnn_seq_length)\w*_cpu$")
# Every exclusion with its reason. (None today: all 18 selected CPU cases pass; the _cuda
# variants are excluded because edgeseq is a CPU backend.)
EXCLUDE: dict[str, str] = {}

with warnings.catch_warnings():
    warnings.simplefilter("ignore")    # onnx's own case generators warn about overflows
    _cases = onnx.backend.test.BackendTest(EdgeseqBackend, __name__).test_cases

_selected = 0
for _cls_name, _cls in _cases.items():
    for _name in [n for n in vars(_cls) if n.startswith("test_")]:
        if not INCLUDE.match(_name) or _name in EXCLUDE:
            delattr(_cls, _name)
        else:
            _selected += 1
    if any(n.startswith("test_") for n in vars(_cls)):
        globals()[_cls_name] = _cls


def test_selection_is_complete():
    """Guard against an onnx upgrade silently dropping the recurrent cases."""
    assert _selected >= 18, _selected
