"""The CPU that Numba compiles for: target triple, CPU name and feature set, read the way
Numba's own code generator reads them (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES, else the host).

The integer kernels pick their formulation from these features (`kernels.s8dot`), so that
an instruction is only emitted when the code generator may use it. Note that Numba applies
NUMBA_CPU_NAME alone with the *host's* features: to compile for an AVX2-only CPU on an
AVX-512 machine, give both (docs/quant.md shows the haswell feature list).
"""
from __future__ import annotations

from typing import NamedTuple

import llvmlite.binding as ll
from numba.core import config


class Target(NamedTuple):
    triple: str
    cpu: str
    features: frozenset        # names without the sign, e.g. {"avx2", "avx512vnni"}


def parse_features(text: str) -> frozenset:
    """The enabled features of an LLVM feature string such as "+avx2,-avx512f"."""
    return frozenset(f[1:] for f in text.split(",") if f.startswith("+"))


def numba_target() -> Target:
    cpu = config.CPU_NAME or ll.get_host_cpu_name()
    text = config.CPU_FEATURES if config.CPU_FEATURES is not None else \
        ll.get_host_cpu_features().flatten()
    return Target(ll.get_process_triple(), cpu, parse_features(text))
