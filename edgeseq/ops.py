"""The edgeseq op set: every op defined once, with its attributes, weight slots and group.

Semantics of each op are written down in `edgeseq.reference` (float64 NumPy); this module
only says what a well-formed node of each op looks like.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Op(enum.Enum):
    # recurrent
    LSTM = "LSTM"
    GRU = "GRU"
    RNN = "RNN"
    SRU = "SRU"
    CONV_LSTM = "ConvLSTM"
    # linear algebra / conv
    MATMUL = "MatMul"
    GEMM = "Gemm"
    CONV1D = "Conv1d"
    # elementwise binary (numpy broadcasting)
    ADD = "Add"
    SUB = "Sub"
    MUL = "Mul"
    DIV = "Div"
    POW = "Pow"
    # elementwise unary
    RELU = "Relu"
    SIGMOID = "Sigmoid"
    TANH = "Tanh"
    SQRT = "Sqrt"
    EXP = "Exp"
    LOG = "Log"
    NEG = "Neg"
    ABS = "Abs"
    CLIP = "Clip"
    LEAKY_RELU = "LeakyRelu"
    # normalising / reducing
    SOFTMAX = "Softmax"
    LOG_SOFTMAX = "LogSoftmax"
    REDUCE_MEAN = "ReduceMean"
    REDUCE_SUM = "ReduceSum"
    LP_NORMALIZATION = "LpNormalization"
    # layout
    CONCAT = "Concat"
    SPLIT = "Split"
    SLICE = "Slice"
    TRANSPOSE = "Transpose"
    RESHAPE = "Reshape"
    SQUEEZE = "Squeeze"
    UNSQUEEZE = "Unsqueeze"
    PAD = "Pad"
    GATHER = "Gather"
    CAST = "Cast"
    IDENTITY = "Identity"
    # spatial (CRNN front ends, Conv1D written as a 2-D conv with a unit axis)
    CONV2D = "Conv2d"
    MAX_POOL = "MaxPool"
    # selection and comparison (greedy decoding, masks)
    ARG_MAX = "ArgMax"
    ARG_MIN = "ArgMin"
    EQUAL = "Equal"
    GREATER = "Greater"
    LESS = "Less"
    NOT = "Not"
    WHERE = "Where"
    TILE = "Tile"
    ERF = "Erf"
    # control flow (custom cells, greedy decoders: edgeseq/loop_op.py)
    LOOP = "Loop"


RECURRENT = frozenset({Op.LSTM, Op.GRU, Op.RNN, Op.SRU, Op.CONV_LSTM})
BINARY = frozenset({Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.POW})
UNARY = frozenset({Op.RELU, Op.SIGMOID, Op.TANH, Op.SQRT, Op.EXP, Op.LOG, Op.NEG, Op.ABS,
                   Op.CLIP, Op.LEAKY_RELU, Op.CAST, Op.IDENTITY, Op.ERF, Op.NOT})
COMPARISON = frozenset({Op.EQUAL, Op.GREATER, Op.LESS})
ELEMENTWISE = BINARY | UNARY
LINEAR = frozenset({Op.MATMUL, Op.GEMM, Op.CONV1D})
REDUCTION = frozenset({Op.SOFTMAX, Op.LOG_SOFTMAX, Op.REDUCE_MEAN, Op.REDUCE_SUM,
                       Op.LP_NORMALIZATION})
LAYOUT = frozenset({Op.CONCAT, Op.SPLIT, Op.SLICE, Op.TRANSPOSE, Op.RESHAPE, Op.SQUEEZE,
                    Op.UNSQUEEZE, Op.PAD, Op.GATHER})

DTYPES = ("float32", "float16", "float64", "int8", "int32", "int64", "bool")
WEIGHT_DTYPES = ("float32", "float16", "int8")

# Recurrent activations (ONNX names in lower snake case) with their default (alpha, beta).
# `None` means the parameter is unused by that function.
ACTIVATIONS: dict[str, tuple[float | None, float | None]] = {
    "sigmoid": (None, None),
    "tanh": (None, None),
    "relu": (None, None),
    "affine": (1.0, 0.0),           # alpha * x + beta
    "leaky_relu": (0.01, None),
    "thresholded_relu": (1.0, None),
    "scaled_tanh": (1.0, 1.0),      # alpha * tanh(beta * x)
    "hard_sigmoid": (0.2, 0.5),     # max(0, min(1, alpha * x + beta))
    "elu": (1.0, None),
    "softsign": (None, None),
    "softplus": (None, None),
}
# The code the compiled kernels branch on is the position in ACTIVATIONS
# (runtime/kernels/activations.py `activate`): append new names at the end.
ACT_CODES: dict[str, int] = {name: code for code, name in enumerate(ACTIVATIONS)}

DIRECTIONS = ("forward", "reverse", "bidirectional")
COUPLINGS = ("none", "input", "forget")
SRU_SKIPS = ("none", "input", "projected")
SRU_LAYER_NORMS = ("none", "before", "after")

REQUIRED = object()  # sentinel: attribute has no default


@dataclass(frozen=True)
class Attr:
    """One typed attribute. kind: int, float, bool, str, ints, floats, strs, graph."""
    name: str
    kind: str
    default: Any = REQUIRED
    choices: tuple | None = None


@dataclass(frozen=True)
class Slot:
    """A named weight operand of a recurrent op (a constant tensor of the graph)."""
    name: str
    required: bool
    doc: str


@dataclass(frozen=True)
class OpSpec:
    op: Op
    inputs: tuple[str, ...]            # names of positional inputs; trailing ones may be ""
    min_inputs: int
    outputs: tuple[str, ...]
    min_outputs: int
    attrs: tuple[Attr, ...] = ()
    slots: tuple[Slot, ...] = ()
    variadic_inputs: bool = False      # Concat
    variadic_outputs: bool = False     # Split

    def attr(self, name: str) -> Attr:
        for a in self.attrs:
            if a.name == name:
                return a
        raise KeyError(name)


_RECURRENT_ATTRS = (
    Attr("hidden_size", "int"),
    Attr("direction", "str", "forward", DIRECTIONS),
    # batch_first: x [N,T,I], y [N,T,D,H], states [N,D,H]; else x [T,N,I], y [T,D,N,H], states [D,N,H]
    Attr("batch_first", "bool", False),
    # one activation name per function per direction, e.g. LSTM forward: [f, g, h]
    Attr("activations", "strs", ()),
    Attr("activation_alpha", "floats", ()),
    Attr("activation_beta", "floats", ()),
    Attr("gate_clip", "float", 0.0),   # ONNX `clip`: bound on gate pre-activations; 0 = none
)

# Weight slots. Every slot has a leading direction axis D (1, or 2 when bidirectional).
# LSTM gate order is i, f, c, o; GRU gate order is z, r, h (ONNX); H = hidden_size,
# P = proj_size or H, I = input size. Weights may be float32, float16, or int8 with a
# float32 per-row scale tensor named "<tensor>.scale" of shape [D, rows].
_FACTORED = (
    Slot("w_h_u", False, "[D, G*H, r] left factor of w_h (w_h = w_h_u @ w_h_v)"),
    Slot("w_h_v", False, "[D, r, P] right factor of w_h"),
)

SPECS: dict[Op, OpSpec] = {}


def _spec(*args, **kw) -> None:
    s = OpSpec(*args, **kw)
    SPECS[s.op] = s


_spec(Op.LSTM, ("x", "sequence_lens", "initial_h", "initial_c"), 1, ("y", "y_h", "y_c"), 0,
      _RECURRENT_ATTRS + (
          Attr("proj_size", "int", 0),          # LSTMP output size; 0 = no projection
          Attr("cell_clip", "float", 0.0),      # 0 = none
          Attr("proj_clip", "float", 0.0),      # 0 = none
          # CIFG: which gate is derived from the other (input: i = 1 - f, TFLite/Android NN;
          # forget: f = 1 - i, onnxruntime's input_forget). The derived gate's rows in
          # w_x/w_h/b are present but ignored (kept zero by converters).
          Attr("coupled_gate", "str", "none", COUPLINGS),
          Attr("layer_norm_epsilon", "float", 1e-8),
      ),
      (Slot("w_x", True, "[D, 4H, I] input weights, gates i,f,c,o"),
       Slot("w_h", False, "[D, 4H, P] recurrent weights (absent when factored)"),
       *_FACTORED,
       Slot("b", False, "[D, 4H] bias (sum of input and recurrent biases)"),
       Slot("peephole", False, "[D, 3, H] peephole weights for i, f, o"),
       Slot("layer_norm", False, "[D, 4, H] layer-norm gains for i, f, c, o (bias b added after)"),
       Slot("w_proj", False, "[D, P, H] projection weights"),
       Slot("b_proj", False, "[D, P] projection bias")))

_spec(Op.GRU, ("x", "sequence_lens", "initial_h"), 1, ("y", "y_h"), 0,
      _RECURRENT_ATTRS + (Attr("linear_before_reset", "bool", False),),
      (Slot("w_x", True, "[D, 3H, I] input weights, gates z,r,h"),
       Slot("w_h", False, "[D, 3H, H] recurrent weights (absent when factored)"),
       *_FACTORED,
       Slot("b_x", False, "[D, 3H] input bias"),
       Slot("b_h", False, "[D, 3H] recurrent bias")))

_spec(Op.RNN, ("x", "sequence_lens", "initial_h"), 1, ("y", "y_h"), 0,
      _RECURRENT_ATTRS,
      (Slot("w_x", True, "[D, H, I] input weights"),
       Slot("w_h", False, "[D, H, H] recurrent weights (absent when factored)"),
       *_FACTORED,
       Slot("b", False, "[D, H] bias (sum of input and recurrent biases)")))

# SRU (Lei et al. 2017, as the `sru` package computes it), gates c~ (W x), f, r [, skip]:
#   f_t = sigmoid(W_f x_t + v_f * c_{t-1} + b_f)     r_t = sigmoid(W_r x_t + v_r * c_{t-1} + b_r)
#   c_t = f_t * c_{t-1} + (1 - f_t) * (W x_t)        h_t = r_t * g(c_t) + (1 - r_t) * x'_t
# x'_t = skip_scale * x_t ("input": I == D*H, direction d reads x[..., dH:(d+1)H]), W_s x_t
# ("projected"), or absent ("none": h_t = r_t * g(c_t)). g is the one activation per direction
# (default affine(1, 0), the identity; the package's use_tanh is "tanh"). The input product
# W x_t (with the optional shared input projection) is one GEMM over the whole sequence.
# layer_norm "before" normalises x before that GEMM (x'_t still reads the raw x); "after"
# normalises the output h over its D*H features. y is [T, N, D*H] (batch_first: [N, T, D*H]),
# the final and initial cell states [D, N, H] (batch_first: [N, D, H]).
_spec(Op.SRU, ("x", "sequence_lens", "initial_c"), 1, ("y", "y_c"), 0,
      _RECURRENT_ATTRS + (
          Attr("skip", "str", "input", SRU_SKIPS),
          Attr("skip_scale", "float", 1.0),
          Attr("layer_norm", "str", "none", SRU_LAYER_NORMS),
          Attr("layer_norm_epsilon", "float", 1e-5),
      ),
      (Slot("w_x", True, "[D, G*H, I'] input weights, gates c~, f, r (+ skip when projected, "
                         "G = 4; else G = 3); I' = I, or the projection size"),
       Slot("w_x_proj", False, "[1, I', I] input projection shared by both directions"),
       Slot("v", False, "[D, 2, H] cell weights of f and r (absent: the v1 form, v = 0)"),
       Slot("b", False, "[D, 2, H] biases of f and r"),
       Slot("ln_gain", False, "[F] layer-norm gain (F = I before, D*H after)"),
       Slot("ln_bias", False, "[F] layer-norm bias")))

# ConvLSTM, 1-D or 2-D (Shi et al. 2015; Keras ConvLSTM1D/2D, the common PyTorch ConvLSTMCell),
# channels first: the LSTM equations (gates i, f, c, o; activations f, g, h) with every product
# W x_t and R h_{t-1} a convolution over the S = 1 or 2 spatial axes (S = rank of w_x - 3): the
# input one with `pads` (ONNX order: S begins then S ends) and `dilations` (empty: all 1), the
# recurrent one 'same' (begin (K-1)//2, the rest at the end), stride 1; peepholes multiply c
# elementwise. x [T, N, C, *L] (batch_first [N, T, C, *L]); y [T, D, N, H, *L']
# ([N, T, D, H, *L']); states [D, N, H, *L'] ([N, D, H, *L']); empty pads: no padding;
# L'_k = L_k + pads[k] + pads[S + k] - dilations[k] * (K_x,k - 1).
_spec(Op.CONV_LSTM, ("x", "sequence_lens", "initial_h", "initial_c"), 1, ("y", "y_h", "y_c"), 0,
      _RECURRENT_ATTRS + (Attr("pads", "ints", ()), Attr("dilations", "ints", ())),
      (Slot("w_x", True, "[D, 4H, C, *K_x] input kernel, gates i, f, c, o"),
       Slot("w_h", True, "[D, 4H, H, *K_h] recurrent kernel (K_h odd or even, 'same')"),
       Slot("b", False, "[D, 4H] bias"),
       Slot("peephole", False, "[D, 3, H, *L'] peephole weights for i, f, o")))

# Glue ops take constants as ordinary inputs (a node input may name a graph constant).
_spec(Op.MATMUL, ("a", "b"), 2, ("y",), 1)
_spec(Op.GEMM, ("a", "b", "c"), 2, ("y",), 1,
      (Attr("alpha", "float", 1.0), Attr("beta", "float", 1.0),
       Attr("trans_a", "bool", False), Attr("trans_b", "bool", False)))
_spec(Op.CONV1D, ("x", "w", "b"), 2, ("y",), 1,
      (Attr("stride", "int", 1), Attr("pads", "ints", (0, 0)), Attr("dilation", "int", 1),
       Attr("group", "int", 1)))
for _op in BINARY:
    _spec(_op, ("a", "b"), 2, ("y",), 1)
# rounding of the quotient: none (float: true division; integers: toward zero, as ONNX),
# trunc (toward zero) or floor (toward -inf), as torch.div(rounding_mode=...)
_spec(Op.DIV, ("a", "b"), 2, ("y",), 1,
      (Attr("rounding", "str", "none", ("none", "trunc", "floor")),))
for _op in (Op.RELU, Op.SIGMOID, Op.TANH, Op.SQRT, Op.EXP, Op.LOG, Op.NEG, Op.ABS, Op.IDENTITY):
    _spec(_op, ("x",), 1, ("y",), 1)
_spec(Op.CLIP, ("x",), 1, ("y",), 1,
      (Attr("min", "float", float("-inf")), Attr("max", "float", float("inf"))))
_spec(Op.LEAKY_RELU, ("x",), 1, ("y",), 1, (Attr("alpha", "float", 0.01),))
_spec(Op.CAST, ("x",), 1, ("y",), 1, (Attr("to", "str", REQUIRED, DTYPES),))
_spec(Op.SOFTMAX, ("x",), 1, ("y",), 1, (Attr("axis", "int", -1),))
_spec(Op.LOG_SOFTMAX, ("x",), 1, ("y",), 1, (Attr("axis", "int", -1),))
_spec(Op.REDUCE_MEAN, ("x",), 1, ("y",), 1, (Attr("axes", "ints"), Attr("keepdims", "bool", True)))
_spec(Op.REDUCE_SUM, ("x",), 1, ("y",), 1, (Attr("axes", "ints"), Attr("keepdims", "bool", True)))
# y = x / max(||x||_p, epsilon) along `axis`; a zero vector maps to zeros (ONNX LpNormalization
# has epsilon 0, TFLite L2_NORMALIZATION 1e-6, torch F.normalize 1e-12).
_spec(Op.LP_NORMALIZATION, ("x",), 1, ("y",), 1,
      (Attr("axis", "int", -1), Attr("p", "int", 2, (1, 2)), Attr("epsilon", "float", 0.0)))
_spec(Op.CONCAT, ("x",), 1, ("y",), 1, (Attr("axis", "int"),), variadic_inputs=True)
_spec(Op.SPLIT, ("x",), 1, ("y",), 1, (Attr("axis", "int"), Attr("split", "ints")),
      variadic_outputs=True)
# ONNX Slice semantics (negative indices, clamping, negative steps) with constant bounds.
_spec(Op.SLICE, ("x",), 1, ("y",), 1,
      (Attr("starts", "ints"), Attr("ends", "ints"), Attr("axes", "ints"), Attr("steps", "ints")))
_spec(Op.TRANSPOSE, ("x",), 1, ("y",), 1, (Attr("perm", "ints"),))
# ONNX Reshape semantics: 0 copies the input dim, -1 is inferred.
_spec(Op.RESHAPE, ("x",), 1, ("y",), 1, (Attr("shape", "ints"),))
_spec(Op.SQUEEZE, ("x",), 1, ("y",), 1, (Attr("axes", "ints"),))
_spec(Op.UNSQUEEZE, ("x",), 1, ("y",), 1, (Attr("axes", "ints"),))
# pads: ONNX order [x1_begin, x2_begin, ..., x1_end, x2_end, ...]
_spec(Op.PAD, ("x",), 1, ("y",), 1,
      (Attr("pads", "ints"), Attr("mode", "str", "constant", ("constant", "reflect", "edge")),
       Attr("value", "float", 0.0)))
_spec(Op.GATHER, ("x", "indices"), 2, ("y",), 1, (Attr("axis", "int", 0),))
# x [N, C, H, W], w [O, C/group, kH, kW]; pads ONNX order [top, left, bottom, right]
_spec(Op.CONV2D, ("x", "w", "b"), 2, ("y",), 1,
      (Attr("strides", "ints", (1, 1)), Attr("pads", "ints", (0, 0, 0, 0)),
       Attr("dilations", "ints", (1, 1)), Attr("group", "int", 1)))
# max over windows of the last len(kernel_shape) axes; padding counts as -inf (ONNX MaxPool)
_spec(Op.MAX_POOL, ("x",), 1, ("y",), 1,
      (Attr("kernel_shape", "ints"), Attr("strides", "ints", ()), Attr("pads", "ints", ()),
       Attr("dilations", "ints", ()), Attr("ceil_mode", "bool", False)))
for _op in (Op.ARG_MAX, Op.ARG_MIN):     # int64 indices; ties: first index unless select_last
    _spec(_op, ("x",), 1, ("y",), 1, (Attr("axis", "int", 0), Attr("keepdims", "bool", True),
                                       Attr("select_last_index", "bool", False)))
for _op in COMPARISON:                   # numpy broadcasting, bool result
    _spec(_op, ("a", "b"), 2, ("y",), 1)
_spec(Op.NOT, ("x",), 1, ("y",), 1)
_spec(Op.ERF, ("x",), 1, ("y",), 1)
_spec(Op.WHERE, ("condition", "a", "b"), 3, ("y",), 1)     # condition ? a : b, broadcasting
_spec(Op.TILE, ("x",), 1, ("y",), 1, (Attr("repeats", "ints"),))
# ONNX Loop semantics (edgeseq/loop_op.py): inputs [max_trip_count, cond, num_carried carried
# values, captured outer values]; the body Graph takes [iteration (int64 ()), cond (bool ()),
# carried..., captured...] and returns [cond, carried..., scan values...]; outputs are the final
# carried values, then each scan value stacked along a new axis 0. "" = absent (no trip bound /
# no condition).
_spec(Op.LOOP, ("max_trip_count", "cond", "v"), 0, ("v_final",), 0,
      (Attr("body", "graph"), Attr("num_carried", "int", 0)),
      variadic_inputs=True, variadic_outputs=True)


def conv_lstm_geometry(attrs: dict, n_spatial: int) -> tuple[tuple, tuple, tuple]:
    """(pads at the start, pads at the end, dilations) of a ConvLSTM node's input convolution,
    one value per spatial axis. Raises ValueError when the attributes do not fit the rank."""
    pads, dil = tuple(attrs["pads"]) or (0,) * 2 * n_spatial, tuple(attrs["dilations"])
    dil = dil or (1,) * n_spatial
    if len(pads) != 2 * n_spatial or min(pads) < 0:
        raise ValueError(f"pads: expected {2 * n_spatial} values >= 0 (begins, then ends), "
                         f"got {list(pads)}")
    if len(dil) != n_spatial or min(dil) < 1:
        raise ValueError(f"dilations: expected {n_spatial} values >= 1, got {list(dil)}")
    return pads[:n_spatial], pads[n_spatial:], dil


def spec(op: Op) -> OpSpec:
    """The OpSpec of `op`."""
    return SPECS[op]


def num_directions(attrs: dict) -> int:
    """1, or 2 for a bidirectional recurrent node."""
    return 2 if attrs.get("direction") == "bidirectional" else 1


def num_activations(op: Op) -> int:
    """Activation functions per direction: LSTM (f, g, h), GRU (f, g), RNN (f), SRU (g)."""
    return {Op.LSTM: 3, Op.GRU: 2, Op.RNN: 1, Op.SRU: 1, Op.CONV_LSTM: 3}[op]


DEFAULT_ACTIVATIONS = {Op.LSTM: ("sigmoid", "tanh", "tanh"), Op.GRU: ("sigmoid", "tanh"),
                       Op.RNN: ("tanh",), Op.SRU: ("affine",),
                       Op.CONV_LSTM: ("sigmoid", "tanh", "tanh")}


def normalize_attrs(op: Op, attrs: dict) -> dict:
    """Fill defaults and make recurrent activation lists explicit (one entry per function per
    direction, alpha/beta filled from ACTIVATIONS). Raises KeyError/ValueError on bad input;
    `Graph.validate` turns those into errors that name the node."""
    s = SPECS[op]
    out: dict = {}
    known = {a.name for a in s.attrs}
    unknown = set(attrs) - known
    if unknown:
        raise ValueError(f"unknown attribute(s) {sorted(unknown)} for {op.value}; "
                         f"known: {sorted(known)}")
    for a in s.attrs:
        if a.name in attrs:
            v = attrs[a.name]
        elif a.default is REQUIRED:
            raise ValueError(f"attribute '{a.name}' is required for {op.value}")
        else:
            v = a.default
        try:
            v = _coerce(a, v)
        except (TypeError, ValueError, OverflowError):    # OverflowError: int(inf)
            raise ValueError(f"attribute '{a.name}' must be of kind {a.kind}, got {v!r}") from None
        if a.choices is not None and v not in a.choices:
            raise ValueError(f"attribute '{a.name}' must be one of {list(a.choices)}, got {v!r}")
        out[a.name] = v
    if op in RECURRENT:
        _normalize_activations(op, out)
    return out


def _coerce(a: Attr, v: Any) -> Any:
    # NOTE: refuse what would coerce silently to a wrong value: "false" -> True, 4.7 -> 4,
    # "12" -> (1, 2)
    if isinstance(v, str) and a.kind != "str":
        raise ValueError(v)
    if a.kind == "int" and isinstance(v, float) and not v.is_integer():
        raise ValueError(v)
    if a.kind == "int":
        return int(v)
    if a.kind == "float":
        return float(v)
    if a.kind == "bool":
        if v not in (0, 1):     # True/False, 0/1, numpy bools; not None, 1.5, []
            raise ValueError(v)
        return bool(v)
    if a.kind == "str":
        return str(v)
    if a.kind == "ints":
        return tuple(int(x) for x in v)
    if a.kind == "floats":
        return tuple(float(x) for x in v)
    if a.kind == "strs":
        return tuple(str(x) for x in v)
    if a.kind == "graph":       # an edgeseq Graph (a dict here is a body not yet resolved)
        if not (hasattr(v, "nodes") and hasattr(v, "validate")):
            raise ValueError(v)
        return v
    raise AssertionError(a.kind)


def _normalize_activations(op: Op, attrs: dict) -> None:
    d = num_directions(attrs)
    k = num_activations(op)
    acts = attrs["activations"] or DEFAULT_ACTIVATIONS[op] * d
    if len(acts) == k and d == 2:
        acts = tuple(acts) * 2
    if len(acts) != k * d:
        raise ValueError(f"activations: expected {k * d} names ({k} per direction), got {len(acts)}")
    for name in acts:
        if name not in ACTIVATIONS:
            raise ValueError(f"activation '{name}' is not supported; supported: {sorted(ACTIVATIONS)}")
    # The IR stores alpha/beta explicitly, one per activation (0.0 where unused); converters
    # translate their format's convention (ONNX consumes them in order) into this.
    alpha, beta = list(attrs["activation_alpha"]), list(attrs["activation_beta"])
    for label, vals, idx in (("activation_alpha", alpha, 0), ("activation_beta", beta, 1)):
        if not vals:
            vals.extend(ACTIVATIONS[n][idx] or 0.0 for n in acts)
        elif len(vals) != len(acts):
            raise ValueError(f"{label}: expected {len(acts)} values (one per activation), "
                             f"got {len(vals)}")
    attrs["activations"] = tuple(acts)
    attrs["activation_alpha"] = tuple(float(x) for x in alpha)
    attrs["activation_beta"] = tuple(float(x) for x in beta)
