"""Fuzz targets for edgeseq's own formats: the artifact (raw bytes and its safetensors header),
the graph JSON inside it (structure-aware, re-sealed so the checksum passes), .npy inputs,
and command lines. Registered into tools/fuzz.py's registry."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from hypothesis import strategies as st

from fuzz import target

# a run of a loaded, changed graph gets this budget (the worker's RLIMIT_AS is the backstop)
RUN_MEMORY = 256 * 2**20
# EDGESEQ_FUZZ_RUN=0 (the `make test` slice): build the Model of a changed graph (limits,
# memory estimate, plan) but do not run it, so no case waits for a Numba compile
RUN = os.environ.get("EDGESEQ_FUZZ_RUN", "1") != "0"


def _no_codegen() -> dict:
    """Model option that keeps the whole-graph compiler off, if this runtime has one: every
    mutated graph would otherwise be a fresh multi-second compile (robustness, not speed,
    is under test here)."""
    import inspect
    from edgeseq.runtime import Model
    return {"codegen": False} if "codegen" in inspect.signature(Model).parameters else {}
INTS = [0, 1, -1, 2, 3, -2, -5, 7, 255, 2**31 - 1, 2**31, -2**31, 2**32, 10**12, 2**63 - 1,
        -2**63, 2**64]
STRINGS = ["", "x", "T", "N", "y", "float32", "float16", "int8", "int64", "LSTM", "GRU",
           "Reshape", "MatMul", "Pad", "../../etc/passwd", "a/b", "forward", "reverse",
           "bidirectional", "tanh", "relu", "w_x", "w_h", "__metadata__", "NaN", "\u00e9\u2603"]
DEEP = [10, 60, 63, 64, 65, 1000, 200_000]
unit = st.floats(0, 1, exclude_max=True)
leaf = st.one_of(st.sampled_from(INTS), st.integers(-10, 10),
                 st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(STRINGS),
                 st.text(max_size=8), st.none(), st.booleans())
json_value = st.recursive(leaf, lambda ch: st.one_of(st.lists(ch, max_size=4),
                                                      st.dictionaries(st.text(max_size=6), ch,
                                                                      max_size=3)),
                          max_leaves=8)


# ---- seeds --------------------------------------------------------------------------------
@dataclass
class Seed:
    path: Path
    raw: bytes
    graph_text: str
    tensors: dict[str, np.ndarray]
    graph_json: dict = field(default_factory=dict)


@dataclass
class Ctx:
    work: Path
    seeds: list[Seed]
    extra: dict = field(default_factory=dict)


def seed_graphs():
    """Small graphs that cover recurrent and glue ops, int8/fp16 weights and most attributes."""
    from edgeseq.graph import Node, Value
    from edgeseq.ops import Op
    from edgeseq.testing import gru_graph, lstm_graph, rnn_graph
    rng = np.random.default_rng(0)
    lstm = lstm_graph(rng, 3, 4, proj_size=2, peephole=True, cell_clip=3.0, layer_norm=True,
                      seq_lens=True, initial_state=True)
    gru = gru_graph(rng, 3, 4, linear_before_reset=True, direction="bidirectional")
    for k in ("gru.w_x", "gru.w_h"):
        gru.constants[k] = gru.constants[k].astype(np.float16)
    glue = lstm_graph(rng, 3, 4)
    glue.nodes += [Node("tr", Op.TRANSPOSE, ["y"], ["yt"], {"perm": (0, 2, 1, 3)}),
                   Node("rs", Op.RESHAPE, ["yt"], ["feat"], {"shape": (0, 0, -1)}),
                   Node("fc", Op.MATMUL, ["feat", "fc.w"], ["logits0"]),
                   Node("bias", Op.ADD, ["logits0", "fc.b"], ["logits"]),
                   Node("pad", Op.PAD, ["logits"], ["padded"], {"pads": (0, 0, 1, 0, 0, 1)}),
                   Node("sm", Op.SOFTMAX, ["padded"], ["probs"], {"axis": -1})]
    glue.constants["fc.w"] = rng.standard_normal((4, 3)).astype(np.float32)
    glue.constants["fc.b"] = rng.standard_normal(3).astype(np.float32)
    glue.outputs = [Value("probs", "float32", ())]
    rnn = rnn_graph(rng, 2, 3, activations=["relu"])
    return [lstm.validate(), gru.validate(), glue.validate(), rnn.validate()]


def setup_artifacts(work: Path) -> Ctx:
    from edgeseq import artifact
    seeds = []
    for k, g in enumerate(seed_graphs()):
        path = artifact.save(g, work / f"seed{k}.eseq")
        raw = path.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        text = json.loads(raw[8:8 + n])["__metadata__"]["edgeseq.graph"]
        loaded = artifact.load(path)
        tensors = {name: np.array(c) for name, c in loaded.constants.items()}
        seeds.append(Seed(path, raw, text, tensors, json.loads(text)))
        if RUN:
            run_graph(loaded)    # compile the kernels now, outside any case's time limit
    return Ctx(work, seeds)


def same_graph(a, b) -> bool:
    if a.to_json() != b.to_json() or set(a.constants) != set(b.constants):
        return False
    return all(a.constants[k].dtype == b.constants[k].dtype
               and a.constants[k].tobytes() == b.constants[k].tobytes() for k in a.constants)


def run_graph(graph) -> str:
    """Build a runtime Model of a loaded graph and run it on small inputs."""
    from edgeseq.runtime import Model
    rng = np.random.default_rng(0)
    feeds = {}
    for v in graph.inputs:
        shape = tuple(2 if isinstance(d, str) else d for d in v.shape)
        if int(np.prod(shape, dtype=object)) > 10**6:
            return "loaded (inputs too large to run)"
        if v.dtype.startswith("float"):
            feeds[v.name] = rng.standard_normal(shape).astype(v.dtype)
        else:
            feeds[v.name] = np.full(shape, 2, dtype=v.dtype)
    model = Model(graph, memory_limit=RUN_MEMORY, warmup=False, **_no_codegen())
    if not RUN:
        return "built"
    model.run(feeds)
    return "ran"


def load_and_classify(path: Path, seed: Seed) -> str:
    from edgeseq import artifact
    from edgeseq.errors import EdgeseqError
    graph = artifact.load(path)
    if same_graph(graph, artifact.load(seed.path)):
        return "identical"
    try:
        return "loaded+" + run_graph(graph)
    except EdgeseqError:
        return "loaded+refused-at-run"


# ---- artifact bytes ------------------------------------------------------------------------
byte_mutation = st.one_of(
    st.tuples(st.just("flip"), unit, st.integers(0, 7)),
    st.tuples(st.just("set"), unit, st.integers(0, 255)),
    st.tuples(st.just("insert"), unit, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), unit, st.integers(1, 64)),
    st.tuples(st.just("truncate"), unit),
    st.tuples(st.just("length"), st.sampled_from([0, 1, 7, 8, 2**31, 2**63, 16 * 2**20 + 8])),
    st.tuples(st.just("header"), unit, json_value),
)


def mutate_bytes(raw: bytes, muts, header_only: bool) -> bytes:
    b = bytearray(raw)
    for m in muts:
        kind = m[0]
        n_header = 8 + int.from_bytes(raw[:8], "little")
        span = min(n_header, len(b)) if header_only else len(b)
        if kind == "length":
            b[:8] = (m[1] % 2**64).to_bytes(8, "little")
            continue
        if kind == "header":
            b = bytearray(edit_header(bytes(b), m[1], m[2]))
            continue
        if b:
            edit_bytes(b, m, span)
    return bytes(b)


def edit_bytes(b: bytearray, m: tuple, span: int) -> None:
    """Apply one flip/set/insert/delete/truncate at a position in the first `span` bytes."""
    kind, pos = m[0], int(m[1] * span) if span else 0
    if kind == "flip":
        b[pos] ^= 1 << m[2]
    elif kind == "set":
        b[pos] = m[2]
    elif kind == "insert":
        b[pos:pos] = m[2]
    elif kind == "delete":
        del b[pos:pos + m[2]]
    elif kind == "truncate":
        del b[pos:]


def edit_header(raw: bytes, where: float, value) -> bytes:
    """Replace one value of the safetensors header's tensor table (the checksum does not
    cover it) and rewrite the header length."""
    n = int.from_bytes(raw[:8], "little")
    try:
        header = json.loads(raw[8:8 + n])
    except ValueError:
        return raw
    paths = [p for p in json_paths(header) if p[0] != "__metadata__" or len(p) == 2]
    if not paths:
        return raw
    set_path(header, paths[int(where * len(paths))], value)
    text = json.dumps(header, allow_nan=True).encode()
    return len(text).to_bytes(8, "little") + text + raw[8 + n:]


@target("artifact", slice=40, setup=setup_artifacts,
        cases=st.tuples(st.integers(0, 3), st.booleans(),
                        st.lists(byte_mutation, min_size=1, max_size=4)))
def fuzz_artifact(case, ctx: Ctx) -> str:
    k, header_only, muts = case
    seed = ctx.seeds[k]
    path = ctx.work / "case.eseq"
    path.write_bytes(mutate_bytes(seed.raw, muts, header_only))
    return load_and_classify(path, seed)


# ---- graph JSON (structure-aware, sealed) ---------------------------------------------------
def json_paths(obj, prefix=()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += json_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += json_paths(v, prefix + (i,))
    return out


def get_path(obj, path):
    for p in path:
        obj = obj[p]
    return obj


def set_path(obj, path, value) -> None:
    get_path(obj, path[:-1])[path[-1]] = value


graph_mutation = st.one_of(
    st.tuples(st.just("replace"), unit, json_value),
    st.tuples(st.just("delete"), unit),
    st.tuples(st.just("duplicate"), unit),
    st.tuples(st.just("swap"), unit, unit),
    st.tuples(st.just("op"), unit, st.sampled_from(
        ["LSTM", "GRU", "RNN", "MatMul", "Gemm", "Add", "Mul", "Reshape", "Transpose", "Pad",
         "Concat", "Split", "Slice", "Gather", "Conv1d", "Softmax", "Identity", "Relu", "Nope"])),
    st.tuples(st.just("number"), unit, st.sampled_from(INTS + [0.5, -0.0, float("nan"),
                                                                float("inf")])),
    st.tuples(st.just("rename"), unit, unit),
    st.tuples(st.just("deep"), unit, st.sampled_from(DEEP)),
    st.tuples(st.just("tensor"), unit, st.lists(st.sampled_from([0, 1, 2, 3, 4, 8, 12, 16, 2**31,
                                                                 10**12]), max_size=4)),
)


@dataclass
class GraphEdit:
    """What one structure-aware edit works on: the graph JSON, the tensors, every JSON path,
    the path the edit's first number picked, and the deep-nesting placeholders so far."""
    g: dict
    tensors: dict
    paths: list
    pick: tuple
    deep: list


