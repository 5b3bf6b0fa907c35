"""Fuzz the converters with damaged model files: ONNX protobuf fields, TFLite flatbuffer
fields and .pt2 archives (JSON program, payload configs, records, planted pickles).

    python tools/fuzz_converters.py onnx --cases 10000 [--seed 0] [--batch 200] [--jobs 1]
    python tools/fuzz_converters.py tflite|pt2 ...       (same options)

Each case is one deterministic mutation of a seed file (seed, index -> the same bytes), fed
to the converter in a child process: cases run in batches of `--batch` per child (start-up
costs seconds), each child under an address-space limit (--memory-mb above what its imports
take) and each case under a wall-clock limit (--timeout). A child that dies or stops
answering marks its current case as a crash or a hang and the batch resumes after it.

Outcomes per case:
  converted        a valid Graph came back
  refused:<Error>  an EdgeseqError whose message names the file   (the wanted outcome)
  unnamed:<Error>  an EdgeseqError that does not name the file    (a defect)
  raw:<Exception>  any other exception, incl. MemoryError         (a defect)
  nonfinite        converted, but the reference run gives NaN/inf where the framework's own
                   runtime is finite (ONNX with --differential)   (a defect)
  nan-in-file      as nonfinite, but the damaged file itself holds NaN weights  (not a defect)
  ort-hides-nan    as nonfinite, but onnxruntime's own intermediate values hold NaN (its
                   LSTM's clamped sigmoid/tanh turn NaN into finite numbers): edgeseq's
                   NaN is the IEEE result                         (not a defect)
  executed         a planted payload ran (.pt2)                   (a defect)
  hang, crash      the child exceeded the time limit or died      (defects)

The summary is printed as one JSON object (outcome counts and the first example of each
defect). A short deterministic slice runs in the test suite (tests/unit/test_hostile_converters.py).
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import os
import random
import resource
import selectors
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
DEFECTS = ("unnamed", "raw", "nonfinite", "executed", "hang", "crash")

# Values a damaged field takes: the edges where readers go wrong.
INTS = (0, 1, -1, 2, 3, 7, 255, 256, 65535, 2**31 - 1, -2**31, 2**32, 2**63 - 1, -2**63)
FLOATS = (0.0, -0.0, 1.0, -1.0, 1e-45, 3.4e38, -3.4e38, 1e300, float("inf"), float("-inf"),
          float("nan"))


# --- generic helpers ------------------------------------------------------------------
def flip_bytes(rng: random.Random, data: bytes, n: int = 4) -> bytes:
    """`data` with a few bytes overwritten, truncated or a slice duplicated."""
    b = bytearray(data)
    how = rng.random()
    if how < 0.15 and len(b) > 8:
        return bytes(b[:rng.randrange(1, len(b))])
    if how < 0.25 and len(b) > 8:
        i = rng.randrange(len(b))
        j = min(len(b), i + rng.randrange(1, 64))
        return bytes(b[:j] + b[i:j] + b[j:])
    for _ in range(rng.randint(1, n)):
        i = rng.randrange(len(b))
        b[i] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
    return bytes(b)


def mutate_number(rng: random.Random, v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, float):
        return rng.choice(FLOATS + (v * 1e30, -v))
    return rng.choice(INTS + (v + 1, v - 1, -v, v * 1000003))


# --- ONNX: protobuf fields ------------------------------------------------------------
def _proto_slots(msg, out: list, depth: int = 0) -> None:
    """Every (message, field, index) below `msg` (index None: the field itself)."""
    from google.protobuf.descriptor import FieldDescriptor as F
    if depth > 12:
        return
    for fd, val in msg.ListFields():
        repeated = fd.is_repeated
        out.append((msg, fd, None))
        if fd.type == F.TYPE_MESSAGE:
            for k, sub in enumerate(val if repeated else [val]):
                if repeated:
                    out.append((msg, fd, k))
                _proto_slots(sub, out, depth + 1)
        elif repeated:
            out.extend((msg, fd, k) for k in range(min(len(val), 8)))


def _mutate_proto_field(rng: random.Random, msg, fd, k, names: list[str]) -> None:
    from google.protobuf.descriptor import FieldDescriptor as F
    repeated = fd.is_repeated
    if k is None:                       # the whole field
        if repeated and len(getattr(msg, fd.name)) and rng.random() < 0.5:
            rep = getattr(msg, fd.name)
            if rng.random() < 0.5:
                del rep[rng.randrange(len(rep))]
            elif fd.type == F.TYPE_MESSAGE:
                rep.add().CopyFrom(rep[rng.randrange(len(rep))])
            else:
                rep.append(rep[rng.randrange(len(rep))])
        else:
            msg.ClearField(fd.name)
        return
    if fd.type == F.TYPE_MESSAGE:
        sub = getattr(msg, fd.name)[k]
        sub.Clear() if rng.random() < 0.5 else getattr(msg, fd.name).__delitem__(k)
        return
    rep = getattr(msg, fd.name)
    old = rep[k] if repeated else getattr(msg, fd.name)
    if fd.type == F.TYPE_STRING:
        new = rng.choice(names + ["", "x" * 300, "\u00e9\u0000", old + "_"]) if names else ""
    elif fd.type == F.TYPE_BYTES:
        new = flip_bytes(rng, old) if old else bytes(rng.randrange(1, 64))
    elif fd.type == F.TYPE_ENUM:
        new = rng.choice([v.number for v in fd.enum_type.values] + [0, 99])
    else:
        new = mutate_number(rng, old)
    try:
        if repeated:
            rep[k] = new
        else:
            setattr(msg, fd.name, new)
    except (ValueError, TypeError):     # out of the field's range: clamp by clearing
        if not repeated:
            msg.ClearField(fd.name)


def onnx_mutate(rng: random.Random, seed: bytes) -> bytes:
    """A protobuf-field mutation of an ONNX model (a tenth are byte-level instead)."""
    import onnx
    if rng.random() < 0.1:
        return flip_bytes(rng, seed)
    model = onnx.ModelProto.FromString(seed)
    names = sorted({n for node in model.graph.node for n in list(node.input) + list(node.output)}
                   | {t.name for t in model.graph.initializer})[:200]
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        slots: list = []
        pick = rng.random()
        if pick < 0.5 and model.graph.node:      # bias towards nodes and their attributes
            _proto_slots(model.graph.node[rng.randrange(len(model.graph.node))], slots)
        elif pick < 0.7 and model.graph.initializer:
            _proto_slots(model.graph.initializer[rng.randrange(len(model.graph.initializer))],
                         slots)
        else:
            _proto_slots(model, slots)
        if slots:
            _mutate_proto_field(rng, *rng.choice(slots), names)
    return model.SerializeToString()


def onnx_seeds() -> list[tuple[str, bytes, dict]]:
    import silero_vad
    data = Path(silero_vad.__file__).parent / "data"
    return [("silero_vad_16k_sequence.onnx", (data / "silero_vad_16k_sequence.onnx").read_bytes(),
             {}),
            ("silero_vad_op18_ifless.onnx", (data / "silero_vad_op18_ifless.onnx").read_bytes(),
             {"fix": {"sr": 16000}}),
            ("demo_classifier.onnx", (ROOT / "edgeseq/data/demo_classifier.onnx").read_bytes(),
             {})]


def onnx_differential(path: Path, graph, options: dict) -> str | None:
    """'nonfinite' when the reference gives NaN/inf where onnxruntime is finite."""
    import numpy as np
    import onnxruntime as ort
    from edgeseq import reference
    rng = np.random.default_rng(0)
    feeds = {}
    for v in graph.inputs:
        shape = tuple(d if isinstance(d, int) else 2 for d in v.shape)
        if any(d > 4096 for d in shape) or np.prod(shape) > 1 << 20:
            return None
        feeds[v.name] = (rng.standard_normal(shape) * 0.1).astype(v.dtype) \
            if v.dtype.startswith("float") else np.ones(shape, v.dtype)
    try:
        so = ort.SessionOptions()
        so.log_severity_level = 4
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        ort_feeds = dict(feeds)
        for k, val in options.get("fix", {}).items():
            ort_feeds[k] = np.asarray(val, dtype=np.int64)
        theirs = sess.run(None, ort_feeds)
    except Exception:  # noqa: BLE001 - onnxruntime refuses the damaged model: nothing to compare
        return None
    try:
        ours = reference.run(graph, feeds)
    except Exception:  # noqa: BLE001 - a run-time refusal is the runtime's business, not ours
        return None
    names = [o.name for o in sess.get_outputs()]
    for name, want in zip(names, theirs):
        got = ours.get(name)
        if got is not None and np.shape(got) == np.shape(want) and \
                np.all(np.isfinite(want)) and not np.all(np.isfinite(got)):
            nan_in_file = any(np.isnan(c).any() for c in graph.constants.values()
                              if np.asarray(c).dtype.kind == "f")
            if nan_in_file:
                return "nan-in-file"
            return "ort-hides-nan" if _ort_intermediate_nan(path, ort_feeds) else "nonfinite"
    return None


def _ort_intermediate_nan(path: Path, feeds: dict) -> bool:
    """Whether onnxruntime (no graph optimisations) computes a NaN anywhere inside."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper
    m = onnx.load(str(path))
    inferred = onnx.shape_inference.infer_shapes(m)
    floats = {vi.name for vi in inferred.graph.value_info
              if vi.type.tensor_type.elem_type == TensorProto.FLOAT}
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                          for n in m.graph.node for o in n.output if o in floats - have)
    so = ort.SessionOptions()
    so.log_severity_level = 4
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return any(np.isnan(v).any() for v in sess.run(None, feeds)
               if isinstance(v, np.ndarray) and v.dtype.kind == "f")


