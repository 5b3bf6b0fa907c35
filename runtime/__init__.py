"""edgeseq.runtime: run Graphs with Numba kernels (numpy + numba only; no converters/quant).

    model = edgeseq.runtime.Model(graph)      # or edgeseq.load("model.eseq")
    out = model.run({"x": x})
    s = model.stream(); s.push({"x": chunk})
"""
from edgeseq.runtime.delta_calibrate import calibrate as delta_calibrate
from edgeseq.runtime.session import InputSpec, Model, Stream, load

__all__ = ["Model", "Stream", "InputSpec", "load", "delta_calibrate"]