GRAPH_EDITS: dict[str, Callable[[GraphEdit, tuple], None]] = {}


def graph_edit(kind: str):
    def deco(fn):
        GRAPH_EDITS[kind] = fn
        return fn
    return deco


def _nth(items: list, u: float):
    return items[int(u * len(items))]


@graph_edit("replace")
def _replace(e: GraphEdit, m) -> None:
    # NOTE: a copy: later edits change the graph in place, and the case must stay as drawn
    set_path(e.g, e.pick, copy.deepcopy(m[2]))


@graph_edit("delete")
def _delete(e: GraphEdit, m) -> None:
    del get_path(e.g, e.pick[:-1])[e.pick[-1]]


@graph_edit("duplicate")
def _duplicate(e: GraphEdit, m) -> None:
    lists = [p for p in e.paths if isinstance(get_path(e.g, p), list) and get_path(e.g, p)]
    if lists:
        lst = get_path(e.g, _nth(lists, m[1]))
        lst.append(json.loads(json.dumps(lst[0])))


@graph_edit("swap")
def _swap(e: GraphEdit, m) -> None:
    other = _nth(e.paths, m[2])
    a, b = get_path(e.g, e.pick), get_path(e.g, other)
    try:
        set_path(e.g, e.pick, json.loads(json.dumps(b)))
        set_path(e.g, other, json.loads(json.dumps(a)))
    except (KeyError, IndexError, TypeError):
        pass           # one path was inside the other