def onnx_convert(path: Path, options: dict):
    from edgeseq.converters.onnx import convert
    return convert(path, **options)


# --- TFLite: flatbuffer fields (object API) -------------------------------------------
def _fb_slots(obj, out: list, depth: int = 0) -> None:
    import numpy as np
    if depth > 8:
        return
    for name, val in vars(obj).items():
        if val is None:
            out.append((obj, name, None))
        elif isinstance(val, (bool, int, float, bytes, str)):
            out.append((obj, name, None))
        elif isinstance(val, np.ndarray):
            out.append((obj, name, None))
            out.extend((obj, name, k) for k in range(min(val.size, 8)))
        elif isinstance(val, list):
            out.append((obj, name, None))
            for k, item in enumerate(val[:64]):
                if isinstance(item, (int, float)):
                    out.append((obj, name, k))
                else:
                    _fb_slots(item, out, depth + 1)
        elif hasattr(val, "__dict__"):
            out.append((obj, name, None))
            _fb_slots(val, out, depth + 1)


def _mutate_fb_field(rng: random.Random, obj, name: str, k) -> None:
    import numpy as np
    val = getattr(obj, name)
    if k is not None:
        if isinstance(val, np.ndarray):
            val = val.copy()            # object-API arrays may be read-only views of the file
            setattr(obj, name, val)
            v = mutate_number(rng, val.flat[k].item())
            info = np.iinfo(val.dtype) if val.dtype.kind in "iu" else None
            if info is not None:
                v = int(min(max(int(v) if v == v and abs(v) != float("inf") else 0, info.min),
                            info.max))
            val.flat[k] = v
        else:
            val[k] = mutate_number(rng, val[k])
        return
    if val is None or rng.random() < 0.3:
        setattr(obj, name, None)
    elif isinstance(val, (bool, int, float)):
        setattr(obj, name, mutate_number(rng, val))
    elif isinstance(val, (bytes, str)):
        setattr(obj, name, rng.choice((b"", b"x" * 64, b"\xff\xfe")))
    elif isinstance(val, np.ndarray):
        setattr(obj, name, val[:rng.randrange(val.size)] if val.size else None)
    elif isinstance(val, list) and val:
        if rng.random() < 0.5:
            del val[rng.randrange(len(val))]
        else:
            val.append(copy.deepcopy(val[rng.randrange(len(val))]))
    else:
        setattr(obj, name, None)


