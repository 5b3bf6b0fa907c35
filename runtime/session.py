"""The public runtime: `Model` (compile a Graph once, run whole sequences) and `Stream`
(push chunks, carry recurrent state).

Input policy (checked here, so kernels never see bad input):
* every required input by name; inputs only used as recurrent initial states or sequence
  lengths are optional (zeros / full length);
* rank and fixed dims must match; a symbolic dim ("T", "N") must take one value across all
  inputs of a call;
* float inputs: float32 is used as is; float64 and float16 are converted to float32 (the
  runtime computes in float32); integer inputs (sequence lengths, indices) must be integers;
* a float64 input, and a recurrent state input left out of `Model.run`, give a UserWarning
  once per Model (both are legal, and both are easy to do by mistake);
* non-finite values (NaN, +-inf) raise InputError unless the Model was built with
  `check_finite=False`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from edgeseq import input_checks
from edgeseq.errors import GraphError, InputError
from edgeseq.gc_pause import fewer_collections
from edgeseq.graph import Graph
from edgeseq.limits import LIMITS
from edgeseq.memory import MemoryEstimate
from edgeseq.ops import RECURRENT, Op
from edgeseq.runtime.kernels.graph_ops import all_finite
from edgeseq.runtime.native.inputs import bound_symbols
from edgeseq.runtime.plan import Plan, build_plan
from edgeseq.runtime import delta_codegen
from edgeseq.runtime.delta import DSTATE_SLOTS, is_delta_kernel
from edgeseq.runtime.delta_runner import DeltaRunner, DeltaStats, parse_thresholds, run_delta
from edgeseq.runtime.stream_windows import SLOT as WINDOW_SLOT, conv_windows
from edgeseq.runtime.loop_stream import check_state as check_loop_state, keep as keep_loop_state
from edgeseq.runtime.streaming import _feed_state, state_prep, time_axes
from edgeseq.runtime.threads import ThreadPins

_FLOAT_KINDS = "f"
_F32 = np.dtype(np.float32)
_KNOWN_CALLS_MAX = 64       # input patterns remembered per Model (e.g. chunk lengths)


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: str
    shape: tuple
    optional: bool

    @property
    def is_float(self) -> bool:
        return self.dtype.startswith("float")

    def describe(self) -> str:
        return "(" + ", ".join(str(d) for d in self.shape) + f") {self.dtype}"


class Model:
    """A compiled graph: an execution plan with one prepared kernel per node.

    Thread-safe: `run` keeps no state on the Model, and each thread can own a Stream."""

    def __init__(self, graph: Graph, *, check_finite: bool = True, delta: dict | None = None,
                 warmup: bool = True, name: str | None = None, threads: int = 1,
                 codegen: bool | None = None,
                 memory_limit: int | None = LIMITS.memory_bytes) -> None:
        graph.validate()
        # NOTE: before build_plan, which packs weights: a checksummed file can still state
        # sizes that would need terabytes (memory_limit=None turns the budget off)
        self.memory_limit = memory_limit
        self._memory = MemoryEstimate(graph)
        self._memory.check(memory_limit, f"model '{name or graph.name}'")
        # the last dim of x, initial_h, initial_c each recurrent kernel reads without bounds
        # checks: a graph may leave them symbolic while its weights fix them
        self._rec_sizes = {n.name: _recurrent_sizes(graph, n) for n in graph.nodes
                           if n.op in (Op.LSTM, Op.GRU, Op.RNN)}
        self._bound = bound_symbols(graph)
        self.threads = threads
        self.graph = graph
        self.name = name or graph.name
        self.check_finite = check_finite
        self.plan: Plan = build_plan(graph, delta=delta)
        self._prep = state_prep(graph)
        optional = self._prep.inputs
        self.inputs = [InputSpec(v.name, v.dtype, tuple(v.shape), v.name in optional)
                       for v in graph.inputs]
        self._input_index = {s.name: s for s in self.inputs}
        self._input_checks = bool(graph.metadata.get(input_checks.KEY))
        self._known_calls: dict = {}     # input patterns that passed check_inputs
        self.output_names = [v.name for v in graph.outputs]
        self.last_stats = None      # DeltaStats of the latest run(..., delta=...)
        self._warned: set[str] = set()   # keys of the once-per-Model input warnings given
        self._steps = [(s.kernel, s.sources, s.outputs) for s in self.plan.steps]
        # per step: value names (None for a constant or absent input) and constants
        self._flat_steps = [(s.kernel, tuple(x if k == "v" else None for k, x in s.sources),
                             tuple(x if k == "c" else None for k, x in s.sources), s.outputs,
                             s.node.name if s.node.op in RECURRENT or s.node.op is Op.LOOP
                             else None,
                             s.node.name in self._prep.nodes)
                            for s in self.plan.steps]
        # whole-graph compiler (runtime/codegen): one native call per run / push
        from edgeseq.runtime.codegen import for_model
        with fewer_collections():      # loading or compiling machine code (gc_pause.py)
            self._compiled, self._codegen_note = for_model(self, use=codegen,
                                                           delta=bool(delta),
                                                           build_now=warmup)
            if warmup and self._compiled is None:
                # NOTE: the generated function needs none of the per-node kernels compiled
                # (they compile lazily if a delta run or a one-node stream uses them)
                for s in self.plan.steps:
                    w = getattr(s.kernel, "warmup", None)
                    if w is not None:
                        w()

    @cached_property
    def _pins(self) -> ThreadPins:
        # NOTE: made on first use: only the interpreter calls BLAS, and finding the BLAS
        # libraries takes a few ms of a warm start
        return ThreadPins(self.threads)

    def __repr__(self) -> str:
        ins = ", ".join(f"{s.name}: {s.describe()}" for s in self.inputs)
        return f"Model({self.name!r}, inputs=[{ins}], outputs={self.output_names})"

    def describe(self) -> str:
        """The plan: which kernel runs each node, and whether the generated whole-graph
        function runs them (else which nodes the generator cannot emit, and why); after a
        delta run the generator refused, why (delta_codegen.py)."""
        runner = self.__dict__.get("_delta_runner")
        note = f"\n{runner.codegen_note}" if runner is not None and runner.codegen_note else ""
        return self.plan.describe() + "\n" + self._codegen_note + note

    def source(self) -> str | None:
        """The generated source of the whole-graph function, or None when the per-node
        interpreter runs this Model (`describe()` says why)."""
        return self._compiled.source if self._compiled is not None else None

    # ---- input checking ------------------------------------------------------------------
    def check_inputs(self, inputs: dict, specs: list | None = None) -> dict[str, np.ndarray]:
        """Validated, converted inputs (float32 floats, int64 integers). `specs` replaces the
        model's input specs (a Stream frees the time dim of inputs exported with a fixed one)."""
        if not isinstance(inputs, dict):
            raise InputError(f"model '{self.name}': inputs must be a dict of name -> array, "
                             f"got {type(inputs).__name__}")
        extra = [k for k in inputs if k not in self._input_index]
        if extra:
            raise InputError(f"model '{self.name}': unknown input(s) {extra}; expected "
                             f"{[s.name for s in self.inputs]}")
        env = self._known_call(inputs, specs)
        if env is not None:
            return env
        env = {}
        symbols: dict[str, tuple[int, str]] = {}
        for spec in (self.inputs if specs is None else specs):
            a = inputs.get(spec.name)
            if a is None:
                if spec.optional:
                    if specs is None and spec.is_float:   # a Stream carries its own state
                        self._warn_once(spec.name, f"model '{self.name}': input '{spec.name}' "
                                        f"(a recurrent initial state) not given: starting from "
                                        f"zeros")
                    continue
                raise InputError(f"model '{self.name}': missing input '{spec.name}' "
                                 f"(expected {spec.describe()})")
            env[spec.name] = self._check_one(spec, a, symbols)
        if self._input_checks:
            input_checks.check(self.graph, env)
        for sym, (want, node) in self._bound.items():
            got = symbols.get(sym)
            if got is not None and got[0] != want:
                raise InputError(f"model '{self.name}': input '{got[1]}': '{sym}' is {got[0]}, "
                                 f"but node '{node}' needs it to be {want} (its weights fix it)")
        self._memory.check_call(self.memory_limit, f"model '{self.name}'", env)
        self._remember_call(inputs, specs, env)
        return env

    def _call_key(self, inputs: dict, specs) -> tuple | None:
        """What the per-pattern checks depend on: the specs used, and each input's name, shape
        and dtype (None unless every input is an ndarray)."""
        key = [id(specs)]
        for name, a in inputs.items():
            if type(a) is not np.ndarray:
                return None
            key.append((name, a.shape, a.dtype))
        return tuple(key)

    def _known_call(self, inputs, specs) -> dict | None:
        """The env of a call whose inputs have the names, shapes and dtypes of a call that
        passed every check of `check_inputs` unchanged (ranks, fixed and shared dims, dims the
        weights fix, the memory budget and the warnings depend on nothing else): only the
        values are checked again (finiteness, the graph's input_checks). None: run the full
        checks. NOTE: ~1.5 us instead of ~9 us a call (silero one frame per push)."""
        if type(inputs) is not dict:
            return None
        key = self._call_key(inputs, specs)
        known = self._known_calls.get(key) if key is not None else None
        if known is None or known[0] is not specs:
            return None
        for name in known[1]:
            # a non-finite value: the full checks say which input
            if not all_finite(inputs[name].ravel()):
                return None
        env = dict(inputs)
        if self._input_checks:
            input_checks.check(self.graph, env)
        return env

    def _remember_call(self, inputs: dict, specs, env: dict) -> None:
        """After the full checks passed: remember the call's pattern when the inputs went
        through unchanged (converted dtypes and non-arrays are checked in full every time)."""
        if len(env) != len(inputs) or any(env.get(k) is not a for k, a in inputs.items()):
            return
        key = self._call_key(inputs, specs)
        if key is not None:
            if len(self._known_calls) >= _KNOWN_CALLS_MAX:
                self._known_calls.clear()
            # the specs object is kept in the value, so its id in the key stays its own; then
            # the float inputs whose values are checked on every call
            floats = tuple(k for k, a in inputs.items() if a.dtype.kind == "f") \
                if self.check_finite else ()
            self._known_calls[key] = (specs, floats)

    def _check_one(self, spec: InputSpec, a, symbols: dict) -> np.ndarray:
        if not isinstance(a, np.ndarray):
            a = np.asarray(a)
        where = f"model '{self.name}': input '{spec.name}'"
        if a.ndim != len(spec.shape):
            raise InputError(f"{where}: expected {spec.describe()}, got rank {a.ndim} "
                             f"shape {a.shape} {a.dtype}")
        for k, (want, got) in enumerate(zip(spec.shape, a.shape)):
            if isinstance(want, int):
                if want != got:
                    raise InputError(f"{where}: expected {spec.describe()}, got {a.shape} "
                                     f"{a.dtype} (dim {k} must be {want})")
            else:
                seen = symbols.setdefault(want, (got, spec.name))
                if seen[0] != got:
                    raise InputError(f"{where}: dim {k} ('{want}') is {got} but input "
                                     f"'{seen[1]}' has '{want}' = {seen[0]}")
        kind = a.dtype.kind
        if spec.is_float:
            if kind != _FLOAT_KINDS:
                raise InputError(f"{where}: expected {spec.describe()}, got dtype {a.dtype}")
            if a.dtype != np.float32:
                if a.dtype == np.float64:
                    self._warn_once("float64", f"{where}: float64 converted to float32 (the "
                                    f"runtime computes in float32)", stacklevel=5)
                a = a.astype(np.float32)
            if self.check_finite and not np.isfinite(a).all():
                bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
                raise InputError(f"{where}: {bad} non-finite value(s) (NaN or inf); build the "
                                 f"Model with check_finite=False to allow them")
        else:
            if kind not in ("b" if spec.dtype == "bool" else "iu"):    # a Loop's condition
                raise InputError(f"{where}: expected {spec.describe()}, got dtype {a.dtype}")
        return a

    def _warn_once(self, key: str, message: str, stacklevel: int = 4) -> None:
        if key not in self._warned:
            self._warned.add(key)
            import warnings
            warnings.warn(message + " (warned once per Model)", UserWarning, stacklevel=stacklevel)

    # ---- execution -----------------------------------------------------------------------
    def _execute(self, env: dict, state: dict | None = None, given=(),
                 windows: dict | None = None) -> dict:
        # NOTE: precomputed per-step names/constants: ~0.5 us a node less than building
        # sources per call (silero-vad runs 27 nodes a frame)
        get = env.get
        try:
            for kernel, names, consts, outs, rec, prep in self._flat_steps:
                ins = [c if n is None else get(n) for n, c in zip(names, consts)]
                if prep and any(n is not None and get(n) is None for n in names):
                    continue    # an initial state left out: its glue yields nothing
                if rec in self._rec_sizes:
                    _check_recurrent_ins(kernel.node, ins, self._rec_sizes[rec])
                st = state.get(rec) if rec is not None and state is not None else None
                if st is not None:
                    _feed_state(kernel.node, ins, st, given, self._prep.sources)
                if windows and kernel.node.name in windows:
                    res = windows[kernel.node.name].run(kernel, ins, state[kernel.node.name])
                else:
                    res = kernel(ins)
                if st is not None and kernel.node.op is Op.LOOP:
                    keep_loop_state(kernel.node, ins, res, st)
                elif st is not None:
                    for slot, arr in zip(("h", "c"), res[1:]):
                        st[slot] = arr
                for name, arr in zip(outs, res):
                    if name:
                        env[name] = arr
        except (ValueError, IndexError) as e:
            # NOTE: a graph may leave a dim symbolic that its weights fix (x (T, N, F) into an
            # LSTM whose w_x says F = 3): validation accepts it, and inputs that disagree
            # reach the kernel; say which node, never a bare NumPy traceback (found by fuzzing)
            node = kernel.node
            raise InputError(f"model '{self.name}': node '{node.name}' ({node.op.value}) cannot "
                             f"run on these inputs: {type(e).__name__}: {e}") from None
        return env

    def run(self, inputs: dict, delta=None) -> dict[str, np.ndarray]:
        """Run whole sequences: {input name: array} -> {output name: array}.
        delta: thresholds for delta execution of the recurrent nodes (θ, (θx, θh), or
        {node: θ or (θx, θh)}; see runtime/delta_runner.py); per-layer skip statistics of the
        call then land in `self.last_stats` (of the latest delta run in any thread)."""
        if delta is not None:
            return run_delta(self, self.check_inputs(inputs), delta)
        env = self.check_inputs(inputs)
        if self._compiled is not None and not self._left_out_prep(env):
            try:
                return self._compiled.run(env)
            except InputError as compiled_error:
                # NOTE: generated code raises constant messages; the interpreter names the
                # values (e.g. the lengths given), so a refused run is replayed there
                self._explain(env)
                raise compiled_error
        saved = self._pins.pin()
        try:
            env = self._execute(env)
        finally:
            self._pins.restore(saved)
        return {n: env[n] for n in self.output_names}

    def _left_out_prep(self, env: dict) -> bool:
        """An initial state computed by glue (StatePrep) is left out: the generated code
        would run that glue on an empty dummy, so such a call (or a stream's first push) runs
        on the interpreter, which skips the glue and starts from zeros."""
        return bool(self._prep.nodes) and any(x not in env for x in self._prep.inputs)

    def _explain(self, env: dict, *stream) -> None:
        """Run the interpreter on inputs the compiled function refused, for its message
        (stream: a copy of a Stream's state and the chunk)."""
        saved = self._pins.pin()
        try:
            self._execute(dict(env), *stream)
        finally:
            self._pins.restore(saved)

    def stream(self, time_axes: dict[str, int] | None = None, delta=None) -> "Stream":
        """A Stream over this model (one per thread). time_axes: {input: axis} when the
        time axis of an input cannot be inferred. delta: as for `run`; the stream then
        carries the delta state too and accumulates `stream.stats`. A Model built with
        delta kernels (`Model(graph, delta={...})`) streams with their thresholds the same way:
        a plain Stream would start each push from a fresh delta state."""
        if delta is None:
            delta = {s.node.name: s.kernel.theta for s in self.plan.steps
                     if is_delta_kernel(s.kernel)} or None
        if delta is not None:
            return DeltaStream(self, time_axes, delta)
        return Stream(self, time_axes)


