"""edgeseq.quant: compression passes, each `apply(graph, **opts) -> (graph, report)`.

int8 (per-row symmetric), fp16, svd (factored W_h), lstmp (joint-SVD projection), calibrate
(errors against the float graph), pipeline.compress (all of them in order, one report).
Passes never import the runtime; their results are checked with edgeseq.reference.
"""
