"""Control flow. An If whose condition folds to a constant is inlined by the converter walk
(its taken branch is spliced in); reaching this handler means the condition depends on run-time
data, so say which graph inputs would have to be fixed."""
from __future__ import annotations

from edgeseq.converters.onnx.context import Context, Unsupported
from edgeseq.converters.onnx.registry import handler


@handler("If", since=1)
def if_(ctx: Context, node) -> None:
    if getattr(ctx, "loop_body", False):     # both branches run, Where picks (general_loop.py)
        from edgeseq.converters.onnx.general_loop import if_as_where
        return if_as_where(ctx, node)
    values, shapes = ctx.input_ancestors(node.input[0])
    ctx.wanted_const.extend(sorted(values))
    hints = []
    if values:
        hints.append(f"fix the value of {', '.join(sorted(values))} with --fix NAME=VALUE")
    if shapes:
        hints.append(f"fix the dims of {', '.join(sorted(shapes))} with --shape NAME=DIMS")
    raise Unsupported("If is supported only with a condition known at conversion time (the "
                      "taken branch is inlined); " + (" and ".join(hints) or
                                                      "its condition did not fold"))