class Stream:
    """Push chunks of a sequence; recurrent state is carried between pushes so that any
    chunking equals one full run. Not thread-safe: use one Stream per thread."""

    def __init__(self, model: Model, time_axes_: dict | None = None) -> None:
        self.model = model
        g = model.graph
        self.axes = time_axes(g, time_axes_)
        # NOTE: a model exported with a fixed sequence length still streams in chunks of any
        # size: the time dim of each streamed input is checked as a free symbol
        self.input_specs = [InputSpec(sp.name, sp.dtype, tuple(
            "T_chunk" if self.axes.get(sp.name) == k else d for k, d in enumerate(sp.shape)),
            sp.optional) for sp in model.inputs]
        self._rec = [n for n in g.nodes if n.op in RECURRENT]
        self._loops = [n for n in g.nodes if n.op is Op.LOOP]   # scans over time (loop_stream)
        self._windows = conv_windows(g, self.axes)
        # state slots computed by glue from state inputs (StatePrep): given in a push, such an
        # input restarts them (explicit wins; the generated step only knows direct inputs)
        src = model._prep.sources
        self._restarts = [(x, n.name, slot) for n in self._rec
                          for k, slot in ((2, "h"), (3, "c")) if k < len(n.inputs)
                          for x in sorted(src.get(n.inputs[k], ()))]
        self._state: dict[str, dict[str, np.ndarray]] = {}
        self._fast = _FastPath.build(model)
        self._flat = self._hv = self._cv = None
        # the generated step's buffers, planned on the first push and reused after it
        self._workspace = model._compiled.workspace() if model._compiled is not None else None
        self.reset()

    def reset(self) -> None:
        """Forget the carried state: the next push starts a new sequence."""
        self._state = {n.name: {} for n in self._rec + self._loops}
        self._state.update({name: {} for name in self._windows})
        self._ended: dict = {}      # rows whose mask has ended (input_checks.check_stream)

    @property
    def state(self) -> dict[str, dict[str, np.ndarray]]:
        """Carried state per recurrent node: {"h": y_h-shaped array, "c": y_c-shaped (LSTM)};
        empty dicts before the first push. Returns copies."""
        return {k: {s: a.copy() for s, a in v.items()} for k, v in self._state.items()}

    @state.setter
    def state(self, value: dict) -> None:
        g = self.model.graph
        new = {n.name: {} for n in self._rec + self._loops}
        new.update({name: {} for name in self._windows})
        if not isinstance(value, dict):
            raise InputError(f"stream state: expected a dict {{node: {{'h': array, 'c': array}}}}"
                             f" (as `stream.state` returns), got {type(value).__name__}")
        for name, slots in value.items():
            if name not in new:
                raise InputError(f"stream state: unknown recurrent node '{name}'; nodes: "
                                 f"{sorted(new)}")
            if not isinstance(slots, dict):
                raise InputError(f"stream state of '{name}': expected a dict of slot -> array, "
                                 f"got {type(slots).__name__}")
            node = g.node(name)
            for slot, arr in slots.items():
                if name in self._windows:
                    new[name][slot] = self._window_state(name, slot, arr)
                    continue
                if node.op is Op.LOOP:
                    new[name][slot] = check_loop_state(g, node, slot, arr)
                    continue
                if slot not in ("h", "c") or (slot == "c" and node.op not in _CELL_STATE):
                    raise InputError(f"stream state of '{name}': unknown slot '{slot}'")
                try:
                    raw = np.asarray(arr)
                except (ValueError, TypeError) as e:   # ragged lists and the like
                    raw = np.asarray(None)
                    arr = e
                if raw.dtype.kind not in "fiu":
                    raise InputError(f"stream state of '{name}'['{slot}']: expected a float "
                                     f"array, got {type(arr).__name__} {str(arr)[:40]!r}")
                arr = raw.astype(np.float32)
                want = _state_shape(g, node, slot)
                if arr.ndim != len(want) or any(isinstance(w, int) and w != a
                                        for w, a in zip(want, arr.shape)):
                    raise InputError(f"stream state of '{name}'['{slot}']: expected "
                                     f"{want}, got {arr.shape}")
                if self.model.check_finite and not np.isfinite(arr).all():
                    # the same NaN/inf policy as inputs: a poisoned state would make every
                    # later push return non-finite outputs without an error
                    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
                    raise InputError(f"stream state of '{name}'['{slot}']: {bad} non-finite "
                                     f"value(s) (NaN or inf); build the Model with "
                                     f"check_finite=False to allow them")
                new[name][slot] = np.array(arr, copy=True)
        self._state = new

    def _check_across_chunks(self, env: dict) -> None:
        """Input checks that span chunks (a mask's right padding): see input_checks."""
        if self.model._input_checks:
            input_checks.check_stream(self.model.graph, env, self._ended)

    def _window_state(self, name: str, slot: str, arr) -> np.ndarray:
        """A convolution's carried input window, checked ([N, C, <= (k-1)*dilation])."""
        win = self._windows[name]
        a = np.asarray(arr) if isinstance(arr, np.ndarray) else None
        if slot != WINDOW_SLOT or a is None or a.dtype.kind != "f" or a.ndim != 3 \
                or a.shape[1] != win.channels or a.shape[2] > max(win.width, win.left) \
                or not np.isfinite(a).all():
            raise InputError(f"stream state of '{name}': expected {{'{WINDOW_SLOT}': a finite "
                             f"float array [N, {win.channels}, <= {win.width}]}} (the input "
                             f"frames its convolution still needs), got '{slot}': "
                             f"{getattr(arr, 'shape', type(arr).__name__)}")
        return np.array(a, dtype=np.float32, copy=True)

    def push(self, chunk: dict) -> dict[str, np.ndarray]:
        """Run one chunk of every streamed input; returns the graph outputs for the chunk
        (time-carrying outputs hold the chunk's steps, final states the state after it)."""
        f = self._fast
        if f is not None and len(chunk) == 1:
            # lean path for short chunks of a one-node recurrent graph: one compiled call
            x = chunk.get(f.x_name)
            if type(x) is np.ndarray and x.dtype == _F32 and x.ndim == 3 \
                    and x.shape[2] == f.n_input and x.flags.c_contiguous and x.flags.writeable:
                if f.batch_first:
                    n, t = x.shape[0], x.shape[1]
                    ok = n == 1
                else:
                    t, n = x.shape[0], x.shape[1]
                    ok = True
                if ok and 0 < t * n < f.max_rows:
                    flat = self._flat_for(n)
                    y = np.empty((n, t, 1, f.n_out) if f.batch_first else (t, 1, n, f.n_out),
                                 dtype=np.float32)
                    if f.fn(x if not f.batch_first else x.reshape(t, 1, f.n_input),
                            f.wbuf, f.wxp, f.ip, f.fp, flat, y):
                        raise InputError(f"model '{self.model.name}': input '{f.x_name}': "
                                         f"non-finite value(s) (NaN or inf); build the Model "
                                         f"with check_finite=False to allow them")
                    out = {}
                    for name, kind in f.outputs:
                        out[name] = y if kind == 0 else (self._hv if kind == 1 else self._cv).copy()
                    return out
        m = self.model
        env = m.check_inputs(chunk, self.input_specs)
        self._check_across_chunks(env)
        for x, node, slot in self._restarts:
            if x in env:
                self._state[node].pop(slot, None)
        # NOTE: the generated step carries recurrent states only, not convolution windows
        if m._compiled is not None and not self._windows and not (
                m._left_out_prep(env) and not any(self._state.values())):
            try:
                return m._compiled.push(env, self._state, chunk, self._workspace)
            except InputError as compiled_error:
                # the interpreter's message names the values; it runs on a copy of the state
                # (the compiled step replaces the state only when it succeeds)
                m._explain(env, {k: dict(v) for k, v in self._state.items()}, chunk)
                raise compiled_error
        saved = m._pins.pin()
        try:
            env = m._execute(env, self._state, chunk, self._windows)
        finally:
            m._pins.restore(saved)
        return {n: env[n] for n in m.output_names}

    def _flat_for(self, n_batch: int) -> np.ndarray:
        """The fast path's state buffer for this batch, holding the carried state."""
        f = self._fast
        st = self._state[f.node_name]
        if self._flat is not None and st.get("h") is self._hv and self._hv.shape[f.batch_axis] \
                == n_batch:
            return self._flat
        if "h" in st and st["h"].shape[f.batch_axis] != n_batch:
            raise InputError(f"stream: node '{f.node_name}' carries state for batch "
                             f"{st['h'].shape[f.batch_axis]}, but this chunk has batch "
                             f"{n_batch}; call reset() to change batch")
        flat = np.zeros(f.kernel.state_size(n_batch), dtype=np.float32)

        def lay(size: int) -> tuple:
            return (n_batch, 1, size) if f.batch_first else (1, n_batch, size)
        hv = flat[:n_batch * f.n_out].reshape(lay(f.n_out))
        if "h" in st:
            hv[...] = st["h"]
        st["h"] = hv
        cv = None
        if f.lstm:
            cv = flat[n_batch * f.n_out:].reshape(lay(f.hidden))
            if "c" in st:
                cv[...] = st["c"]
            st["c"] = cv
        self._flat, self._hv, self._cv = flat, hv, cv
        return flat