@graph_edit("op")
def _op(e: GraphEdit, m) -> None:
    nodes = e.g.get("nodes")
    node = _nth(nodes, m[1]) if isinstance(nodes, list) and nodes else None
    if isinstance(node, dict):
        node["op"] = m[2]


@graph_edit("number")
def _number(e: GraphEdit, m) -> None:
    nums = [p for p in e.paths if isinstance(get_path(e.g, p), (int, float))
            and not isinstance(get_path(e.g, p), bool)]
    if nums:
        set_path(e.g, _nth(nums, m[1]), m[2])


@graph_edit("rename")
def _rename(e: GraphEdit, m) -> None:
    names = [p for p in e.paths if isinstance(get_path(e.g, p), str)]
    if names:
        set_path(e.g, _nth(names, m[1]), get_path(e.g, _nth(names, m[2])))


@graph_edit("deep")
def _deep(e: GraphEdit, m) -> None:
    set_path(e.g, e.pick, f"__DEEP{len(e.deep)}__")
    e.deep.append(m[2])


@graph_edit("tensor")
def _tensor(e: GraphEdit, m) -> None:
    """Reshape a tensor (same bytes), or replace it by zeros of a new shape: zero bytes with
    dims up to 2^31-1, or up to 1e5 elements; the constant table follows."""
    name = _nth(sorted(e.tensors), m[1])
    shape = tuple(m[2])
    old = e.tensors[name]
    size = int(np.prod(shape, dtype=object))
    if size == old.size:
        new = old.reshape(shape)
    elif (size == 0 and all(d <= 2**31 - 1 for d in shape)) or 0 < size <= 10**5:
        new = np.zeros(shape, old.dtype)
    else:
        return
    e.tensors[name] = new
    consts = e.g.get("constants")
    if isinstance(consts, dict):
        consts[name] = {"dtype": str(new.dtype), "shape": list(shape)}


