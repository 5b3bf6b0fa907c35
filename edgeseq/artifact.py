"""The `.eseq` artifact: one safetensors file holding a Graph and its constant tensors.

Layout (docs/artifact.md): 8-byte little-endian header length, a JSON header, raw little-endian
tensor bytes. The header's `__metadata__` carries strings only:

    edgeseq.format    "edgeseq"
    edgeseq.version   "MAJOR.MINOR"; a newer MAJOR is refused, a newer minor is read
    edgeseq.graph     Graph.dumps() (the constant table lists each tensor's dtype and shape)
    edgeseq.producer  who wrote the file, e.g. "edgeseq 0.1.0"
    edgeseq.source    hash of the source model ("sha256:<hex>"), or "" when unknown
    edgeseq.checksum  "sha256:<hex>" over the edgeseq.graph text (UTF-8), then every
                      tensor's bytes, tensors in name order. The graph is covered too, so a
                      damaged attribute (say cell_clip) cannot load silently.
    edgeseq.native    (optional) ahead-of-time compiled code: a JSON text describing the
                      targets (runtime/native/store.py); its tensors are named
                      "edgeseq.native/..." and are not graph constants. When present, the
                      checksum covers this text too (after the graph text).

Tensor names are the graph's constant names (int8 scales are ordinary constants
"<weight>.scale"). Loading is O(header): constants are read-only NumPy views of one
read-only memory map; only checksum verification touches the data (about 1 GB/s).
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from edgeseq.errors import ArtifactError, EdgeseqError
from edgeseq.files import open_regular
from edgeseq.graph import Graph
from edgeseq.limits import LIMITS, DepthError, check_depth, loads

FORMAT = "edgeseq"
VERSION = (1, 0)
SUFFIX = ".eseq"
# safetensors refuses headers beyond 100 MB; a bigger length means a foreign file.
_MAX_HEADER = 100_000_000

# safetensors dtype code <-> numpy dtype name, for the dtypes an edgeseq graph may hold.
# metadata key and tensor-name prefix of ahead-of-time compiled code (runtime/native/store.py)
NATIVE_KEY = "edgeseq.native"
NATIVE_PREFIX = "edgeseq.native/"

_ST_TO_NP = {"F32": "float32", "F16": "float16", "F64": "float64", "I8": "int8", "U8": "uint8",
             "I16": "int16", "U16": "uint16", "I32": "int32", "I64": "int64", "BOOL": "bool"}

PathLike = Union[str, os.PathLike]


@dataclass
class ArtifactInfo:
    """What the header of an artifact says, besides the graph."""
    path: Path
    version: str
    producer: str
    source: str
    checksum: str
    file_bytes: int
    data_bytes: int
    tensors: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)  # name -> dtype, shape
    verified: bool = False
    native: str = ""          # the edgeseq.native metadata text (compiled targets), or ""

    def to_json(self) -> dict:
        return {"path": str(self.path), "format": FORMAT, "version": self.version,
                "producer": self.producer, "source": self.source, "checksum": self.checksum,
                "checksum_verified": self.verified, "file_bytes": self.file_bytes,
                "data_bytes": self.data_bytes}


@dataclass
class Artifact:
    """A loaded artifact: the validated graph and its header facts."""
    graph: Graph
    info: ArtifactInfo
    native_text: str = ""                      # the edgeseq.native metadata ("" if none)
    native: dict = field(default_factory=dict)   # "edgeseq.native/..." tensors


# ---- writing --------------------------------------------------------------------------------
def save(graph: Graph, path: PathLike, *, producer: str | None = None,
         source: PathLike | bytes | None = None,
         native: tuple[str, dict] | None = None) -> Path:
    """Validate `graph` and write it atomically to `path` (.eseq); returns the path.

    `source` is the source model: a file path (hashed with sha256), raw bytes (hashed), or a
    string that is already a hash. `native`: (edgeseq.native text, {"edgeseq.native/...":
    array}) of compiled code. A crash mid-write leaves any previous file untouched.
    """
    from safetensors.numpy import save_file  # the container writer

    from edgeseq import __version__

    path = Path(path)
    graph.validate()
    tensors: dict[str, np.ndarray] = {}
    for name, c in graph.constants.items():
        if name == "__metadata__":
            raise ArtifactError(f"{path}: constant name '__metadata__' is reserved by safetensors")
        # NOTE: not np.ascontiguousarray, which turns a 0-d constant into shape (1,)
        arr = np.asarray(c) if c.flags.c_contiguous else np.array(c, order="C")
        if arr.dtype.name not in _ST_TO_NP.values():
            raise ArtifactError(f"{path}: constant '{name}' has dtype {arr.dtype}, which an "
                                f"artifact cannot hold; allowed: {sorted(set(_ST_TO_NP.values()))}")
        # safetensors stores little-endian; hash what lands on disk
        tensors[name] = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    native_text, native_tensors = native if native is not None else ("", {})
    for name, arr in native_tensors.items():
        if not name.startswith(NATIVE_PREFIX) or name in tensors:
            raise ArtifactError(f"{path}: native tensor name {name!r} must start with "
                                f"{NATIVE_PREFIX!r} and not be a constant")
        tensors[name] = np.ascontiguousarray(arr)
    try:
        graph_text = graph.dumps()
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"{path}: graph '{graph.name}' cannot be written as JSON "
                            f"(metadata or attributes hold a non-JSON value): {e}") from None
    metadata = {
        "edgeseq.format": FORMAT,
        "edgeseq.version": f"{VERSION[0]}.{VERSION[1]}",
        "edgeseq.graph": graph_text,
        "edgeseq.producer": producer if producer is not None else f"edgeseq {__version__}",
        "edgeseq.source": source_hash(source),
        "edgeseq.checksum": _checksum(graph_text, (tensors[k] for k in sorted(tensors)),
                                      native_text),
    }
    if native_text:
        metadata[NATIVE_KEY] = native_text
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; an artifact is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def write_raw(path: PathLike, graph_text: str, tensors: dict[str, np.ndarray],
              version: str = f"{VERSION[0]}.{VERSION[1]}") -> Path:
    """Write `graph_text` and `tensors` as an artifact WITHOUT validating either, with a
    correct checksum: for tests and fuzzers that need a hostile file that passes it."""
    from safetensors.numpy import save_file
    meta = {"edgeseq.format": FORMAT, "edgeseq.version": version, "edgeseq.graph": graph_text,
            "edgeseq.producer": "edgeseq.artifact.write_raw", "edgeseq.source": "",
            "edgeseq.checksum": _checksum(graph_text, (np.ascontiguousarray(tensors[k])
                                                       for k in sorted(tensors)))}
    save_file(tensors, str(path), metadata=meta)
    return Path(path)


def source_hash(source: PathLike | bytes | None) -> str:
    """'sha256:<hex>' of a source model file or bytes; a string that is not a file is kept."""
    if source is None:
        return ""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "sha256:" + hashlib.sha256(source).hexdigest()
    if isinstance(source, os.PathLike) or os.path.isfile(source):
        with open(source, "rb") as f:
            return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
    return str(source)


def _checksum(graph_text: str, arrays, native_text: str = "") -> str:
    h = hashlib.sha256(graph_text.encode("utf-8"))
    if native_text:
        h.update(b"\0" + native_text.encode("utf-8"))
    for a in arrays:
        h.update(_as_bytes(a))
    return "sha256:" + h.hexdigest()


def _as_bytes(a):
    if isinstance(a, np.ndarray):
        return a.reshape(-1).view(np.uint8) if a.size else b""
    return a


def _fsync_dir(d: Path) -> None:
    # NOTE: makes the rename itself durable; not every platform can open a directory
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- reading --------------------------------------------------------------------------------
def load(path: PathLike, *, verify: bool = True) -> Graph:
    """The validated Graph stored in `path`; constants are read-only memory-mapped views."""
    return read(path, verify=verify).graph


def read(path: PathLike, *, verify: bool = True) -> Artifact:
    """Load an artifact with its header facts. Raises ArtifactError saying what is wrong."""
    path = Path(path)
    with open_regular(path, ArtifactError) as f:
        header, info = _read_header(path, f)
        meta = header["__metadata__"]
        table = _tensor_table(path, header, info)
        graph_json = _graph_json(path, meta)
        native_text = meta.get(NATIVE_KEY, "")
        if not isinstance(native_text, str):
            raise ArtifactError(f"{path}: corrupt: metadata '{NATIVE_KEY}' is not a string")
        _check_constant_table(path, graph_json, table, bool(native_text))
        mm = None
        if table:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            if len(mm) != info.file_bytes:
                raise ArtifactError(f"{path}: file changed size while being read")

    constants: dict[str, np.ndarray] = {}
    data_start = info.file_bytes - info.data_bytes
    if verify:
        view = memoryview(mm) if mm is not None else memoryview(b"")
        got = _checksum(meta["edgeseq.graph"],
                        (view[data_start + table[k][2]:data_start + table[k][3]]
                         for k in sorted(table)), native_text)
        if got != info.checksum:
            raise ArtifactError(f"{path}: checksum mismatch: graph or tensor data is corrupt "
                                f"(header says {info.checksum or 'nothing'}, content hashes "
                                f"to {got})")
    for name, (dt, shape, start, end) in table.items():
        arr = np.frombuffer(mm, dtype=np.dtype(dt).newbyteorder("<"),
                            count=int(np.prod(shape, dtype=np.int64)), offset=data_start + start)
        constants[name] = arr.reshape(shape)
    native = {k: constants.pop(k) for k in list(constants) if k.startswith(NATIVE_PREFIX)}
    info.verified = verify
    try:
        graph = Graph.from_json(graph_json, constants).validate()
    except EdgeseqError as e:
        raise ArtifactError(f"{path}: the stored graph is invalid: {type(e).__name__}: {e}") from None
    if verify:
        _check_finite(path, graph)
    return Artifact(graph, info, native_text, native)


def read_info(path: PathLike) -> ArtifactInfo:
    """Header facts only (no graph validation, no checksum): cheap, for listings."""
    path = Path(path)
    with open_regular(path, ArtifactError) as f:
        header, info = _read_header(path, f)
    _tensor_table(path, header, info)
    return info


def _read_header(path: Path, f) -> tuple[dict, ArtifactInfo]:
    size = os.fstat(f.fileno()).st_size
    head = f.read(9)
    if size == 0:
        raise ArtifactError(f"{path}: empty file (0 bytes): not an edgeseq artifact")
    if size < 8:
        raise ArtifactError(f"{path}: truncated: file is {size} bytes, shorter than the "
                            f"8-byte header length")
    n = int.from_bytes(head[:8], "little")
    if (len(head) > 8 and head[8:9] != b"{") or (n > _MAX_HEADER and 8 + n > size):
        raise ArtifactError(f"{path}: not an edgeseq artifact: no safetensors JSON header "
                            f"(is it an ONNX, TFLite or other model file? convert it first: "
                            f"edgeseq convert {path} -o {path.stem}.eseq)")
    if 8 + n > size:
        raise ArtifactError(f"{path}: truncated: header length {n} bytes goes beyond the "
                            f"file size ({size} bytes)")
    if n > LIMITS.header_bytes:
        raise ArtifactError(f"{path}: header of {n} bytes exceeds the limit of "
                            f"{LIMITS.header_bytes} bytes (edgeseq.limits.Limits.header_bytes)")
    f.seek(8)
    raw = f.read(n)
    try:
        header = loads(raw)
    except DepthError as e:
        raise ArtifactError(f"{path}: corrupt header: {e} (edgeseq.limits.Limits.json_depth)") \
            from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: not an edgeseq artifact: header is not JSON ({e})") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("edgeseq.format") != FORMAT:
        raise ArtifactError(f"{path}: not an edgeseq artifact: a safetensors file without edgeseq "
                            f"metadata ('edgeseq.format' is "
                            f"{meta.get('edgeseq.format') if isinstance(meta, dict) else None!r}); "
                            f"a PyTorch state_dict converts with: edgeseq convert {path} "
                            f"--arch SPEC -o {path.stem}.eseq")
    version = meta.get("edgeseq.version", "")
    try:
        major, minor = (int(p) for p in version.split("."))
    except (ValueError, AttributeError):
        raise ArtifactError(f"{path}: unreadable edgeseq.version {version!r}, expected "
                            f"'MAJOR.MINOR'") from None
    if major > VERSION[0]:
        raise ArtifactError(f"{path}: newer major version {version}: this edgeseq reads format "
                            f"{VERSION[0]}.x; upgrade edgeseq to load it")
    if major < 1:
        raise ArtifactError(f"{path}: unsupported format version {version}")
    info = ArtifactInfo(path=path, version=version, producer=str(meta.get("edgeseq.producer", "")),
                        source=str(meta.get("edgeseq.source", "")),
                        checksum=str(meta.get("edgeseq.checksum", "")), file_bytes=size,
                        data_bytes=size - 8 - n)
    native = meta.get(NATIVE_KEY, "")
    info.native = native if isinstance(native, str) else ""
    return header, info


def _tensor_table(path: Path, header: dict, info: ArtifactInfo) -> dict[str, tuple]:
    """name -> (numpy dtype, shape, start, end) with offsets into the data region."""
    from safetensors import SafetensorError, safe_open

    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    if len(entries) > LIMITS.tensors:
        raise ArtifactError(f"{path}: {len(entries)} tensors exceed the limit of {LIMITS.tensors} "
                            f"(edgeseq.limits.Limits.tensors)")
    data_end = 0
    for name, e in entries.items():
        try:
            start, end = (int(o) for o in e["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(f"{path}: corrupt header: tensor '{name}' has no valid "
                                f"data_offsets") from None
        data_end = max(data_end, end)
    if data_end > info.data_bytes:
        raise ArtifactError(f"{path}: truncated: data region truncated: the header describes "
                            f"{data_end} bytes of tensor data, the file holds {info.data_bytes}")
    if data_end < info.data_bytes:
        raise ArtifactError(f"{path}: corrupt: {info.data_bytes - data_end} unexpected bytes after "
                            f"the tensor data")
    # the safetensors library checks the header's structure (dtypes, contiguous offsets)
    table: dict[str, tuple] = {}
    try:
        with safe_open(path, framework="numpy") as f:
            for name in f.offset_keys():
                sl = f.get_slice(name)
                dt = _ST_TO_NP.get(sl.get_dtype())
                if dt is None:
                    raise ArtifactError(f"{path}: tensor '{name}' has dtype {sl.get_dtype()}, "
                                        f"which edgeseq does not use")
                shape = tuple(int(d) for d in sl.get_shape())
                if len(shape) > LIMITS.rank:
                    raise ArtifactError(f"{path}: tensor '{name}' has rank {len(shape)}, more "
                                        f"than the limit of {LIMITS.rank}")
                start, end = (int(o) for o in entries[name]["data_offsets"])
                table[name] = (dt, shape, start, end)
    except SafetensorError as e:
        raise ArtifactError(f"{path}: corrupt safetensors header: {e}") from None
    info.tensors = {k: (v[0], v[1]) for k, v in table.items()}
    return table


def _graph_json(path: Path, meta: dict) -> dict:
    text = meta.get("edgeseq.graph")
    if not isinstance(text, str):
        raise ArtifactError(f"{path}: corrupt: metadata has no 'edgeseq.graph'")
    try:
        d = loads(text)
        if not isinstance(d, dict) or not isinstance(d.get("constants"), dict):
            raise ArtifactError(f"{path}: corrupt: 'edgeseq.graph' has no constant table")
        # the graph's own structure has a fixed depth (from_json checks it); metadata and
        # attributes are free-form JSON
        nodes = d.get("nodes")
        check_depth(d.get("metadata"), LIMITS.json_depth - 2)
        for n in nodes if isinstance(nodes, list) else ():
            check_depth(n.get("attrs") if isinstance(n, dict) else None, LIMITS.json_depth - 4)
    except DepthError as e:
        raise ArtifactError(f"{path}: corrupt: 'edgeseq.graph': {e} "
                            f"(edgeseq.limits.Limits.json_depth)") from None
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: corrupt: 'edgeseq.graph' is not JSON ({e})") from None
    if isinstance(nodes, list) and len(nodes) > LIMITS.nodes:
        raise ArtifactError(f"{path}: graph of {len(nodes)} nodes exceeds the limit of "
                            f"{LIMITS.nodes} (edgeseq.limits.Limits.nodes)")
    return d


def _check_constant_table(path: Path, graph_json: dict, table: dict[str, tuple],
                          native: bool = False) -> None:
    want = graph_json["constants"]
    for name, spec in want.items():
        if name not in table:
            raise ArtifactError(f"{path}: tensor '{name}' of the graph's constant table is missing "
                                f"from the file")
        dt, shape = table[name][0], table[name][1]
        if not isinstance(spec, dict) or not isinstance(spec.get("shape", ()), list):
            raise ArtifactError(f"{path}: corrupt: constant table entry '{name}' is {spec!r:.80}, "
                                f"expected {{'dtype': ..., 'shape': [...]}}")
        w_dt, w_shape = spec.get("dtype"), tuple(spec.get("shape", ()))
        if dt != w_dt or shape != w_shape:
            raise ArtifactError(f"{path}: tensor '{name}': the graph expects {w_dt} "
                                f"{_fmt(w_shape)}, the file holds {dt} {_fmt(shape)}")
    extra = sorted(k for k in set(table) - set(want)
                   if not (native and k.startswith(NATIVE_PREFIX)))
    if extra:
        raise ArtifactError(f"{path}: tensor(s) {extra} in the file are not constants of the graph")


def _fmt(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _check_finite(path: Path, graph: Graph) -> None:
    """Refuse NaN in any tensor or float attribute a node computes with, and +-inf in a
    recurrent weight (an inf weight makes every output NaN). +-inf elsewhere is allowed:
    masks and clip bounds use it on purpose."""
    from edgeseq.ops import RECURRENT
    seen: set[tuple[str, bool]] = set()
    for node in _nested_nodes(graph):
        for key, v in node.attrs.items():
            vals = v if isinstance(v, (list, tuple)) else (v,)
            if any(isinstance(x, float) and x != x for x in vals):
                raise ArtifactError(f"{path}: node '{node.name}' ({node.op.value}): attribute "
                                    f"'{key}' is NaN")
        recurrent = node.op in RECURRENT
        for slot, name in [*((f"input {i}", n) for i, n in enumerate(node.inputs)),
                           *node.weights.items()]:
            c = graph.constants.get(name) if name else None
            if c is None or c.dtype.kind != "f" or (name, recurrent) in seen:
                continue
            seen.add((name, recurrent))
            bad = int(np.count_nonzero(~np.isfinite(c) if recurrent else np.isnan(c)))
            if bad:
                what = "non-finite (NaN or inf)" if recurrent else "NaN"
                raise ArtifactError(f"{path}: node '{node.name}' ({node.op.value}): tensor "
                                    f"'{name}' ({slot}) holds {bad} {what} value(s)")


def _nested_nodes(graph: Graph):
    """Every node of the graph and of its Loop bodies (whose constants the enclosing table
    holds, edgeseq/loop_op.py)."""
    todo = [graph]
    while todo:
        g = todo.pop()
        for node in g.nodes:
            yield node
            body = node.attrs.get("body")
            if hasattr(body, "nodes"):
                todo.append(body)

