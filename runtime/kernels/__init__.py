"""Private Numba kernels (see runtime/plan.py for the registry that selects them)."""