def mutate_graph(seed: Seed, muts) -> tuple[str, dict]:
    """The seed's graph JSON and tensors with the edits applied; deep nesting is spliced
    into the text (json.dumps itself would recurse)."""
    g = json.loads(seed.graph_text)
    tensors = dict(seed.tensors)
    deep: list = []
    for m in muts:
        paths = json_paths(g)
        if paths:
            GRAPH_EDITS[m[0]](GraphEdit(g, tensors, paths, _nth(paths, m[1]), deep), m)
    text = json.dumps(g, allow_nan=True, separators=(",", ":"))
    for i, n in enumerate(deep):
        text = text.replace(f'"__DEEP{i}__"', "[" * n + "]" * n)
    return text, tensors


@target("graph-json", slice=40, setup=setup_artifacts,
        cases=st.tuples(st.integers(0, 3), st.lists(graph_mutation, min_size=1, max_size=3)))
def fuzz_graph_json(case, ctx: Ctx) -> str:
    from edgeseq import artifact
    k, muts = case
    seed = ctx.seeds[k]
    text, tensors = mutate_graph(seed, muts)
    path = ctx.work / "case.eseq"
    artifact.write_raw(path, text, tensors)
    return load_and_classify(path, seed)


# ---- .npy inputs -----------------------------------------------------------------------------
def setup_npy(work: Path) -> Ctx:
    from edgeseq.runtime import Model
    from edgeseq.testing import gru_graph
    arrays = [np.arange(12, dtype=np.float32).reshape(4, 1, 3),
              np.asfortranarray(np.ones((4, 1, 3))), np.arange(5, dtype=np.int64),
              np.float32(1.5), np.zeros((0, 1, 3), np.float16),
              np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
              np.array(["ab", "cd"]), np.array([1 + 2j])]
    raws = []
    for a in arrays:
        buf = io.BytesIO()
        np.save(buf, a)
        raws.append(buf.getvalue())
    buf = io.BytesIO()
    np.save(buf, np.array([{"pickled": 1}], dtype=object), allow_pickle=True)
    raws.append(buf.getvalue())
    model = Model(gru_graph(np.random.default_rng(0), 3, 4), warmup=RUN)
    return Ctx(work, [], {"raws": raws, "model": model})


@target("npy", slice=40, setup=setup_npy,
        cases=st.tuples(st.integers(0, 8), st.booleans(),
                        st.lists(byte_mutation.filter(lambda m: m[0] not in ("header",
                                                                              "length")),
                                 max_size=4)))
def fuzz_npy(case, ctx: Ctx) -> str:
    from edgeseq.files import load_npy
    k, header_only, muts = case
    raw = ctx.extra["raws"][k]
    b = bytearray(raw)
    for m in muts:    # the .npy header is the first 128 bytes or so
        if not b:
            break
        edit_bytes(b, m, min(len(b), 128) if header_only else len(b))
    path = ctx.work / "case.npy"
    path.write_bytes(bytes(b))
    a = load_npy(path, "--input x")
    if a.dtype.hasobject:
        raise AssertionError(f"object array loaded: {a.dtype}")
    model = ctx.extra["model"]
    if not RUN:
        model.check_inputs({"x": a})
        return "accepted"
    model.run({"x": a})
    return "ran"


