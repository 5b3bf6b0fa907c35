"""Held-out ONNX recurrent models (sizes and attribute combinations no issue names) against
onnxruntime, through the path a user takes: convert -> .eseq save -> edgeseq.load -> run, and
stream in odd chunk sizes where the model streams. Cases come from tools/heldout_sweep.py
(which sweeps wider); this tier keeps a hand-spread subset that runs in seconds.

Deviation from onnxruntime, stated in docs/reference.md: a sequence of length 0 keeps its
initial state as its final state in edgeseq (onnxruntime returns zeros); the expected values
apply that (heldout_sweep.expected)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_TOOL = Path(__file__).resolve().parents[2] / "tools" / "heldout_sweep.py"
_spec = importlib.util.spec_from_file_location("heldout_sweep", _TOOL)
sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep)

L = np.array   # sequence lengths
CASES = {
    # sizes at the edges: hidden 1, input 513, T 257, batch 1
    "lstm_h1_i513_T257": dict(op="LSTM", T=257, N=1, n_input=513, hidden=1),
    "lstm_h300_i2_T2_N8": dict(op="LSTM", T=2, N=8, n_input=2, hidden=300, initial=True),
    # everything at once: bidirectional + lengths (with a zero) + initial states + batch-first
    "lstm_all_at_once": dict(op="LSTM", T=9, N=3, n_input=5, hidden=17, direction="bidirectional",
                             layout=1, initial=True, seq_lens=L([0, 9, 4], np.int32),
                             peephole=True, clip=2.0),
    "lstm_input_forget_reverse_full": dict(op="LSTM", T=7, N=3, n_input=3, hidden=3,
                                          direction="reverse", input_forget=1,
                                          seq_lens=L([7, 7, 7], np.int32), initial=True),
    "lstm_odd_acts": dict(op="LSTM", T=6, N=2, n_input=4, hidden=5,
                          activations=["HardSigmoid", "Softsign", "ScaledTanh"],
                          alpha=[0.3, 0.7], beta=[0.4, 0.6], layout=1),
    "gru_lbr0_clip_acts_T257": dict(op="GRU", T=257, N=3, n_input=1, hidden=17,
                                   linear_before_reset=0, clip=0.5,
                                   activations=["HardSigmoid", "Softsign"], alpha=[0.25],
                                   beta=[0.45]),
    "gru_lbr1_bidi_bf_full_lens": dict(op="GRU", T=5, N=8, n_input=33, hidden=33,
                                      linear_before_reset=1, direction="bidirectional",
                                      layout=1, initial=True, seq_lens=L([5] * 8, np.int32),
                                      activations=["Sigmoid", "Tanh", "HardSigmoid", "Elu"],
                                      alpha=[0.2, 0.9], beta=[0.5]),
    "gru_lbr1_h1_stream": dict(op="GRU", T=23, N=1, n_input=2, hidden=1, linear_before_reset=1,
                               layout=1, initial=True, clip=2.0),
    "gru_lbr0_zero_lens": dict(op="GRU", T=4, N=3, n_input=2, hidden=3, direction="reverse",
                               initial=True, seq_lens=L([0, 0, 2], np.int32)),
    "rnn_T1_N8_i513_zero_lens": dict(op="RNN", T=1, N=8, n_input=513, hidden=3, initial=True,
                                     seq_lens=L([0, 1, 0, 1, 1, 0, 1, 1], np.int32)),
    "rnn_bidi_bf_relu_lens": dict(op="RNN", T=8, N=3, n_input=4, hidden=17,
                                  direction="bidirectional", layout=1, initial=True,
                                  seq_lens=L([3, 8, 1], np.int32),
                                  activations=["Relu", "Softsign"]),
    "rnn_h300_stream": dict(op="RNN", T=13, N=3, n_input=3, hidden=300, initial=True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_heldout_onnx_matches_onnxruntime(name, tmp_path, tol):
    case = CASES[name]
    errs = sweep.run_case(case, 20261125 + len(name), tmp_path, name)
    if case.get("direction", "forward") == "forward" and case.get("seq_lens") is None:
        assert any(k.startswith("stream:") for k in errs), "streaming was not exercised"
    bad = {k: e for k, e in errs.items() if not e <= tol["float32"]}
    assert not bad, f"{name}: max abs error above {tol['float32']}: {bad}"


def test_fixed_length_export_streams_in_chunks(tmp_path, tol):
    import edgeseq
    from edgeseq import artifact
    from edgeseq.converters.onnx import convert
    model, feeds = sweep.build("LSTM", np.random.default_rng(0), T=10, N=1, n_input=3, hidden=4)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 10   # exported with T fixed
    want = sweep.run_ort(model, feeds)
    m = edgeseq.load(artifact.save(convert(model), tmp_path / "fixed.eseq"))
    got = sweep.chunked(m, feeds, [3, 3, 4])
    assert sweep.max_abs(got["Y"], want["Y"]) <= tol["float32"]
