"""PyTorch -> edgeseq: nn.Modules through torch.export, saved .pt2 programs, bare state_dicts.

- `from_module(module, example_inputs)`: export the module and map the aten ops to the IR
  (LSTM incl. proj_size, GRU, RNN, linear, conv1d, elementwise, softmax, view/permute glue).
- `convert_exported(path)`: a program saved with `torch.export.save` (.pt2).
- `convert_state_dict(path, arch=SPEC)`: a state_dict (.pt/.pth/.safetensors) of a standard
  stack described by a short spec such as "lstm(batch_first)+linear" (see `_spec.py`).

torch is an optional dependency (`pip install edgeseq[torch]`); it is imported only here,
when a function is called. Tried with PyTorch 2.13.0+cpu.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:      # torch stays optional: only type checkers import it here
    import torch

from edgeseq import peers
from edgeseq.errors import EdgeseqError, ModelFormatError, UnsupportedModelError
from edgeseq.graph import Graph

# `edgeseq compare program.pt2` runs the original in PyTorch (registered here: light, no torch)
peers.register(".pt2", "edgeseq.converters.torch.peer:run_exported")


def require_torch():
    """The torch module, or a clear error saying how to get it."""
    try:
        import torch
    except ImportError as e:
        raise UnsupportedModelError(
            "converting PyTorch models needs torch: pip install 'edgeseq[torch]' "
            f"(import failed: {e})") from None
    return torch


def _lower(ep, name: str) -> Graph:
    # handlers register themselves on import
    from edgeseq.converters.torch import _glue, _recurrent  # noqa: F401
    from edgeseq.converters.torch import _convlstm  # noqa: F401
    from edgeseq.converters.torch import _glue_select, _glue_spatial  # noqa: F401
    from edgeseq.converters.torch._lowering import Lowering
    from edgeseq.converters.reroll import reroll
    # a Python loop over a cell is traced as one T = 1 node per step: one node over the
    # sequence instead (converters/reroll.py), so it streams and its length can be symbolic
    return reroll(Lowering(ep, name).run())


def _lower_checked(ep, path: Path) -> Graph:
    """_lower, with a program that breaks the lowering's assumptions (a hostile or damaged
    file) reported as a ModelFormatError naming the file instead of a raw exception."""
    try:
        return _lower(ep, path.stem).validate()
    except EdgeseqError as e:
        if str(e).startswith(str(path)):
            raise
        raise type(e)(f"{path}: {e}") from None
    except (Exception, RecursionError) as e:  # noqa: BLE001 - see docstring
        raise ModelFormatError(f"program cannot be lowered: {type(e).__name__}: "
                               f"{str(e).strip()[:300]}", file=str(path)) from None


def _export(torch, module, args: tuple):
    import warnings
    try:
        with warnings.catch_warnings():
            # nn.RNNBase re-assigns _flat_weights while tracing; harmless, and not the user's
            warnings.filterwarnings("ignore", message=".*were assigned during export.*")
            return torch.export.export(module, args)
    except Exception as e:  # torch raises many types here; say which step failed
        raise UnsupportedModelError(
            f"torch.export could not trace {type(module).__name__}: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}") from e


def from_module(module: "torch.nn.Module", example_inputs, *, dynamic_time: bool = True,
                time_axis: int | dict[str, int] | None = None, dynamic_batch: bool = False,
                batch_axis: int | dict[str, int] | None = None,
                name: str | None = None) -> Graph:
    """Convert an nn.Module, in eval mode, traced on `example_inputs` into a validated Graph.

    With `dynamic_time`, the sequence axis of the inputs becomes the symbol "T": by default the
    one input axis whose size equals the first recurrent layer's sequence length; give
    `time_axis` (an axis of the first input, or {input name: axis}) when that is ambiguous.
    With `dynamic_batch`, the batch axes become "N" the same way (`batch_axis`: every input
    axis of the first recurrent layer's batch size, one per input); otherwise the batch size
    stays the example's.
    """
    torch = require_torch()
    from edgeseq.converters.torch._sru import convert_module, is_sru_module
    if is_sru_module(module):      # sru.SRU / SRUCell: read from its parameters (see _sru.py)
        return convert_module(module, example_inputs, name=name)
    args = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    name = name or type(module).__name__

    from edgeseq.converters.torch._convlstm import conv_lstm_cells
    from edgeseq.converters.torch._packed import padded_sequences

    def trace(a: tuple) -> Graph:
        with torch.no_grad(), padded_sequences(torch, module), conv_lstm_cells(torch, module):
            return _lower(_export(torch, module, a), name)

    was_training = module.training
    module.eval()     # NOTE: inference semantics (no dropout); the caller's mode is restored
    try:
        ga = trace(args)
        if not dynamic_time and not dynamic_batch:
            return ga.validate()
        return _symbolic(torch, ga, trace, args, time_axis if dynamic_time else False,
                         batch_axis if dynamic_batch else False)
    finally:
        module.train(was_training)


def _symbolic(torch, ga: Graph, trace, args: tuple, time_axis, batch_axis=False) -> Graph:
    """Trace again one step longer (and one sequence wider) and make those axes symbolic
    (see _dynamic.py). An axis argument of False leaves that dim static."""
    from edgeseq.converters.torch._dynamic import Variant, generalize
    ga.validate()
    variants = []
    taxes = {} if time_axis is False else _time_axes(ga, args, time_axis)
    if time_axis is not False:
        longer = tuple(_extend(torch, a, taxes.get(v.name)) for a, v in zip(args, ga.inputs))
        variants.append(Variant(trace(longer), taxes, "T", "sequence length", "dynamic_time"))
    if batch_axis is not False:
        baxes = _batch_axes(ga, batch_axis, taxes)
        wider = tuple(_extend(torch, a, baxes.get(v.name)) for a, v in zip(args, ga.inputs))
        variants.append(Variant(trace(wider), baxes, "N", "batch size", "dynamic_batch"))
    return generalize(ga, variants)


def _batch_axes(g: Graph, batch_axis, taxes: dict[str, int]) -> dict[str, int]:
    names = [v.name for v in g.inputs]
    if isinstance(batch_axis, int):
        return {names[0]: batch_axis}
    if isinstance(batch_axis, dict):
        bad = sorted(set(batch_axis) - set(names))
        if bad:
            raise UnsupportedModelError(f"batch_axis names unknown input(s) {bad}; inputs: {names}")
        return dict(batch_axis)
    rec = next(iter(g.recurrent_nodes()), None)
    if rec is None:
        raise UnsupportedModelError("dynamic_batch: the model has no recurrent layer to take the "
                                    "batch size from; pass batch_axis=")
    n0 = g.value(rec.inputs[0]).shape[0 if rec.attrs["batch_first"] else 1]
    out = {}
    for v in g.inputs:
        found = [k for k, d in enumerate(v.shape) if d == n0 and taxes.get(v.name) != k]
        if len(found) > 1:
            raise UnsupportedModelError(
                f"dynamic_batch: input '{v.name}' {v.shape} has several axes of the batch size "
                f"{n0}; pass batch_axis={{'{v.name}': axis, ...}} or use distinct example sizes")
        if found:
            out[v.name] = found[0]
    return out


def _time_axes(g: Graph, args: tuple, time_axis) -> dict[str, int]:
    names = [v.name for v in g.inputs]
    if isinstance(time_axis, int):
        return {names[0]: time_axis}
    if isinstance(time_axis, dict):
        bad = sorted(set(time_axis) - set(names))
        if bad:
            raise UnsupportedModelError(f"time_axis names unknown input(s) {bad}; inputs: {names}")
        return dict(time_axis)
    rec = next(iter(g.recurrent_nodes()), None)
    if rec is None:
        raise UnsupportedModelError("dynamic_time: the model has no recurrent layer to take the "
                                    "sequence length from; pass time_axis= or dynamic_time=False")
    x = g.value(rec.inputs[0])
    t0 = x.shape[1 if rec.attrs["batch_first"] else 0]
    if t0 == 1:
        # NOTE: a cell (LSTMCell, ...) is one step; a Python loop over it is unrolled into one
        # node per step sharing the weights. A size-1 axis (often the batch) says nothing
        # about the sequence, so never take it for the time axis.
        steps = sum(1 for n in g.recurrent_nodes() if n.weights == rec.weights)
        raise UnsupportedModelError(
            f"dynamic_time: the first recurrent layer '{rec.name}' is a single step"
            + (f" (a cell stepped {steps} times by a Python loop, unrolled at export: the "
               f"graph has one node per step)" if steps > 1 else "")
            + "; its length cannot become symbolic: convert with dynamic_time=False "
              "(fixed length), or use nn.LSTM/nn.GRU/nn.RNN over the whole sequence")
    found = [(v.name, k) for v in g.inputs if v.dtype.startswith("float")
             for k, d in enumerate(v.shape) if d == t0]
    if len(found) != 1:
        raise UnsupportedModelError(
            f"dynamic_time: cannot tell the sequence axis: the first recurrent layer "
            f"'{rec.name}' sees {t0} steps and input axes {found or 'none'} have that size; "
            f"pass time_axis= (e.g. time_axis=1) or use distinct example sizes")
    return {found[0][0]: found[0][1]}


def _extend(torch, a, axis):
    """`a` one longer along `axis` (its last slice repeated)."""
    if axis is None:
        return a
    return torch.cat([a, a.narrow(axis, a.shape[axis] - 1, 1)], dim=axis)


def _no_options(path, opts: dict) -> None:
    given = sorted(k for k, v in opts.items() if v)
    if given:
        raise UnsupportedModelError(f"{path}: option(s) {given} apply to ONNX models, not to "
                                    f"PyTorch files")


def convert_exported(path: str | Path, *, dynamic_time: bool = True,
                     time_axis: int | dict[str, int] | None = None, trust_code: bool = False,
                     **opts: Any) -> Graph:
    """Convert a program saved with torch.export.save (.pt2).

    torch.export fixes the sequence length of recurrent ops, so a saved program has static
    shapes. With `dynamic_time` the program's own module is re-exported one step longer to
    make the time axis symbolic; when the program cannot run at another length (its
    reshapes baked the example's length in), the static graph is returned and
    `graph.metadata["static_time"]` says why. For a symbolic length in that case convert the
    nn.Module with `from_module`.

    The archive is read as data (see _archive.py): pickles other than weights-only tensors
    and program strings torch would evaluate are refused unless `trust_code=True`.
    """
    _no_options(path, opts)
    torch = require_torch()
    path = Path(path)
    from edgeseq.converters.torch._archive import load_exported
    from edgeseq.converters.torch._packed import _custom_op
    _custom_op(torch)      # programs exported through from_module may use edgeseq::padded_rnn
    ep = load_exported(path, trust_code=trust_code)
    ga = _lower_checked(ep, path)
    if not dynamic_time:
        return ga

    def trace(a: tuple) -> Graph:
        with torch.no_grad():
            return _lower(_export(torch, module, a), path.stem)
    try:
        args = tuple(_example(torch, v) for v in ga.inputs)
        module = ep.module(check_guards=False)
        # NOTE: the unlifted module checks inputs against the example shapes in a forward
        # pre-hook; drop it so the program can be traced at another length
        module._forward_pre_hooks.clear()
        return _symbolic(torch, ga, trace, args, time_axis)
    except (Exception, RecursionError) as e:  # noqa: BLE001 - the static graph stands as is
        why = str(e) if isinstance(e, UnsupportedModelError) else f"{type(e).__name__}: {e}"
        ga.metadata["static_time"] = f"sequence length fixed at export: {why}"
        return ga


def _example(torch, v):
    """A tensor matching a graph input (float: random; integer, e.g. lengths: the full size)."""
    shape = tuple(int(d) for d in v.shape)
    if v.dtype.startswith("float"):
        return torch.randn(shape)
    return torch.full(shape, max(shape + (1,)), dtype=getattr(torch, v.dtype))


def convert_state_dict(path: str | Path, arch: str | None = None, **opts: Any) -> Graph:
    """Convert a state_dict file (.pt/.pth/.safetensors) of a standard stack described by
    `arch` (see edgeseq.converters.torch._spec for the grammar)."""
    from edgeseq.converters.torch._spec import build_from_state_dict, load_state_dict
    _no_options(path, opts)
    if not arch:
        raise UnsupportedModelError(
            f"{path}: a bare state_dict needs --arch / arch= describing the stack, "
            f"e.g. 'lstm(batch_first)+linear'")
    return build_from_state_dict(load_state_dict(path), arch, name=Path(path).stem)


__all__ = ["from_module", "convert_exported", "convert_state_dict", "require_torch"]