def tflite_mutate(rng: random.Random, seed: bytes) -> bytes:
    """A field mutation through the schema's object API (a tenth byte-level)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb
    if rng.random() < 0.1:
        return flip_bytes(rng, seed)
    for _ in range(20):
        model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(seed, 0))
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            slots: list = []
            sub = (model.subgraphs or [None])[0]
            pick = rng.random()
            if pick < 0.6 and sub is not None:
                _fb_slots(sub, slots)
            elif pick < 0.7:
                _fb_slots(model, slots)
            else:   # the file-level vectors themselves (buffers, opcodes, subgraphs ...)
                slots = [(model, n, None) for n in vars(model)]
            if slots:
                _mutate_fb_field(rng, *rng.choice(slots))
        try:
            b = flatbuffers.Builder(len(seed) + 1024)
            b.Finish(model.Pack(b), file_identifier=b"TFL3")
            return bytes(b.Output())
        except Exception:  # noqa: BLE001 - a value the builder cannot encode: draw again
            continue
    return flip_bytes(rng, seed)


def tflite_seeds() -> list[tuple[str, bytes, dict]]:
    folder = ROOT / "tests/fixtures/tflite"
    return [(p.name, p.read_bytes(), {}) for p in sorted(folder.glob("*.tflite"))]


def tflite_convert(path: Path, options: dict):
    from edgeseq.converters.tflite import convert
    return convert(path, **options)


# --- .pt2: archives --------------------------------------------------------------------
_PAYLOAD_SLOTS = ("data/sample_inputs/model.pt", "data/weights/model.pt")


class _Payload:
    """Unpickling this writes `marker` (a stand-in for any code an attacker would run)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def _payload(marker: str) -> bytes:
    import torch
    buf = io.BytesIO()
    torch.save(_Payload(marker), buf)
    return buf.getvalue()


