"""Variable-length sequences: pack_padded_sequence -> nn.LSTM/GRU/RNN -> pad_packed_sequence.

torch.export cannot trace packed sequences (the packed data's size depends on the lengths'
values). While exporting, `padded_sequences()` routes that pattern through one custom op,
`edgeseq::padded_rnn(x, lengths, ...)`, which keeps the padded tensor and the lengths; its
handler maps it to IR recurrent nodes with `sequence_lens`. The IR's semantics are those of
packing: outputs past a sequence's end are zero (pad_packed_sequence's padding_value 0) and
the final state is the state at each sequence's last step.

Limits (refused with an error, not silently changed): padding_value must be 0; the padded
output has the input's full length. Without total_length PyTorch trims the output to
max(lengths), a length that depends on the values: the graph then checks on every call that
max(lengths) equals the input's length (the answer is the same) and refuses other inputs.
enforce_sorted=True (PyTorch's default) is a check too: unsorted lengths raise as in PyTorch.
Both checks live in graph.metadata["input_checks"] (`edgeseq.input_checks`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from edgeseq.errors import UnsupportedModelError

_OP = None


@dataclass
class _Padded:
    """What pack_padded_sequence returns while exporting: the padded input and its lengths."""
    x: Any
    lengths: Any
    batch_first: bool


@dataclass
class _PaddedOut:
    """What a recurrent module returns for a _Padded input: time-major y and the lengths."""
    y: Any
    lengths: Any


def _custom_op(torch):
    global _OP
    if _OP is not None:
        return _OP
    if hasattr(torch.ops, "edgeseq") and hasattr(torch.ops.edgeseq, "padded_rnn"):
        _OP = torch.ops.edgeseq.padded_rnn     # registered by an earlier copy of this module
        return _OP
    from torch.nn.utils import rnn as rnn_utils
    pack, pad = rnn_utils.pack_padded_sequence, rnn_utils.pad_packed_sequence

    # NOTE: explicit schema: this module uses postponed annotations, which infer_schema can't read
    @torch.library.custom_op(
        "edgeseq::padded_rnn", mutates_args=(),
        schema="(Tensor x, Tensor lengths, Tensor? h0, Tensor? c0, Tensor[] params, str mode, "
               "bool has_biases, int num_layers, bool bidirectional, bool batch_first) "
               "-> (Tensor, Tensor, Tensor)")
    def padded_rnn(x, lengths, h0, c0, params, mode, has_biases, num_layers, bidirectional,
                   batch_first):
        # eager meaning: exactly PyTorch's own packed path; y is returned time-major
        t, n, d, hidden, proj = _sizes(x, params, mode, num_layers, bidirectional, batch_first)
        packed = pack(x, lengths.cpu(), batch_first=batch_first, enforce_sorted=False)
        idx = packed.sorted_indices
        h0 = x.new_zeros((num_layers * d, n, proj)) if h0 is None else h0
        c0 = x.new_zeros((num_layers * d, n, hidden)) if c0 is None else c0
        hx = [h0.index_select(1, idx), c0.index_select(1, idx)] if mode == "lstm" \
            else h0.index_select(1, idx)
        fn = getattr(torch._VF, mode)
        res = fn(packed.data, packed.batch_sizes, hx, params, has_biases, num_layers, 0.0,
                 False, bidirectional)
        out = rnn_utils.PackedSequence(res[0], packed.batch_sizes, idx, packed.unsorted_indices)
        y, _ = pad(out, batch_first=False, total_length=t)
        un = packed.unsorted_indices
        h = res[1].index_select(1, un)
        c = res[2].index_select(1, un) if mode == "lstm" else x.new_zeros((1,))
        return y, h, c

    @padded_rnn.register_fake
    def _(x, lengths, h0, c0, params, mode, has_biases, num_layers, bidirectional, batch_first):
        t, n, d, hidden, proj = _sizes(x, params, mode, num_layers, bidirectional, batch_first)
        y = x.new_empty((t, n, d * proj))
        h = x.new_empty((num_layers * d, n, proj))
        c = x.new_empty((num_layers * d, n, hidden)) if mode == "lstm" else x.new_empty((1,))
        return y, h, c

    _sorted_lengths_op(torch)
    _longest_op(torch)
    _OP = padded_rnn
    return _OP


def _sorted_lengths_op(torch):
    """`edgeseq::sorted_lengths(lengths)`: the lengths, checked as enforce_sorted=True checks
    them (eager: raises PyTorch's error; converted: an input check of the graph)."""
    if hasattr(torch.ops, "edgeseq") and hasattr(torch.ops.edgeseq, "sorted_lengths"):
        return torch.ops.edgeseq.sorted_lengths

    @torch.library.custom_op("edgeseq::sorted_lengths", mutates_args=(),
                             schema="(Tensor lengths) -> Tensor")
    def sorted_lengths(lengths):
        if bool((lengths[1:] > lengths[:-1]).any()):
            raise RuntimeError("`lengths` array must be sorted in decreasing order when "
                               "`enforce_sorted` is True.")
        return lengths.clone()

    @sorted_lengths.register_fake
    def _(lengths):
        return torch.empty_like(lengths)

    return sorted_lengths


def _longest_op(torch):
    """`edgeseq::longest_is_length(y, lengths)`: the padded output y (time-major), marked as
    unpacked without total_length (eager: raises when max(lengths) is not y's length, where
    PyTorch would trim; converted: an input check of the graph)."""
    if hasattr(torch.ops, "edgeseq") and hasattr(torch.ops.edgeseq, "longest_is_length"):
        return torch.ops.edgeseq.longest_is_length

    @torch.library.custom_op("edgeseq::longest_is_length", mutates_args=(),
                             schema="(Tensor y, Tensor lengths) -> Tensor")
    def longest_is_length(y, lengths):
        if lengths.numel() and int(lengths.max()) != y.shape[0]:
            raise RuntimeError(f"the longest sequence has {int(lengths.max())} steps but the "
                               f"input has {y.shape[0]} (the converted model pads to the input)")
        return y.clone()

    @longest_is_length.register_fake
    def _(y, lengths):
        return torch.empty_like(y)

    return longest_is_length


def _sizes(x, params, mode, num_layers, bidirectional, batch_first):
    """(T, N, directions, hidden, output size) of a recurrent call."""
    d = 2 if bidirectional else 1
    n, t = (x.shape[0], x.shape[1]) if batch_first else (x.shape[1], x.shape[0])
    per = len(params) // (num_layers * d)
    hidden = params[0].shape[0] // {"lstm": 4, "gru": 3}.get(mode, 1)
    proj = params[per - 1].shape[0] if mode == "lstm" and per in (3, 5) else hidden
    return t, n, d, hidden, proj


def _mode(mod, nn) -> str:
    if isinstance(mod, nn.LSTM):
        return "lstm"
    if isinstance(mod, nn.GRU):
        return "gru"
    return "rnn_relu" if mod.nonlinearity == "relu" else "rnn_tanh"


@contextlib.contextmanager
def padded_sequences(torch, module):
    """Patch packing, the recurrent modules' forward and unpacking for one export."""
    nn = torch.nn
    rnn_utils = torch.nn.utils.rnn
    op = _custom_op(torch)
    sorted_op = _sorted_lengths_op(torch)
    longest_op = _longest_op(torch)
    orig_pack, orig_pad = rnn_utils.pack_padded_sequence, rnn_utils.pad_packed_sequence

    def pack(x, lengths, batch_first=False, enforce_sorted=True):
        if not isinstance(lengths, torch.Tensor):
            lengths = torch.as_tensor(lengths, dtype=torch.int64)
        if enforce_sorted:
            lengths = sorted_op(lengths)
        return _Padded(x, lengths, batch_first)

    def pad(seq, batch_first=False, padding_value=0.0, total_length=None):
        if not isinstance(seq, _PaddedOut):
            return orig_pad(seq, batch_first, padding_value, total_length)
        if padding_value != 0.0:
            raise UnsupportedModelError(f"pad_packed_sequence(padding_value={padding_value}): "
                                        f"the IR pads finished sequences with 0")
        y = seq.y
        if total_length is None:
            # NOTE: PyTorch trims to max(lengths), a length that depends on the values: the
            # graph keeps the input's length and refuses inputs whose longest sequence is
            # shorter (input check), so it never answers with a longer output
            y = longest_op(y, seq.lengths)
        elif total_length != seq.y.shape[0]:
            raise UnsupportedModelError(f"pad_packed_sequence(total_length={total_length}) "
                                        f"differs from the input length {seq.y.shape[0]}")
        y = y.transpose(0, 1) if batch_first else y
        return y, seq.lengths

    def forward_for(cls):
        orig = cls.forward

        def forward(self, input, hx=None):
            if not isinstance(input, _Padded):
                return orig(self, input, hx)
            mode = _mode(self, nn)
            h0, c0 = (hx if hx is not None else (None, None)) if mode == "lstm" else (hx, None)
            y, h, c = op(input.x, input.lengths, h0, c0, list(self._flat_weights), mode,
                         self.bias, self.num_layers, self.bidirectional, input.batch_first)
            out = _PaddedOut(y, input.lengths)
            return (out, (h, c)) if mode == "lstm" else (out, h)
        return orig, forward

    patched = []   # (namespace dict, name, original)

    def patch(namespace: dict, name: str, new) -> None:
        patched.append((namespace, name, namespace[name]))
        namespace[name] = new

    try:
        for cls in (nn.LSTM, nn.GRU, nn.RNN):
            cls.forward, orig = forward_for(cls)[1], cls.forward
            patched.append((cls, "forward", orig))
        # the user's code may have imported the functions by name: patch the globals its
        # forward methods see (whether or not their module is in sys.modules)
        spaces = {id(vars(rnn_utils)): vars(rnn_utils), id(vars(nn.utils)): vars(nn.utils)}
        for m in module.modules():
            g = getattr(type(m).forward, "__globals__", None)
            if g is not None:
                spaces[id(g)] = g
        for ns in spaces.values():
            for name, val in list(ns.items()):
                if val is orig_pack:
                    patch(ns, name, pack)
                elif val is orig_pad:
                    patch(ns, name, pad)
        yield
    finally:
        for owner, name, val in reversed(patched):
            if isinstance(owner, dict):
                owner[name] = val
            else:
                setattr(owner, name, val)