class DeltaStream(Stream):
    """A Stream whose recurrent nodes run with delta: x̂, ĥ and the memories are carried
    between pushes (so any chunking equals one full delta run) and are part of `state`
    (slots "x_hat", "h_hat", "m_x", "m_h", time-major [D, N, *]). `stats` accumulates since
    the last reset()."""

    def __init__(self, model, time_axes_: dict | None, delta) -> None:
        self.thresholds = parse_thresholds(model, delta)
        self._runner = DeltaRunner.of(model)
        super().__init__(model, time_axes_)
        if self._windows:
            raise GraphError(f"model '{model.name}': a delta stream does not carry the input "
                             f"windows of convolutions over time (nodes "
                             f"{sorted(self._windows)}); stream without delta")

    def reset(self) -> None:
        super().reset()
        self._dstates: dict[str, dict] = {}
        self.stats = DeltaStats()

    @property
    def state(self) -> dict[str, dict[str, np.ndarray]]:
        out = Stream.state.fget(self)
        for name, ds in self._dstates.items():
            out.setdefault(name, {}).update({k: a.copy() for k, a in ds.items()})
        return out

    @state.setter
    def state(self, value: dict) -> None:
        plain = {k: {s: a for s, a in v.items() if s not in DSTATE_SLOTS}
                 for k, v in value.items()}
        Stream.state.fset(self, plain)
        dstates = {}
        for name, slots in value.items():
            ds = {s: np.array(a, dtype=np.float32, copy=True) for s, a in slots.items()
                  if s in DSTATE_SLOTS}
            if ds and set(ds) != set(DSTATE_SLOTS):
                raise InputError(f"stream state of '{name}': delta slots must come together "
                                 f"({list(DSTATE_SLOTS)}), got {sorted(ds)}")
            if ds:
                dstates[name] = ds
        self._dstates = dstates

    def push(self, chunk: dict) -> dict[str, np.ndarray]:
        m = self.model
        env = m.check_inputs(chunk, self.input_specs)
        self._check_across_chunks(env)
        for x, node, slot in self._restarts:
            if x in env:
                self._state[node].pop(slot, None)
        out = delta_codegen.push(self, env, chunk)      # one generated call, if it lowers
        if out is not None:
            return out
        env = self._runner.execute(env, self.thresholds, self.stats, self._state, chunk,
                                   self._dstates)
        return {n: env[n] for n in m.output_names}


