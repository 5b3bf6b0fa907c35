"""The TFLite converter: walk the first subgraph, map each operator with its handler, report
every unsupported operator or option at once, and return a validated Graph. A damaged file
is reported the same way as a ModelFormatError naming the file, operator and field: no raw
Python exception leaves the converter."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from edgeseq import input_checks
from edgeseq.errors import (EdgeseqError, GraphError, ModelFormatError, ShapeError,
                            UnsupportedModelError)
from edgeseq.graph import Graph, Value
from edgeseq.reference import INT8_ACTIVATIONS, INT8_ASYMMETRIC

from edgeseq.converters.tflite import glue, lstm, reader  # noqa: F401  (registers handlers)
from edgeseq.converters.tflite.context import HANDLERS, Context, OpView, Unsupported

# Operators that feed a sequence op through its time axis (input 0).
_SEQUENCE_OPS = {"UNIDIRECTIONAL_SEQUENCE_LSTM": ("timeMajor", False),
                 "BIDIRECTIONAL_SEQUENCE_LSTM": ("timeMajor", True)}

_HINTS = {
    "WHILE": "Keras 3 (and any GRU) converts to a WHILE loop; convert an LSTM with tf-keras and "
             "TF_USE_LEGACY_KERAS=1 to get the fused UNIDIRECTIONAL_SEQUENCE_LSTM",
    "CUSTOM": "custom and Flex (SELECT_TF_OPS) operators cannot be mapped",
}


def _ops(loaded: reader.Loaded, sub) -> list[OpView]:
    codes = loaded.model.operatorCodes or []
    out = []
    for i, op in enumerate(sub.operators or []):
        code = codes[op.opcodeIndex]
        if code.customCode:
            cc = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
            name = f"CUSTOM:{cc}"
        else:
            name = reader.op_name(reader.builtin_code(code))
        out.append(OpView(i, name, int(code.version), op))
    return out


# Elementwise / shape-preserving operators a sequence op's input may pass through on its way
# from the graph input (Keras: REVERSE_V2 for a backward layer, QUANTIZE in int8 models).
_KEEPS_LAYOUT = {"QUANTIZE", "DEQUANTIZE", "REVERSE_V2", "TANH", "LOGISTIC"}


def _dynamic_time_axes(ctx: Context, ops: list[OpView], inputs: list[int]) -> dict[int, int]:
    """Graph inputs read by a sequence op (directly or through layout-keeping ops): their time
    axis becomes the symbol "T"."""
    producer = {o: op for op in ops for o in op.outputs}
    axes: dict[int, int] = {}
    for op in ops:
        if op.name in _SEQUENCE_OPS:
            opt, default = _SEQUENCE_OPS[op.name]
            time_major = bool(op.option(opt, default))
            for k in (0, 39):
                idx = op.input(k)
                while idx not in inputs and idx in producer and \
                        producer[idx].name in _KEEPS_LAYOUT:
                    idx = producer[idx].input(0)
                if idx in inputs:
                    axes[idx] = 0 if time_major else 1
    return axes


@contextmanager
def _stage(path, field: str):
    """Turn a raw exception from one conversion stage into a ModelFormatError saying where."""
    try:
        yield
    except EdgeseqError as e:
        if e.args and str(path) not in str(e.args[0]):
            e.args = (f"{path}: {e.args[0]}",) + e.args[1:]    # keeps type and attributes
        raise
    except (Exception, RecursionError) as e:  # noqa: BLE001 - a damaged model, whatever broke
        raise ModelFormatError(f"malformed model: {type(e).__name__}: "
                               f"{' '.join(str(e).split())[:200]}", file=str(path),
                               field=field) from None


# The int8 products' activation precision of a hybrid file (`edgeseq.quant.activations`).
# TFLite's hybrid kernels quantise x_t, h_{t-1} and m_t to int8 per batch row at every step:
# symmetric (s = max|v|/127, edgeseq's "int8") or, with asymmetric_quantize_inputs (what
# TF's dynamic-range quantiser writes), with a zero point per row ("int8_asymmetric"); both
# equal TFLite to float32 rounding. One precision per graph: a file mixing the two forms gets
# "int16" (the int8 weights' own error, closer to either than the other int8 form).
HYBRID_ACTIVATIONS = ("int8", INT8_ASYMMETRIC, "int16")


def default_activations(hybrid: list[tuple[str, bool]]) -> str:
    """TFLite's own semantics: int8 where every hybrid op quantises symmetrically,
    int8_asymmetric where every one has a zero point, int16 for a mix."""
    forms = {asymmetric for _, asymmetric in hybrid}
    if len(forms) > 1:
        return "int16"
    return INT8_ASYMMETRIC if forms == {True} else "int8"


def convert(path: str | Path, *, dynamic_time: bool = True, subgraph: int = 0,
            fix: dict | None = None, shapes: dict | None = None,
            activations: str | None = None) -> Graph:
    """Convert a .tflite model into a validated edgeseq Graph (float activations; hybrid int8
    LSTM weights stay int8 with per-row scales; other quantised constants are dequantised).

    dynamic_time: give graph inputs that feed a sequence op directly a symbolic time axis "T"
    (TFLite fixes it at conversion time; edgeseq runs and streams any length).
    activations: with hybrid (dynamic-range) ops, the precision the int8 weights multiply
    activations in: "int8", "int8_asymmetric" or "int16"; default `default_activations`
    (TFLite's semantics).
    """
    if activations is not None and activations not in HYBRID_ACTIVATIONS:
        raise UnsupportedModelError(f"{path}: activations must be one of "
                                    f"{list(HYBRID_ACTIVATIONS)}, got {activations!r}")
    if fix:
        raise UnsupportedModelError(f"{path}: --fix is not supported for TFLite models (their "
                                    f"inputs are tensors, not shape-bearing graph inputs)")
    loaded = reader.load(path)
    subs = loaded.model.subgraphs or []
    if not 0 <= subgraph < len(subs):
        raise UnsupportedModelError(f"{path}: no subgraph {subgraph}; the model has {len(subs)}")
    with _stage(path, "operators"):
        return _convert(path, loaded, subs[subgraph], dynamic_time, shapes, activations)


def _convert(path, loaded: reader.Loaded, sub, dynamic_time: bool, shapes,
             activations: str) -> Graph:
    ctx = Context(loaded, sub)
    ops = _ops(loaded, sub)

    problems: list[tuple[int, str]] = []   # (operator index, message); -1 = the graph
    malformed = 0                          # how many of them are damage, not unsupported
    for op in ops:
        h = HANDLERS.get(op.name)
        if h is None:
            hint = _HINTS.get(op.name.split(":")[0])
            problems.append((op.index, f"{op.label} (version {op.version}): no edgeseq mapping"
                             + (f" ({hint})" if hint else "")))
        elif h.max_version is not None and op.version > h.max_version:
            problems.append((op.index, f"{op.label}: version {op.version} is newer than the "
                                       f"mapped versions (<= {h.max_version})"))

    graph_inputs = [int(i) for i in (sub.inputs if sub.inputs is not None else [])]
    time_axes = _dynamic_time_axes(ctx, ops, graph_inputs) if dynamic_time else {}
    inputs: list[Value] = []
    for idx in graph_inputs:
        t = ctx.tensor(idx)
        if t.type not in (0, 9, 3, 7):   # FLOAT32, INT8, UINT8, INT16 (quantised activations)
            problems.append((-1, f"graph input {idx} '{ctx.tname(idx)}': type "
                                 f"{reader.dtype_name(t.type)} is not supported (float32 or "
                                 f"quantised activations only)"))
            continue
        if t.type != 0:
            ctx.notes.append(f"graph input '{ctx.tname(idx)}' is {reader.dtype_name(t.type)} in "
                             f"TFLite; edgeseq takes its real (float32) values")
        shape = list(ctx.shape(idx))
        if idx in time_axes:
            shape[time_axes[idx]] = "T"
        name = ctx.fresh(ctx.tname(idx))
        if shapes and name in shapes:
            want = list(shapes[name])
            if len(want) != len(shape):
                raise UnsupportedModelError(f"{path}: --shape {name}: rank {len(want)}, the "
                                            f"input has rank {len(shape)} {tuple(shape)}")
            shape = [w if w not in (None, -1) else d for w, d in zip(want, shape)]
        ctx.names[idx] = name
        inputs.append(Value(name, "float32", tuple(shape)))
    unknown = sorted(set(shapes or {}) - {v.name for v in inputs})
    if unknown:   # NOTE: a misspelt --shape name was silently ignored
        raise UnsupportedModelError(f"{path}: --shape {unknown} not a graph input; inputs: "
                                    f"{[v.name for v in inputs]}")

    for op in ops:
        if op.name in HANDLERS:
            ctx.current = op
            try:
                HANDLERS[op.name].fn(ctx, op)
                continue
            except (Unsupported, UnsupportedModelError) as e:
                problems.append((op.index, f"{op.label}: {e}"))
                malformed += isinstance(e, ModelFormatError)
            except EdgeseqError:
                raise
            except (Exception, RecursionError) as e:  # noqa: BLE001 - damaged fields or operands
                problems.append((op.index, f"{op.label}: malformed (or not understood): "
                                           f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"))
                malformed += 1
        # NOTE: bind the outputs of an unmapped operator to placeholders so that the operators
        # after it are still checked and every problem is reported in one go
        for idx in op.outputs:
            ctx.names.setdefault(idx, ctx.fresh(f"<unmapped {ctx.tname(idx)}>"))
    ctx.current = None

    if problems:
        supported = ", ".join(sorted(HANDLERS))
        message = (f"{path}: {len(problems)} unsupported operator(s)/option(s):\n  "
                   + "\n  ".join(m for _, m in sorted(problems, key=lambda p: p[0]))
                   + f"\nsupported operators: {supported}")
        if malformed:
            err = ModelFormatError(message, file=str(path))
            err.field = "operators"
            raise err
        raise UnsupportedModelError(message)

    outputs = []
    for idx in (sub.outputs if sub.outputs is not None else []):
        if int(idx) not in ctx.names:
            raise UnsupportedModelError(f"{path}: graph output {idx} '{ctx.tname(idx)}' is not "
                                        f"produced by any mapped operator")
        outputs.append(Value(ctx.value(int(idx)), "float32", ()))
    meta = {"source_format": "tflite", "source": Path(path).name}
    if ctx.hybrid:
        act = activations or default_activations(ctx.hybrid)
        meta[INT8_ACTIVATIONS] = act
        asym = [label for label, asymmetric in ctx.hybrid if asymmetric]
        ctx.notes.append(f"hybrid int8 weights: activations {act} in the int8 products"
                         + (f" (TFLite quantises them to int8 with a zero point in "
                            f"{', '.join(asym)})" if asym and act != INT8_ASYMMETRIC else ""))
    if ctx.notes:
        meta["conversion_notes"] = ctx.notes
    for name, check in getattr(ctx, "input_checks", ()):   # e.g. a Keras mask's padding
        input_checks.add(meta, name, check)
    g = Graph(Path(path).stem, inputs, outputs, ctx.nodes, ctx.constants, metadata=meta)
    try:
        from edgeseq.converters.reroll import reroll
        from edgeseq.converters.time_literals import free_time_literals
        # quantisation steps of the file's tensors: the re-rolling probe's bound (reroll._bounds)
        steps = {name: float(q.scale.max()) for idx, name in ctx.names.items()
                 if (q := ctx.quant(idx)) is not None}
        return free_time_literals(reroll(g, steps)).validate()
    except (GraphError, ShapeError) as e:
        raise type(e)(f"{path}: converted graph is inconsistent: {e}") from None
