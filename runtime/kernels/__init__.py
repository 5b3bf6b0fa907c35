"""Private Numba kernels: compiled code only, importing nothing above this package (the kernel
families in runtime/ prepare their operands; runtime/registry.py registers the families)."""