# ---- command lines ---------------------------------------------------------------------------
def setup_cli(work: Path) -> Ctx:
    import edgeseq
    from edgeseq import artifact
    from edgeseq.testing import gru_graph
    g = gru_graph(np.random.default_rng(0), 3, 4)
    artifact.save(g, work / "good.eseq")
    (work / "junk.eseq").write_bytes(b"\x00" * 40)
    (work / "empty.eseq").write_bytes(b"")
    (work / "adir.eseq").mkdir()
    os.mkfifo(work / "fifo.eseq")
    os.mkfifo(work / "fifo.npy")
    np.save(work / "x.npy", np.zeros((2, 1, 3), np.float32))
    np.save(work / "x64.npy", np.zeros((2, 1, 3)))
    np.save(work / "xnan.npy", np.full((2, 1, 3), np.nan, np.float32))
    np.save(work / "wrong.npy", np.zeros((5,), np.int8))
    np.save(work / "pickled.npy", np.array([{}], dtype=object), allow_pickle=True)
    (work / "model.onnx").write_bytes(b"not onnx")
    demo = Path(edgeseq.__file__).parent / "data" / "demo_classifier.onnx"
    os.chdir(work)
    return Ctx(work, [], {"demo": str(demo)})


PATHS = ["good.eseq", "junk.eseq", "empty.eseq", "adir.eseq", "fifo.eseq", "missing.eseq",
         "x.npy", "model.onnx", "DEMO", "", "-", ".", "good.eseq/", "a b", "\u2603.eseq"]
NPYS = ["x.npy", "x64.npy", "xnan.npy", "wrong.npy", "pickled.npy", "fifo.npy", "missing.npy",
        "good.eseq", "adir.eseq", ""]
VALUES = ["0", "1", "-1", "0.05", "0.1,0.2", "nan", "inf", "1e400", "", "x", "1,2,3", "a,b",
          "1x2", "=", "0x10"]
NAMES = ["x", "y", "h", "", "x=y", "\u00e9", "gru"]


def argv_strategy():
    text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                   max_size=10)
    path = st.one_of(st.sampled_from(PATHS), text)
    npy = st.one_of(st.sampled_from(NPYS), text)
    spec = st.one_of(st.builds(lambda n, p: f"{n}={p}", st.sampled_from(NAMES), npy), text)
    value_spec = st.one_of(st.builds(lambda n, v: f"{n}={v}", st.sampled_from(NAMES),
                                     st.one_of(st.sampled_from(VALUES), npy)), text)
    out_dir = st.sampled_from(["out", "out/sub", "good.eseq", "adir.eseq", "fifo.eseq", ""])

    def flags(pairs):
        return st.lists(st.one_of(*pairs), max_size=4).map(lambda xs: [a for x in xs for a in x])
    run = st.tuples(st.just(["run"]), path.map(lambda p: [p]), flags([
        st.tuples(st.just("--input"), spec), st.tuples(st.just("--output-dir"), out_dir),
        st.tuples(st.just("--engine"), st.sampled_from(["auto", "runtime", "reference", "x"])),
        st.tuples(st.just("--delta"), st.sampled_from(VALUES))]))
    inspect = st.tuples(st.just(["inspect"]), path.map(lambda p: [p]),
                        flags([st.tuples(st.just("--json"))]))
    convert = st.tuples(st.just(["convert"]), path.map(lambda p: [p]), flags([
        st.tuples(st.just("-o"), st.sampled_from(["o.eseq", "adir.eseq", "fifo.eseq", "",
                                                   "new/dir/o.eseq"])),
        st.tuples(st.just("--fix"), value_spec), st.tuples(st.just("--shape"), value_spec),
        st.tuples(st.just("--weights"), st.sampled_from(["int8", "fp16", "x"]))]))
    compare = st.tuples(st.just(["compare"]), path.map(lambda p: [p]), flags([
        st.tuples(st.just("--random")), st.tuples(st.just("--input"), spec),
        st.tuples(st.just("--dim"), st.sampled_from(VALUES))]))
    noise = st.lists(st.one_of(text, st.sampled_from(["--debug", "--version", "-h", "--"])),
                     max_size=2)
    return st.tuples(st.one_of(run, inspect, convert, compare), noise).map(
        lambda t: [a for part in t[0] for a in part] + t[1])


@target("cli", slice=20, setup=setup_cli, cases=argv_strategy())
def fuzz_cli(argv, ctx: Ctx) -> str:
    from edgeseq.cli import main
    # --debug re-raises on purpose, so it is left out
    argv = [ctx.extra["demo"] if a == "DEMO" else a for a in argv if a != "--debug"]
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    except SystemExit as e:          # argparse: usage errors, --help, --version
        rc = e.code if isinstance(e.code, int) else 2
    if rc not in (0, 1, 2):
        raise AssertionError(f"exit status {rc}")
    if rc == 2 and "Traceback" in err.getvalue():
        raise AssertionError("traceback on stderr")
    return f"exit {rc}"