def _mutate_json(rng: random.Random, doc):
    """One field of a JSON document changed, deleted or duplicated."""
    slots = []
    stack = [doc]
    while stack:
        obj = stack.pop()
        items = obj.items() if isinstance(obj, dict) else enumerate(obj) \
            if isinstance(obj, list) else ()
        for k, v in items:
            slots.append((obj, k))
            if isinstance(v, (dict, list)):
                stack.append(v)
    if not slots:
        return doc
    obj, k = rng.choice(slots)
    v = obj[k]
    r = rng.random()
    if r < 0.2 and isinstance(obj, dict):
        del obj[k]
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        obj[k] = mutate_number(rng, v) if rng.random() < 0.9 else str(v)
    elif isinstance(v, str):
        obj[k] = rng.choice(("", "torch.ops.aten.add.Tensor", "__import__('os')", "s0 + 1",
                             "torch.os.system", v + "_", "x" * 200))
    elif isinstance(v, list):
        if v and rng.random() < 0.5:
            del v[rng.randrange(len(v))]
        elif v:
            v.append(copy.deepcopy(v[rng.randrange(len(v))]))
        else:
            obj[k] = None
    else:
        obj[k] = rng.choice((None, 0, "", [], {}))
    return doc


def pt2_mutate(rng: random.Random, seed: bytes, marker: str = "") -> bytes:
    """A mutated archive: JSON fields of the program or a config, record bytes, zip bytes,
    or a planted payload in a pickle slot."""
    import zipfile
    if rng.random() < 0.1:
        return flip_bytes(rng, seed)
    with zipfile.ZipFile(io.BytesIO(seed)) as z:
        names = z.namelist()
        records = {n: z.read(n) for n in names}
    root = next(n for n in names if n.endswith("/archive_format"))[:-len("archive_format")]
    r = rng.random()
    if r < 0.1 and marker:
        records[root + rng.choice(_PAYLOAD_SLOTS)] = _payload(marker)
    elif r < 0.75:
        jsons = [n for n in names if n.endswith(".json")]
        name = rng.choice(jsons)
        doc = json.loads(records[name])
        for _ in range(rng.choice((1, 1, 2, 3))):
            doc = _mutate_json(rng, doc)
        records[name] = json.dumps(doc).encode()
    else:
        name = rng.choice(names)
        records[name] = flip_bytes(rng, records[name]) if records[name] else b"\x00"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for n, data in records.items():
            z.writestr(n, data)
    return buf.getvalue()


def pt2_seeds() -> list[tuple[str, bytes, dict]]:
    """Two small programs saved with torch.export (made here, not checked in)."""
    import torch

    class LstmNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(3, 5, batch_first=True)
            self.fc = torch.nn.Linear(5, 2)

        def forward(self, x):
            return torch.softmax(self.fc(self.rnn(x)[0]), -1)

    class GruNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.GRU(4, 6)
            self.register_buffer("scale", torch.full((6,), 0.5))

        def forward(self, x):
            return self.rnn(x)[0] * self.scale

    torch.manual_seed(0)
    out = []
    for name, net, x in (("lstm.pt2", LstmNet(), torch.randn(1, 5, 3)),
                         ("gru.pt2", GruNet(), torch.randn(5, 1, 4))):
        buf = io.BytesIO()
        torch.export.save(torch.export.export(net.eval(), (x,)), buf)
        out.append((name, buf.getvalue(), {"dynamic_time": False}))
    return out


def pt2_convert(path: Path, options: dict):
    from edgeseq.converters.torch import convert_exported
    return convert_exported(path, **options)


