"""edgeseq.converters: model files -> Graph (`registry.convert(path)` picks one by suffix).

`edgeseq.converters.onnx`, `.tflite` and `.torch` are imported on first attribute access
(PEP 562): each pulls in its own framework, which is an optional extra."""

_LAZY_SUBMODULES = frozenset({"onnx", "tflite", "torch", "registry"})


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib
        return importlib.import_module(f"edgeseq.converters.{name}")
    raise AttributeError(f"module 'edgeseq.converters' has no attribute '{name}'")