@dataclass
class _FastPath:
    """What the lean push path needs, for graphs that are one forward recurrent node fed
    by a graph input (plus optional initial-state inputs) without sequence lengths."""
    node_name: str
    kernel: object
    fn: object
    wbuf: np.ndarray
    wxp: np.ndarray
    ip: np.ndarray
    fp: np.ndarray
    x_name: str
    n_input: int
    n_out: int
    hidden: int
    lstm: bool
    batch_first: bool
    batch_axis: int
    max_rows: int
    outputs: list

    @classmethod
    def build(cls, model: Model) -> "_FastPath | None":
        g = model.graph
        if len(g.nodes) != 1 or g.nodes[0].op not in RECURRENT:
            return None
        node = g.nodes[0]
        kernel = model.plan.steps[0].kernel
        a = node.attrs
        x_name = node.inputs[0]
        spec = model._input_index.get(x_name)
        from edgeseq.runtime.recurrent import GEMM_MIN_ROWS, GruKernel, LstmKernel, RnnKernel
        # NOTE: exact types only: a subclass (e.g. compressed weights) may not keep the
        # float32 matrices the packed entry reads
        if spec is None or a["direction"] != "forward" \
                or type(kernel) not in (LstmKernel, GruKernel, RnnKernel) \
                or (len(node.inputs) > 1 and node.inputs[1]) \
                or any(isinstance(d, int) for d in spec.shape[:2]):
            return None
        kinds = {node.output("y"): 0, node.output("y_h"): 1}
        if node.op.value == "LSTM":
            kinds[node.output("y_c")] = 2
        outs = [(v.name, kinds.get(v.name)) for v in g.outputs]
        if any(k is None for _, k in outs):
            return None
        fn, wbuf, wxp, ip, fp = kernel.stream_entry(model.check_finite)
        bf = a["batch_first"]
        return cls(node.name, kernel, fn, wbuf, wxp, ip, fp, x_name, spec.shape[2],
                   kernel.out_size, kernel.hidden, node.op.value == "LSTM", bf, 0 if bf else 1,
                   GEMM_MIN_ROWS, outs)


