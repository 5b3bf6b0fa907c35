"""edgeseq.runtime: run Graphs with Numba kernels (numpy + numba only; no converters/quant).

    model = edgeseq.runtime.Model(graph)      # or edgeseq.load("model.eseq")
    out = model.run({"x": x})
    s = model.stream(); s.push({"x": chunk})
"""
__all__ = ["Model", "Stream", "InputSpec", "load", "delta_calibrate"]

# NOTE: imported on first use (PEP 562), so that edgeseq.runtime.native, the loader of
# ahead-of-time compiled code, can be imported without Numba
_LAZY = {"Model": "session", "Stream": "session", "InputSpec": "session", "load": "session",
         "delta_calibrate": "delta_calibrate"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        from edgeseq.gc_pause import fewer_collections
        with fewer_collections():     # imports Numba and the kernels (edgeseq/gc_pause.py)
            module = importlib.import_module(f"edgeseq.runtime.{_LAZY[name]}")
        value = getattr(module, "calibrate" if name == "delta_calibrate" else name)
        globals()[name] = value   # (replaces the sub-module delta_calibrate the import bound)
        return value
    raise AttributeError(f"module 'edgeseq.runtime' has no attribute '{name}'")
