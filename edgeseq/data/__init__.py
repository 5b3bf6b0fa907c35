"""Data shipped with edgeseq: the demo classifier (ONNX) and its real test sequences."""
