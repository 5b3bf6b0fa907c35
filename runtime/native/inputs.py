"""Input checks of a Model running compiled code, without Numba: the same policy as
`runtime.session.Model.check_inputs` (names, ranks, fixed and symbolic dims, float inputs
to float32, integer inputs, NaN/inf, the graph's input checks, dims fixed by recurrent
weights, the memory budget), on an object with `graph`, `name`, `inputs`, `check_finite`,
`memory_limit` and `_warn_once`."""
from __future__ import annotations

import numpy as np

from edgeseq import input_checks
from edgeseq.errors import InputError
from edgeseq.graph import Graph
from edgeseq.memory import MemoryEstimate
from edgeseq.ops import Op
from edgeseq.runtime import streaming


def input_specs(graph: Graph) -> list:
    """(name, dtype, shape, optional) per graph input (optional: initial states, as the
    runtime's Model says through streaming.state_prep)."""
    optional = streaming.state_prep(graph).inputs
    return [(v.name, v.dtype, tuple(v.shape), v.name in optional) for v in graph.inputs]


def _describe(dtype: str, shape: tuple) -> str:
    return "(" + ", ".join(str(d) for d in shape) + f") {dtype}"


def bound_symbols(graph: Graph) -> dict:
    """symbol -> (size, node) where a recurrent node's weights fix a dim its input leaves
    symbolic; checked on the graph inputs of every call (the compiled code and the per-node
    kernels read those dims without bounds checks). Shared with runtime.session.Model."""
    out: dict = {}
    for node in graph.nodes:
        if node.op not in (Op.LSTM, Op.GRU, Op.RNN):
            continue
        a = node.attrs
        h = a.get("hidden_size", 0)
        sizes = (int(graph.weight(node, "w_x").shape[-1]), None, a.get("proj_size", 0) or h, h)
        for k, want in enumerate(sizes):
            name = node.inputs[k] if k < len(node.inputs) else ""
            if want is None or not name or name in graph.constants:
                continue
            last = graph.value(name).shape[-1]
            if isinstance(last, str):
                out.setdefault(last, (want, node.name))
    return out


class InputChecks:
    """check_inputs(inputs) -> {name: float32 / int64 array}, or InputError."""

    def _init_checks(self, graph: Graph) -> None:
        self._specs = input_specs(graph)
        self._names = frozenset(s[0] for s in self._specs)
        self._bound = bound_symbols(graph)
        self._memory = MemoryEstimate(graph)
        self._memory.check(self.memory_limit, f"model '{self.name}'")
        self._has_checks = bool(graph.metadata.get(input_checks.KEY))

    def check_inputs(self, inputs: dict, specs: list | None = None) -> dict:
        """specs: (name, dtype, shape, optional) replacing the model's (a Stream frees the
        time dim)."""
        if not isinstance(inputs, dict):
            raise InputError(f"model '{self.name}': inputs must be a dict of name -> array, "
                             f"got {type(inputs).__name__}")
        extra = [k for k in inputs if k not in self._names]
        if extra:
            raise InputError(f"model '{self.name}': unknown input(s) {extra}; expected "
                             f"{[s[0] for s in self._specs]}")
        env, symbols = {}, {}
        for name, dtype, shape, optional in (self._specs if specs is None else specs):
            a = inputs.get(name)
            if a is None:
                if optional:
                    if specs is None and dtype.startswith("float"):   # a Stream carries it
                        self._warn_once(name, f"model '{self.name}': input '{name}' (a recurrent"
                                        f" initial state) not given: starting from zeros")
                    continue
                raise InputError(f"model '{self.name}': missing input '{name}' (expected "
                                 f"{_describe(dtype, shape)})")
            env[name] = self._check_one(name, dtype, shape, a, symbols)
        if self._has_checks:
            input_checks.check(self.graph, env)
        for sym, (want, node) in self._bound.items():
            got = symbols.get(sym)
            if got is not None and got[0] != want:
                raise InputError(f"model '{self.name}': input '{got[1]}': '{sym}' is {got[0]}, "
                                 f"but node '{node}' needs it to be {want} (its weights fix it)")
        self._memory.check_call(self.memory_limit, f"model '{self.name}'", env)
        return env

    def _check_one(self, name, dtype, shape, a, symbols) -> np.ndarray:
        a = a if isinstance(a, np.ndarray) else np.asarray(a)
        where = f"model '{self.name}': input '{name}'"
        if a.ndim != len(shape):
            raise InputError(f"{where}: expected {_describe(dtype, shape)}, got rank {a.ndim} shape {a.shape} "
                             f"{a.dtype}")
        for k, (want, got) in enumerate(zip(shape, a.shape)):
            if isinstance(want, int):
                if want != got:
                    raise InputError(f"{where}: expected {_describe(dtype, shape)}, got {a.shape} {a.dtype} "
                                     f"(dim {k} must be {want})")
            else:
                seen = symbols.setdefault(want, (got, name))
                if seen[0] != got:
                    raise InputError(f"{where}: dim {k} ('{want}') is {got} but input "
                                     f"'{seen[1]}' has '{want}' = {seen[0]}")
        if dtype.startswith("float"):
            if a.dtype.kind != "f":
                raise InputError(f"{where}: expected {_describe(dtype, shape)}, got dtype {a.dtype}")
            if a.dtype != np.float32:
                if a.dtype == np.float64:
                    self._warn_once("float64", f"{where}: float64 converted to float32 (the "
                                    f"runtime computes in float32)")
                a = a.astype(np.float32)
            if self.check_finite and not np.isfinite(a).all():
                bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
                raise InputError(f"{where}: {bad} non-finite value(s) (NaN or inf); build the "
                                 f"Model with check_finite=False to allow them")
        elif a.dtype.kind not in "iu":
            raise InputError(f"{where}: expected {_describe(dtype, shape)}, got dtype {a.dtype}")
        return a
