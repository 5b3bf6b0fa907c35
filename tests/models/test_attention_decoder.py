"""Attention encoder-decoders with greedy decoding (tools/seq2seq_models.py: a g2p-style and a
date-normalisation model, bidirectional LSTM/GRU encoders, Bahdanau and Luong dot/general
attention), written in PyTorch with a Python `while` loop, TorchScripted and exported by
torch.onnx.export(dynamo=False) as one ONNX Loop, converted into a general Loop node.

Checks: decoded token ids equal PyTorch's (float64 module) exactly and their scores within
1e-6, on the reference; the runtime equals the reference (ids) within 1e-5 (scores); batch 1
and batch 3 with per-row early stop (a row that emitted the end token emits 0 after it, the
loop stops when every row has ended). Random weights; the test asserts that PyTorch's top-2
log-probabilities differ by more than 1e-4 at every step, so an argmax tie cannot decide.
"""
from __future__ import annotations

import copy
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import seq2seq_models as s2s  # noqa: E402

from edgeseq import reference  # noqa: E402
from edgeseq.converters.onnx import convert  # noqa: E402
from edgeseq.ops import Op  # noqa: E402
from edgeseq.runtime import Model  # noqa: E402

CASES = [("g2p", "bahdanau"), ("g2p", "dot"), ("dates", "general"), ("dates", "bahdanau")]
MIN_MARGIN = 1e-4


def _decode_with_margins(module, src):
    """PyTorch's float64 decode and the smallest top-1 / top-2 log-prob gap of any step."""
    m = copy.deepcopy(module).double()
    gaps = []

    def hook(_mod, _inp, out):
        top = torch.topk(torch.log_softmax(out, 1), 2, dim=1).values
        gaps.append(float((top[:, 0] - top[:, 1]).min()))
    m.out.register_forward_hook(hook)
    with torch.no_grad():
        tokens, scores = m(src)
    return tokens.numpy(), scores.numpy(), min(gaps)


def _model_and_src(bed: str, attention: str, n_batch: int, seed: int):
    spec = replace(s2s.TEST_BEDS[bed], attention=attention, eos=-1)
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(3, spec.src_vocab, (7, n_batch), generator=gen)
    free, _, _ = _decode_with_margins(s2s.build(spec), src)
    # the end token: row 0's third token, so row 0 stops early and other rows may not
    spec = replace(spec, eos=int(free[0, 2]))
    return s2s.build(spec), src, spec


@pytest.mark.parametrize("n_batch", [1, 3])
@pytest.mark.parametrize("bed, attention", CASES)
def test_greedy_decoder_matches_pytorch(bed, attention, n_batch, tmp_path, tol):
    module, src, spec = _model_and_src(bed, attention, n_batch, seed=n_batch)
    want_ids, want_scores, margin = _decode_with_margins(module, src)
    assert margin > MIN_MARGIN, "an argmax near-tie: pick another seed"
    path = tmp_path / f"{bed}.onnx"
    s2s.export_onnx(module, src, path)
    graph = convert(path, shapes={"src": list(src.shape)})
    assert any(n.op == Op.LOOP for n in graph.nodes)
    src_np = src.numpy()

    ref = reference.run(graph, {"src": src_np})
    np.testing.assert_array_equal(ref["tokens"], want_ids)
    assert np.max(np.abs(ref["scores"] - want_scores)) <= tol["reference_vs_torch_f64"]

    model = Model(graph)
    got = model.run({"src": src_np})
    np.testing.assert_array_equal(got["tokens"], ref["tokens"])
    assert np.max(np.abs(got["scores"] - ref["scores"])) <= tol["float32"]

    # per-row early stop: row 0 ended at its end token and emits 0 (score 0) after it
    row = want_ids[0]
    stop = int(np.argmax(row == spec.eos))
    assert row[stop] == spec.eos and stop < spec.max_len - 1
    assert not row[stop + 1:].any() and not ref["scores"][0, stop + 1:].any()
    ended = (want_ids == spec.eos).any(1)
    assert (want_ids.shape[1] < spec.max_len) == bool(ended.all())


def test_describe_says_the_loop_runs_on_the_interpreter(tmp_path):
    module, src, _ = _model_and_src("g2p", "dot", 1, seed=1)
    s2s.export_onnx(module, src, tmp_path / "g2p.onnx")
    graph = convert(tmp_path / "g2p.onnx", shapes={"src": list(src.shape)})
    text = Model(graph, codegen=True).describe()
    assert "(Loop): no emitter" in text and "LoopKernel" in text
