"""Resource variables of stateful Keras models (CALL_ONCE, VAR_HANDLE, READ_VARIABLE,
ASSIGN_VARIABLE) become the recurrent state a stream carries.

TFLite keeps a stateful layer's h and c in variables: CALL_ONCE runs an init subgraph that
assigns their starting values, the main graph READs them as the loop's initial states and
ASSIGNs the loop's final states back. In edgeseq that is exactly a Stream: `run` starts from
the init values (read as constants) and a stream carries the recurrent node's final states to
its next push. So the mapping is accepted only when every ASSIGN_VARIABLE writes the final
state of the lifted loop that read the same variable (`loops.py` records which) and nothing
else reads a variable; anything else is refused, naming the operator.
"""
from __future__ import annotations

import numpy as np

from edgeseq.converters.tflite import reader
from edgeseq.converters.tflite.context import HANDLERS, Context, OpView, Unsupported, handler


def _name(op: OpView) -> str:
    n = op.option("sharedName", b"")
    return n.decode() if isinstance(n, bytes) else str(n)


def state(ctx: Context) -> dict:
    """Per-conversion variable bookkeeping, kept on the context."""
    if not hasattr(ctx, "variables"):
        ctx.variables = {"init": {}, "handles": {}, "reads": {}, "finals": {}}
    return ctx.variables


def call_once(ctx: Context, op: OpView) -> None:
    from edgeseq.converters.tflite.convert import _ops   # NOTE: lazy: convert imports us
    index = int(op.option("initSubgraphIndex"))
    sub = ctx.loaded.model.subgraphs[index]
    handles = {}
    for o in _ops(ctx.loaded, sub):
        if o.name == "VAR_HANDLE":
            handles[o.outputs[0]] = _name(o)
        elif o.name == "ASSIGN_VARIABLE" and o.inputs[0] in handles:
            t = sub.tensors[o.inputs[1]]
            val = reader.real_array(ctx.loaded, t)
            if val is None:
                raise Unsupported(f"init subgraph {index} assigns variable "
                                  f"'{handles[o.inputs[0]]}' a computed value (constants only)")
            state(ctx)["init"][handles[o.inputs[0]]] = np.asarray(val, np.float32)
        else:
            raise Unsupported(f"init subgraph {index} runs {o.label}; only constant "
                              f"assignments to variables are supported")


def var_handle(ctx: Context, op: OpView) -> None:
    state(ctx)["handles"][op.outputs[0]] = _name(op)


def read_variable(ctx: Context, op: OpView) -> None:
    st = state(ctx)
    var = st["handles"].get(op.inputs[0])
    if var is None or var not in st["init"]:
        raise Unsupported("reads a variable that no CALL_ONCE initialises")
    from edgeseq.converters.tflite.convert import _ops
    users = [o for o in _ops(ctx.loaded, ctx.sub) if op.outputs[0] in o.inputs]
    if any(o.name != "WHILE" for o in users):
        raise Unsupported(f"variable '{var}' is read by {[o.label for o in users]}; only a "
                          f"recurrent loop's initial state may read a variable")
    st["reads"][op.outputs[0]] = var
    ctx.fold(op.outputs[0], st["init"][var])


def assign_variable(ctx: Context, op: OpView) -> None:
    st = state(ctx)
    var = st["handles"].get(op.inputs[0])
    if var is None or st["finals"].get(op.inputs[1]) != var:
        raise Unsupported(f"writes variable '{var}' with a value that is not the final state of "
                          f"the recurrent loop that read it (only stateful recurrent layers map "
                          f"to stream state)")
    # NOTE: nothing to emit: a Stream carries the recurrent node's final state to its next push


# NOTE: registered unless a handler for these already exists (the glue module may map them)
for _op, _fn in (("CALL_ONCE", call_once), ("VAR_HANDLE", var_handle),
                 ("READ_VARIABLE", read_variable), ("ASSIGN_VARIABLE", assign_variable)):
    if _op not in HANDLERS:
        handler(_op)(_fn)
