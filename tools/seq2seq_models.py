"""Attention encoder-decoders with greedy decoding, written as users write them in PyTorch (a
Python decoding loop), for tests/models/test_attention_decoder.py and tools/variants_bench.py.

    encoder   embedding -> bidirectional LSTM/GRU (time-major): enc [S, N, 2H], final states
    bridge    h_0 = tanh(W_b [h_fwd; h_bwd] + b_b), c_0 = 0
    keys      K = W_k enc                                           [S, N, H]
    attention bahdanau (additive, before the cell, query h_{t-1}):
                  e_s = v . tanh(K_s + W_q h + b_q)
              dot / general (Luong, after the cell, query h_t):
                  e_s = K_s . h_t   /   e_s = K_s . (W_q h_t + b_q)
              a = softmax_s(e), ctx = sum_s a_s enc_s
    step      bahdanau: h_t = cell([E y_{t-1}; ctx], h_{t-1}); o_t = [h_t; ctx]
              luong:    h_t = cell(E y_{t-1}, h_{t-1}) (no input feeding);
                        o_t = tanh(W_c [ctx_t; h_t] + b_c)
    output    logp_t = log_softmax(W_o o_t + b_o); y_t = argmax logp_t, score_t = logp_t[y_t]
    stop      per row: after the end token a row emits 0 with score 0; the loop ends when
              every row has ended or after max_len steps (a TorchScript `while`, which
              torch.onnx.export(dynamo=False) writes as one ONNX Loop).

Test beds: `g2p` (graphemes -> phonemes, LSTM, Bahdanau) and `dates` (date normalisation,
GRU, Luong general); random weights, sizes as small models of those tasks use.
"""
# NOTE: no `from __future__ import annotations`: TorchScript reads the Final annotations
from dataclasses import dataclass
from typing import Final

import torch
from torch import nn


@dataclass(frozen=True)
class Seq2SeqSpec:
    src_vocab: int
    tgt_vocab: int
    emb: int
    hidden: int
    rnn: str = "lstm"            # lstm | gru (encoder and decoder)
    attention: str = "bahdanau"  # bahdanau | dot | general
    max_len: int = 12
    bos: int = 1
    eos: int = 2


TEST_BEDS = {
    "g2p": Seq2SeqSpec(src_vocab=31, tgt_vocab=43, emb=13, hidden=17, rnn="lstm",
                       attention="bahdanau", max_len=14),
    "dates": Seq2SeqSpec(src_vocab=37, tgt_vocab=15, emb=9, hidden=19, rnn="gru",
                         attention="general", max_len=11),
}


class GreedySeq2Seq(nn.Module):
    # Final: TorchScript drops the branches of the other cell / attention before typing them
    is_lstm: Final[bool]
    additive: Final[bool]
    general: Final[bool]
    max_len: Final[int]
    bos: Final[int]
    eos: Final[int]

    def __init__(self, spec: Seq2SeqSpec) -> None:
        super().__init__()
        s = spec
        h = s.hidden
        rnn = nn.LSTM if s.rnn == "lstm" else nn.GRU
        # NOTE: a GRU decoder is a one-step nn.GRU: GRUCell's `hx.dim() not in (1, 2)` check
        # fails the TorchScript exporter inside a loop (and aten::gru_cell has no export)
        cell = nn.LSTMCell if s.rnn == "lstm" else nn.GRU
        self.src_emb = nn.Embedding(s.src_vocab, s.emb)
        self.enc = rnn(s.emb, h, bidirectional=True)
        self.tgt_emb = nn.Embedding(s.tgt_vocab, s.emb)
        # NOTE: Luong without input feeding (a context carried from step to step has no rank
        # the TorchScript exporter can see; the cell's `input.dim() in (1, 2)` check then
        # does not fold, and the export fails). Likewise [:, :, 0], not squeeze(2), whose
        # export is an If of unknown rank.
        self.cell = cell(s.emb + (2 * h if s.attention == "bahdanau" else 0), h)
        self.bridge = nn.Linear(2 * h, h)
        self.w_k = nn.Linear(2 * h, h, bias=False)
        self.w_q = nn.Linear(h, h)
        self.v = nn.Linear(h, 1, bias=False)
        self.w_c = nn.Linear(3 * h, 3 * h)
        self.out = nn.Linear(3 * h, s.tgt_vocab)
        self.is_lstm = s.rnn == "lstm"
        self.additive = s.attention == "bahdanau"
        self.general = s.attention == "general"
        self.max_len, self.bos, self.eos = s.max_len, s.bos, s.eos

    def _attend(self, keys, enc, q):
        if self.additive:
            e = self.v(torch.tanh(keys + self.w_q(q)))[:, :, 0]          # [S, N]
        elif self.general:
            e = (keys * self.w_q(q)).sum(2)
        else:
            e = (keys * q).sum(2)
        a = torch.softmax(e, dim=0)
        return (a.unsqueeze(2) * enc).sum(0)                              # [N, 2H]

    def forward(self, src):                                              # src [S, N] int64
        if self.is_lstm:
            enc, (hn, _) = self.enc(self.src_emb(src))
        else:
            enc, hn = self.enc(self.src_emb(src))
        h = torch.tanh(self.bridge(torch.cat([hn[0], hn[1]], 1)))
        c = torch.zeros_like(h)
        keys = self.w_k(enc)
        n = src.shape[1]
        tok = torch.full([n], self.bos, dtype=torch.long)
        done = torch.zeros([n], dtype=torch.bool)
        tokens = torch.zeros([n, 0], dtype=torch.long)
        scores = torch.zeros([n, 0])
        i = 0
        while i < self.max_len and not bool(done.all()):
            x = self.tgt_emb(tok)
            if self.additive:
                ctx = self._attend(keys, enc, h)
                x = torch.cat([x, ctx], 1)
            if self.is_lstm:
                h, c = self.cell(x, (h, c))
            else:
                h = self.cell(x.unsqueeze(0), h.unsqueeze(0))[1][0]
            if self.additive:
                o = torch.cat([h, ctx], 1)
            else:
                ctx = self._attend(keys, enc, h)
                o = torch.tanh(self.w_c(torch.cat([ctx, h], 1)))
            logp = torch.log_softmax(self.out(o), 1)
            nxt = logp.argmax(1)
            score = logp.gather(1, nxt.unsqueeze(1))[:, 0]
            nxt = torch.where(done, torch.zeros_like(nxt), nxt)
            score = torch.where(done, torch.zeros_like(score), score)
            tokens = torch.cat([tokens, nxt.unsqueeze(1)], 1)
            scores = torch.cat([scores, score.unsqueeze(1)], 1)
            done = done | (nxt == self.eos)
            tok = nxt
            i += 1
        return tokens, scores