# --- the registry ---------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """A fuzz target: seed files, a mutator and the converter under test."""
    name: str
    suffix: str
    seeds: Callable[[], list]                 # -> [(name, bytes, converter options)]
    mutate: Callable                          # (rng, seed bytes[, marker]) -> bytes
    convert: Callable                         # (path, options) -> Graph
    warm: tuple[str, ...]                     # modules a worker imports before its limits
    differential: Callable | None = None      # (path, graph, options) -> outcome or None


TARGETS: dict[str, Target] = {
    "onnx": Target("onnx", ".onnx", onnx_seeds, onnx_mutate, onnx_convert,
                   ("onnx", "onnx.reference", "onnxruntime", "edgeseq.converters.onnx",
                    "edgeseq.reference"), onnx_differential),
    "tflite": Target("tflite", ".tflite", tflite_seeds, tflite_mutate, tflite_convert,
                     ("ai_edge_litert.schema_py_generated", "flatbuffers",
                      "edgeseq.converters.tflite")),
    "pt2": Target("pt2", ".pt2", pt2_seeds, pt2_mutate, pt2_convert,
                  ("torch", "edgeseq.converters.torch", "edgeseq.converters.torch._archive")),
}


def case_bytes(target: Target, seeds: list, seed: int, index: int, marker: str = "") -> tuple:
    """(seed entry, mutated bytes) of case `index`: deterministic in (seed, index)."""
    rng = random.Random(seed * 1_000_003 + index)
    entry = seeds[index % len(seeds)]
    if target.name == "pt2":
        return entry, target.mutate(rng, entry[1], marker)
    return entry, target.mutate(rng, entry[1])


def classify(target: Target, path: Path, options: dict, differential: bool) -> str:
    """The outcome of converting one damaged file (in this process)."""
    from edgeseq.errors import EdgeseqError
    try:
        graph = target.convert(path, options)
    except EdgeseqError as e:
        kind = "refused" if str(path) in str(e) or path.name in str(e) else "unnamed"
        return f"{kind}:{type(e).__name__}"
    except (Exception, RecursionError) as e:  # noqa: BLE001 - what the fuzzer looks for
        return f"raw:{type(e).__name__}"
    if differential and target.differential is not None:
        return target.differential(path, graph, options) or "converted"
    return "converted"


