"""Read a `torch.export.save` archive (.pt2) without running code stored in it.

`torch.export.load` unpickles weights, constants and sample inputs with `weights_only=False`
and hands strings of the JSON program to `sympy.sympify` (an `eval`) and to `getattr` chains
starting at the `torch` module: a hostile file runs code. Here the archive is read as data:

- records come out of the zip through `zipfile` with their sizes checked first;
- raw tensor records become tensors from their bytes (bounds checked against the record);
  pickled tensors and sample inputs go through `torch.load(weights_only=True)`;
  script/opaque objects (arbitrary pickles) are refused;
- the JSON program is checked before torch's deserializer sees it: call targets must name an
  operator in an allowed namespace (or a plain `operator`/`math` function), symbolic
  expressions may use only integers, arithmetic, symbols and the shape functions torch
  defines, and guard code is dropped (it is only ever exec'd).

`trust_code=True` (`--trust-code` on the CLI) skips all of this and calls `torch.export.load`.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

from edgeseq.errors import EdgeseqError, ModelFormatError, UntrustedCodeError

# Operator namespaces a program may call (torch.ops.<ns>.<op>[.<overload>]).
OP_NAMESPACES = frozenset({"aten", "prims", "higher_order", "edgeseq"})
# Python-level functions torch.export emits for symbolic shape arithmetic.
PY_FUNCTIONS = {
    "_operator": frozenset({"getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg",
                            "pow", "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "not_",
                            "pos", "abs"}),
    "math": frozenset({"ceil", "floor", "trunc", "sqrt"}),
    "torch": frozenset({"sym_int", "sym_float", "sym_max", "sym_min", "sym_not", "sym_sqrt",
                        "sym_ite", "sym_sum", "_sym_sqrt"}),
}
_TARGET = re.compile(r"^torch\.ops\.(\w+)\.([A-Za-z_]\w*)(\.[A-Za-z_]\w*)?$")
# A symbolic expression: names, numbers, arithmetic, comparisons, parentheses, commas.
_EXPR_CHARS = re.compile(r"^[\w\s()+\-*/%<>=!,.]*$")
_EXPR_NAME = re.compile(r"[A-Za-z_]\w*")
_SYMBOL = re.compile(r"^[a-z]{1,3}\d+$")          # s0, u12, ps3 ...
_EXPR_FUNCTIONS = frozenset({"Max", "Min", "Abs", "floor", "ceiling", "sqrt", "Eq", "Ne", "Lt",
                             "Le", "Gt", "Ge", "And", "Or", "Not", "True", "False", "oo",
                             "Integer", "Rational", "Float", "Symbol", "Mul", "Add", "Pow"})
MAX_JSON_BYTES = 256 << 20
MAX_ZERO_RECORD_ELEMENTS = 1 << 26    # a 0-byte record stands for zeros of its declared size


def load_exported(path: str | Path, *, trust_code: bool = False):
    """The ExportedProgram in `path`; without `trust_code` nothing in the file is executed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (or not a regular file)")
    import torch
    if trust_code:
        try:
            return torch.export.load(str(path))
        except Exception as e:  # noqa: BLE001 - torch raises many types; say which file
            raise ModelFormatError(f"not a torch.export program: {type(e).__name__}: "
                                   f"{_first_line(e)}", file=str(path)) from e
    try:
        return _SafeReader(path, torch).program()
    except EdgeseqError:
        raise
    except (Exception, RecursionError) as e:  # noqa: BLE001 - every malformed-archive path
        raise ModelFormatError(f"not a readable torch.export program: {type(e).__name__}: "
                               f"{_first_line(e)}", file=str(path)) from None


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:300] if s else ""


def _untrusted(path: Path, what: str) -> UntrustedCodeError:
    return UntrustedCodeError(
        f"{path}: {what} is a Python pickle that can run arbitrary code when loaded; "
        f"edgeseq reads model files as data and refuses it. If you trust this file and "
        f"its author, convert it with --trust-code (Python: trust_code=True)")