def build(spec: Seq2SeqSpec, seed: int = 0, scale: float = 2.0) -> GreedySeq2Seq:
    """A module with random weights, scaled up from PyTorch's init so that decoding depends
    on the input and argmax ties are improbable."""
    torch.manual_seed(seed)
    m = GreedySeq2Seq(spec)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(scale)
    return m.eval()


def export_onnx(module: GreedySeq2Seq, src: torch.Tensor, path) -> None:
    """TorchScript the module and export it with the TorchScript exporter (one ONNX Loop);
    source length and batch stay dynamic in the file."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.jit.script(module), (src,), str(path), dynamo=False,
                          input_names=["src"], output_names=["tokens", "scores"],
                          dynamic_axes={"src": {0: "S", 1: "N"}}, opset_version=17)


class FixedStepsSeq2Seq(GreedySeq2Seq):
    """The same decoder with a fixed number of steps (`for _ in range(max_len)`, no early
    exit): how greedy decoding is written for torch.export, which cannot trace a loop whose
    end depends on the data. Rows that ended emit 0 with score 0, as in GreedySeq2Seq; the
    outputs equal GreedySeq2Seq's padded with those zeros to max_len steps."""

    def forward(self, src):                                              # src [S, N] int64
        if self.is_lstm:
            enc, (hn, _) = self.enc(self.src_emb(src))
        else:
            enc, hn = self.enc(self.src_emb(src))
        h = torch.tanh(self.bridge(torch.cat([hn[0], hn[1]], 1)))
        c = torch.zeros_like(h)
        keys = self.w_k(enc)
        tok = torch.full_like(src[0], self.bos)
        done = torch.zeros_like(src[0], dtype=torch.bool)
        tokens, scores = [], []
        for _ in range(self.max_len):
            x = self.tgt_emb(tok)
            if self.additive:
                ctx = self._attend(keys, enc, h)
                x = torch.cat([x, ctx], 1)
            if self.is_lstm:
                h, c = self.cell(x, (h, c))
            else:
                h = self.cell(x.unsqueeze(0), h.unsqueeze(0))[1][0]
            if self.additive:
                o = torch.cat([h, ctx], 1)
            else:
                ctx = self._attend(keys, enc, h)
                o = torch.tanh(self.w_c(torch.cat([ctx, h], 1)))
            logp = torch.log_softmax(self.out(o), 1)
            nxt = logp.argmax(1)
            score = logp.gather(1, nxt.unsqueeze(1))[:, 0]
            nxt = torch.where(done, torch.zeros_like(nxt), nxt)
            tokens.append(nxt)
            scores.append(torch.where(done, torch.zeros_like(score), score))
            done = done | (nxt == self.eos)
            tok = nxt
        return torch.stack(tokens, 1), torch.stack(scores, 1)


def build_fixed_steps(spec: Seq2SeqSpec, seed: int = 0, scale: float = 2.0) -> FixedStepsSeq2Seq:
    """`build`'s module (same weights for the same seed) as a FixedStepsSeq2Seq."""
    m = FixedStepsSeq2Seq(spec)
    m.load_state_dict(build(spec, seed, scale).state_dict())
    return m.eval()