# --- worker (child process) -----------------------------------------------------------
def _limit_memory(budget_mb: int) -> None:
    """Address space: what the imports already mapped plus the budget."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[0])
    mapped = pages * os.sysconf("SC_PAGE_SIZE")
    lim = mapped + budget_mb * (1 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (lim, lim))


def _options(args) -> dict:
    """--option KEY=VALUE overrides (VALUE read as JSON: true, 3, "x")."""
    out = {}
    for spec in args.option:
        key, _, val = spec.partition("=")
        out[key] = json.loads(val)
    return out


def worker(args) -> None:
    import importlib
    import logging
    import warnings
    warnings.filterwarnings("ignore")
    logging.disable(logging.CRITICAL)
    target = TARGETS[args.format]
    for m in target.warm:
        importlib.import_module(m)
    seeds = target.seeds()
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-"))
    marker = str(tmp / "payload-ran")
    _limit_memory(args.memory_mb)
    print("ready", flush=True)
    for index in range(args.start, args.start + args.count):
        entry, data = case_bytes(target, seeds, args.seed, index, marker)
        path = tmp / f"case{index}{target.suffix}"
        path.write_bytes(data)
        outcome = classify(target, path, {**entry[2], **_options(args)}, args.differential)
        if os.path.exists(marker):
            outcome = "executed"
            os.unlink(marker)
        path.unlink()
        print(json.dumps({"case": index, "seed_file": entry[0], "outcome": outcome}), flush=True)


# --- driver ---------------------------------------------------------------------------
def _log(args, rec: dict) -> None:
    """Append one case's record to --log as soon as it is known (a long run can be cut
    short and still summarised with --summarize)."""
    if args.log:
        with open(args.log, "a") as f:
            f.write(json.dumps(rec) + "\n")


def run_batch(args, start: int, count: int) -> list[dict]:
    """Cases [start, start+count) in children; a child that dies or hangs is replaced."""
    results: list[dict] = []
    nxt = start
    while nxt < start + count:
        cmd = [sys.executable, __file__, args.format, "--worker", "--start", str(nxt),
               "--count", str(start + count - nxt), "--seed", str(args.seed),
               "--memory-mb", str(args.memory_mb)] + (["--differential"] if args.differential
                                                        else []) \
            + [f"--option={o}" for o in args.option]
        err = tempfile.TemporaryFile("w+")
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ)
        limit, ready = 900.0, False   # start-up (imports, seed files) is not a case
        while nxt < start + count:
            if not sel.select(timeout=limit):
                p.kill()
                p.wait()
                if not ready:
                    raise RuntimeError(f"worker for cases {nxt}.. did not start in {limit} s")
                results.append({"case": nxt, "outcome": "hang"})
                _log(args, results[-1])
                nxt += 1
                break
            line = p.stdout.readline()
            if not line:
                rc = p.wait()
                err.seek(0)
                results.append({"case": nxt, "outcome": f"crash:{rc}",
                                "stderr": err.read()[-2000:]})
                _log(args, results[-1])
                nxt += 1
                break
            if line.strip() == "ready":
                limit, ready = args.timeout, True
                continue
            rec = json.loads(line)
            results.append(rec)
            _log(args, rec)
            nxt = rec["case"] + 1
        sel.close()
        err.close()
        if p.poll() is None:
            p.stdout.close()
            p.wait()
    return results


def summarize(target_name: str, results: list[dict], args, seconds: float) -> dict:
    counts = Counter(r["outcome"] for r in results)
    examples = {}
    for r in results:
        kind = r["outcome"].split(":")[0]
        if kind in DEFECTS and r["outcome"] not in examples:
            examples[r["outcome"]] = r["case"]
            if "stderr" in r:
                sys.stderr.write(f"case {r['case']} {r['outcome']}:\n{r['stderr']}\n")
    return {"format": target_name, "cases": len(results), "seed": args.seed,
            "seconds": round(seconds, 1), "outcomes": dict(sorted(counts.items())),
            "defects": sum(v for k, v in counts.items() if k.split(":")[0] in DEFECTS),
            "first_case_of_each_defect": examples}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("format", choices=sorted(TARGETS))
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=250, help="cases per child process")
    ap.add_argument("--jobs", type=int, default=1, help="children at once")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per case")
    ap.add_argument("--memory-mb", type=int, default=1536,
                    help="address space a child may add to what its imports mapped")
    ap.add_argument("--differential", action="store_true",
                    help="ONNX: run converted cases in the reference and onnxruntime")
    ap.add_argument("--log", default=None, metavar="FILE.jsonl",
                    help="append every case's outcome as it comes, one JSON object a line")
    ap.add_argument("--first", type=int, default=0, help="index of the first case")
    ap.add_argument("--summarize", default=None, metavar="FILE.jsonl",
                    help="print the summary of the --log files given (comma separated)")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=JSON",
                    help="converter option over the seed's, e.g. dynamic_time=true for .pt2")
    ap.add_argument("--show", type=int, default=None, metavar="CASE",
                    help="write case CASE's file to ./fuzz-case<SUFFIX> and convert it here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        sys.stdout.flush()
        # NOTE: no interpreter teardown (torch's takes seconds under load): the parent waits
        # for end-of-file after the last case and would time it out as a hang
        os._exit(0)
    target = TARGETS[args.format]
    if args.summarize:
        recs = {}
        for name in args.summarize.split(","):
            for line in open(name):
                rec = json.loads(line)
                recs[rec["case"]] = rec
        print(json.dumps(summarize(args.format, list(recs.values()), args, 0.0), indent=1))
        return 0
    if args.show is not None:
        entry, data = case_bytes(target, target.seeds(), args.seed, args.show, "")
        path = Path(f"fuzz-case{target.suffix}")
        path.write_bytes(data)
        options = {**entry[2], **_options(args)}
        print(f"case {args.show} (from {entry[0]}, options {options}) -> {path}")
        target.convert(path, options)
        print("converted")
        return 0
    t0 = time.perf_counter()
    from concurrent.futures import ThreadPoolExecutor
    end = args.first + args.cases
    starts = range(args.first, end, args.batch)
    with ThreadPoolExecutor(args.jobs) as pool:
        parts = pool.map(lambda s: run_batch(args, s, min(args.batch, end - s)), starts)
        results = [r for part in parts for r in part]
    summary = summarize(args.format, results, args, time.perf_counter() - t0)
    print(json.dumps(summary, indent=1))
    return 1 if summary["defects"] else 0


if __name__ == "__main__":
    sys.exit(main())