class _SafeReader:
    def __init__(self, path: Path, torch):
        self.path, self.torch = path, torch
        self.zf = zipfile.ZipFile(path)
        self.size = path.stat().st_size
        names = self.zf.namelist()
        fmt = [n for n in names if n.endswith("archive_format") and n.count("/") == 1]
        if not fmt:
            raise ModelFormatError("not a PT2 archive (no archive_format record)",
                                   file=str(path), field="archive_format")
        self.root = fmt[0][: -len("archive_format")]
        self.names = {n[len(self.root):] for n in names if n.startswith(self.root)}

    def read(self, name: str) -> bytes:
        if name not in self.names:
            raise ModelFormatError("record missing from the archive", file=str(self.path),
                                   field=name)
        info = self.zf.getinfo(self.root + name)
        # NOTE: torch writes records uncompressed; a record larger than the whole file is a
        # decompression bomb, refused before anything is inflated
        if info.file_size > max(self.size, 1 << 20):
            raise ModelFormatError(f"record of {info.file_size} bytes in a {self.size}-byte "
                                   f"file", file=str(self.path), field=name)
        return self.zf.read(info)

    def program(self):
        from torch._export.serde import schema
        from torch._export.serde.serialize import ExportedProgramDeserializer, _dict_to_dataclass
        from torch.export.pt2_archive import constants as C

        version = self.read(C.ARCHIVE_VERSION_PATH).decode("utf-8", "replace").strip()
        if version != C.ARCHIVE_VERSION_VALUE:
            raise ModelFormatError(f"archive version {version!r}, this torch reads "
                                   f"{C.ARCHIVE_VERSION_VALUE!r}", file=str(self.path),
                                   field=C.ARCHIVE_VERSION_PATH)
        if "byteorder" in self.names and self.read("byteorder").strip() not in (b"", b"little"):
            raise ModelFormatError("big-endian archives are not supported",
                                   file=str(self.path), field="byteorder")
        model = C.MODELS_FILENAME_FORMAT.format("model")
        if model not in self.names:
            found = sorted(n for n in self.names if n.startswith(C.MODELS_DIR))
            raise ModelFormatError(f"no program named 'model' (found {found})",
                                   file=str(self.path), field=model)
        raw = self.read(model)
        if len(raw) > MAX_JSON_BYTES:
            raise ModelFormatError(f"program JSON of {len(raw)} bytes", file=str(self.path),
                                   field=model)
        doc = json.loads(raw.decode("utf-8"))
        self.check_program(doc, model)
        doc["guards_code"] = []      # NOTE: guard code is Python source torch may exec
        serialized = _dict_to_dataclass(schema.ExportedProgram, doc)
        state_dict = self.tensors(C.WEIGHTS_DIR, C.WEIGHTS_CONFIG_FILENAME_FORMAT, "weight")
        constants = self.tensors(C.CONSTANTS_DIR, C.CONSTANTS_CONFIG_FILENAME_FORMAT, "constant")
        example = self.sample_inputs(C.SAMPLE_INPUTS_FILENAME_FORMAT.format("model"))
        return ExportedProgramDeserializer().deserialize(serialized, state_dict, constants,
                                                         example)

    # --- the JSON program -------------------------------------------------------------
    def check_program(self, doc: Any, record: str) -> None:
        """Refuse call targets and symbolic expressions that would run arbitrary code."""
        stack = [(doc, "")]
        while stack:          # iterative: a deeply nested document cannot exhaust the stack
            obj, where = stack.pop()
            if isinstance(obj, dict):
                if "target" in obj and isinstance(obj.get("target"), str) and "inputs" in obj:
                    self.check_target(obj["target"], obj.get("name", where), record)
                if isinstance(obj.get("expr_str"), str):
                    self.check_expr(obj["expr_str"], where, record)
                stack.extend((v, f"{where}.{k}") for k, v in obj.items())
            elif isinstance(obj, list):
                stack.extend((v, f"{where}[{k}]") for k, v in enumerate(obj))

    def check_target(self, target: str, node: str, record: str) -> None:
        m = _TARGET.match(target)
        if m and m.group(1) in OP_NAMESPACES:
            return
        module, _, fn = target.rpartition(".")
        if fn in PY_FUNCTIONS.get(module, ()):
            return
        raise UntrustedCodeError(
            f"{self.path}: node {str(node)!r} of {record} calls {target[:120]!r}, which is not "
            f"an operator of {sorted(OP_NAMESPACES)}; loading it could run arbitrary code. "
            f"If you trust this file, use --trust-code (Python: trust_code=True)")

    def check_expr(self, expr: str, where: str, record: str) -> None:
        bad = (not _EXPR_CHARS.match(expr) or "__" in expr or len(expr) > 10_000
               or re.search(r"[A-Za-z_)\]]\s*\.", expr))
        if not bad:
            bad = any(not (_SYMBOL.match(n) or n in _EXPR_FUNCTIONS)
                      for n in _EXPR_NAME.findall(re.sub(r"\d+\.\d*(e[+-]?\d+)?", "", expr)))
        if bad:
            raise UntrustedCodeError(
                f"{self.path}: symbolic expression {expr[:80]!r} at {record}{where[:80]} is "
                f"not plain shape arithmetic; torch would evaluate it as Python. If you trust "
                f"this file, use --trust-code (Python: trust_code=True)")

    # --- tensors ----------------------------------------------------------------------
    def tensors(self, folder: str, config_format: str, kind: str) -> dict:
        from torch._export.serde import schema
        from torch._export.serde.serialize import _dict_to_dataclass
        from torch.export.pt2_archive import constants as C

        legacy = f"{folder}model.pt"
        if legacy in self.names:
            return self.weights_only(self.read(legacy), legacy)
        cfg_name = config_format.format("model")
        cfg = _dict_to_dataclass(schema.PayloadConfig, json.loads(self.read(cfg_name)))
        out = {}
        for fqn, meta in cfg.config.items():
            record = folder + meta.path_name
            if kind == "constant" and not meta.path_name.startswith(
                    C.TENSOR_CONSTANT_FILENAME_PREFIX):
                raise _untrusted(self.path, f"constant {fqn!r} ({record}, a script or opaque "
                                            f"object)")
            if meta.use_pickle:
                out[fqn] = self.weights_only(self.read(record), record)
            else:
                out[fqn] = self.raw_tensor(meta, record, fqn)
                if kind == "weight" and meta.is_param:
                    out[fqn] = self.torch.nn.Parameter(
                        out[fqn], requires_grad=bool(meta.tensor_meta.requires_grad))
        return out

    def raw_tensor(self, meta, record: str, fqn: str):
        from torch._export.serde.serialize import (deserialize_scalar_type, deserialize_size,
                                                   deserialize_storage_offset,
                                                   deserialize_stride)
        torch, tm = self.torch, meta.tensor_meta
        if tm is None:
            raise ModelFormatError("raw tensor without tensor_meta", file=str(self.path),
                                   node=fqn, field=record)
        dtype = deserialize_scalar_type(tm.dtype)
        size = [int(d) for d in deserialize_size(tm.sizes)]
        stride = [int(d) for d in deserialize_stride(tm.strides)]
        offset = int(deserialize_storage_offset(tm.storage_offset))
        if len(stride) != len(size) or min(size + stride + [offset], default=0) < 0:
            raise ModelFormatError(f"sizes {size}, strides {stride}, offset {offset}",
                                   file=str(self.path), node=fqn, field=record)
        data = self.read(record)
        esize = torch.empty((), dtype=dtype).element_size()
        if not data:
            n = 1
            for d in size:
                n *= d
            if n > MAX_ZERO_RECORD_ELEMENTS:
                raise ModelFormatError(f"empty record declares {n} elements",
                                       file=str(self.path), node=fqn, field=record)
            return torch.zeros(size, dtype=dtype)
        if len(data) % esize:
            raise ModelFormatError(f"{len(data)} bytes is not a whole number of {dtype} "
                                   f"elements", file=str(self.path), node=fqn, field=record)
        numel = len(data) // esize
        last = offset + sum((d - 1) * s for d, s in zip(size, stride)) if all(size) else -1
        if last >= numel:
            raise ModelFormatError(f"sizes {size} strides {stride} offset {offset} reach "
                                   f"element {last} of {numel}", file=str(self.path), node=fqn,
                                   field=record)
        flat = torch.frombuffer(bytearray(data), dtype=dtype)
        return torch.as_strided(flat, size, stride, offset)

    def weights_only(self, data: bytes, record: str):
        try:
            return self.torch.load(io.BytesIO(data), weights_only=True)
        except Exception as e:  # noqa: BLE001 - the weights-only unpickler refused the record
            if "Weights only load failed" in str(e) or "Unsupported global" in str(e):
                raise _untrusted(self.path, f"record {record}") from None
            raise ModelFormatError(f"unreadable tensor record: {type(e).__name__}: "
                                   f"{_first_line(e)}", file=str(self.path), field=record
                                   ) from None

    def sample_inputs(self, record: str):
        if record not in self.names:
            return None
        data = self.read(record)
        if not data:
            return None
        example = self.weights_only(data, record)
        if not isinstance(example, (tuple, dict)):
            raise ModelFormatError(f"sample inputs are a {type(example).__name__}, expected a "
                                   f"tuple", file=str(self.path), field=record)
        return example