def _recurrent_sizes(graph: Graph, node) -> tuple:
    """(input size, state size, cell size) that a recurrent node's kernel reads."""
    a = node.attrs
    h = a.get("hidden_size", 0)
    return (int(graph.weight(node, "w_x").shape[-1]), a.get("proj_size", 0) or h, h)


def _check_recurrent_ins(node, ins: list, sizes: tuple) -> None:
    for k, want in ((0, sizes[0]), (2, sizes[1]), (3, sizes[2])):
        a = ins[k] if k < len(ins) else None
        if a is not None and a.shape[-1] != want:
            raise InputError(f"node '{node.name}' ({node.op.value}): its input "
                             f"'{node.inputs[k]}' has last dim {a.shape[-1]}, the weights need "
                             f"{want} (the graph leaves that dim symbolic)")


_CELL_STATE = (Op.LSTM, Op.CONV_LSTM)     # nodes that carry a cell state "c" beside "h"


def _state_shape(graph: Graph, node, slot: str) -> tuple:
    a = node.attrs
    if node.op is Op.CONV_LSTM:       # feature maps [D, N, H, *L'] (batch_first [N, D, H, *L'])
        from edgeseq.shapes import infer_node
        shape = infer_node(graph, node, [graph.value(node.inputs[0])])[1].shape
        b = 0 if a["batch_first"] else 1
        return shape[:b] + ("N",) + shape[b + 1:]
    d = 2 if a["direction"] == "bidirectional" else 1
    size = a["hidden_size"] if slot == "c" else (a.get("proj_size", 0) or a["hidden_size"])
    return ("N", d, size) if a["batch_first"] else (d, "N", size)


def load(path: str | Path, **options) -> Model:
    """Load an .eseq artifact (memory-mapped) and compile it."""
    from edgeseq.artifact import load as load_artifact
    from edgeseq.errors import EdgeseqError
    graph = load_artifact(path)
    try:
        return Model(graph, **options)
    except EdgeseqError as e:     # name the file: a memory or plan error comes from its content
        raise type(e)(f"{path}: {e}") from None
