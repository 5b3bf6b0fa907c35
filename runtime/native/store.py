"""How compiled code sits in an artifact: the `edgeseq.native` metadata (JSON text) and the
tensors "edgeseq.native/code/<target>" (uint8 object code) and "edgeseq.native/wf|wi|wd"
(the packed constants the code reads). The artifact checksum covers both; each target's
code also carries its own sha256, checked again right before the code is mapped.

    {"format": 1, "edgeseq": "0.1.0",
     "unit": {inputs, outputs, results, states, workspace},   # the calling convention
     "targets": [{"name", "triple", "cpu", "features", "requires", "sha256", "bytes"}, ...]}
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from edgeseq.errors import ModelFormatError
from edgeseq.limits import LIMITS, DepthError, loads

FORMAT = 1
PREFIX = "edgeseq.native/"
CONSTS = ("wf", "wi", "wd")
_CONST_DTYPES = {"wf": "float32", "wi": "int64", "wd": "float64"}


@dataclass(frozen=True)
class CodeTarget:
    """One compiled target as the artifact records it."""
    name: str
    triple: str
    cpu: str
    features: str
    requires: tuple
    sha256: str
    bytes: int

    @property
    def arch(self) -> str:
        return self.triple.split("-")[0]

    @property
    def tensor(self) -> str:
        return f"{PREFIX}code/{self.name}"


@dataclass
class NativeInfo:
    """The parsed edgeseq.native metadata."""
    edgeseq: str
    unit: dict
    targets: list


def code_target(target, obj: bytes) -> CodeTarget:
    return CodeTarget(target.name, target.triple, target.cpu, target.features,
                      tuple(target.requires), "sha256:" + hashlib.sha256(obj).hexdigest(),
                      len(obj))


def dumps(edgeseq_version: str, unit: dict, targets: list) -> str:
    return json.dumps({"format": FORMAT, "edgeseq": edgeseq_version, "unit": unit,
                       "targets": [asdict(t) for t in targets]}, sort_keys=True)


def tensors(consts: dict, objects: dict) -> dict:
    """{"edgeseq.native/...": array} for the packed constants and each target's object."""
    out = {f"{PREFIX}{k}": np.ascontiguousarray(consts[k], dtype=_CONST_DTYPES[k])
           for k in CONSTS}
    for t, obj in objects.items():
        out[t.tensor] = np.frombuffer(obj, dtype=np.uint8)
    return out


def parse(text: str, where: str) -> NativeInfo:
    """Check the metadata's structure; ModelFormatError naming the field."""
    def bad(msg: str, field: str):
        return ModelFormatError(msg, file=where, field=f"edgeseq.native {field}")
    try:
        d = loads(text)
    except (DepthError, ValueError) as e:
        raise bad(f"not JSON ({e})", "") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise bad(f"format {d.get('format') if isinstance(d, dict) else d!r:.40} is not "
                  f"{FORMAT}", "format")
    unit, targets = d.get("unit"), d.get("targets")
    if not isinstance(unit, dict) or not isinstance(targets, list) or len(targets) > 64:
        raise bad("expected a 'unit' object and a list of at most 64 'targets'", "targets")
    _check_unit(unit, bad)
    out = []
    for k, t in enumerate(targets):
        try:
            ct = CodeTarget(**{**t, "requires": tuple(t["requires"])})
            ok = all(isinstance(getattr(ct, f), str) for f in ("name", "triple", "cpu",
                                                               "features", "sha256")) \
                and all(isinstance(r, str) for r in ct.requires) and isinstance(ct.bytes, int) \
                and 0 < ct.bytes <= LIMITS.native_code_bytes
        except (TypeError, KeyError):
            ok = False
        if not ok:
            raise bad(f"target {k} is malformed: {t!r:.120}", f"targets[{k}]")
        out.append(ct)
    return NativeInfo(str(d.get("edgeseq", "")), unit, out)


def _check_unit(unit: dict, bad) -> None:
    def arrays(key: str, n_fields: int) -> list:
        v = unit.get(key)
        if not isinstance(v, list) or len(v) > 10_000:
            raise bad(f"'{key}' is not a list", f"unit.{key}")
        for e in v:
            if not (isinstance(e, list) and len(e) == n_fields and e[-2] in _CONST_DTYPES.values()
                    and isinstance(e[-1], int) and 0 <= e[-1] <= LIMITS.rank):
                raise bad(f"'{key}' entry {e!r:.60} is not [..., dtype, rank]", f"unit.{key}")
        return v
    arrays("inputs", 3)
    arrays("results", 2)
    outs, states = unit.get("outputs"), unit.get("states")
    if not (isinstance(outs, list) and all(isinstance(o, str) for o in outs)
            and isinstance(states, list) and all(isinstance(s, dict) for s in states)
            and len(outs) + len(states) == len(unit["results"])
            and isinstance(unit.get("workspace"), bool)):
        raise bad("outputs, states and results do not agree", "unit.results")


def check_unit(unit: dict, graph, where: str) -> None:
    """The calling convention must name the graph's inputs and outputs (a table built for
    other inputs would hand the code wrong addresses)."""
    ins = [i[0] for i in unit["inputs"]]
    if ins != [v.name for v in graph.inputs] or unit["outputs"] != [v.name for v in
                                                                   graph.outputs]:
        raise ModelFormatError(f"the compiled code takes inputs {ins} and returns "
                               f"{unit['outputs']}, the graph has {[v.name for v in graph.inputs]}"
                               f" -> {[v.name for v in graph.outputs]}", file=where,
                               field="edgeseq.native unit")


def check_consts(native: dict, where: str) -> tuple:
    """The packed constants wf, wi, wd (1-D, their dtypes)."""
    out = []
    for k in CONSTS:
        a = native.get(PREFIX + k)
        if a is None or a.ndim != 1 or str(a.dtype) != _CONST_DTYPES[k]:
            raise ModelFormatError(f"tensor {PREFIX + k} is missing or not 1-D "
                                   f"{_CONST_DTYPES[k]}", file=where, field=PREFIX + k)
        out.append(a)
    return tuple(out)


def code_bytes(native: dict, target: CodeTarget, where: str) -> bytes:
    """The target's object code, after checking its size and sha256 against the metadata."""
    a = native.get(target.tensor)
    field = target.tensor
    if a is None or a.dtype != np.uint8 or a.ndim != 1:
        raise ModelFormatError("object code tensor missing or not 1-D uint8", file=where,
                               field=field)
    data = a.tobytes()
    if len(data) != target.bytes:
        raise ModelFormatError(f"object code is {len(data)} bytes, the metadata says "
                               f"{target.bytes}", file=where, field=field)
    got = "sha256:" + hashlib.sha256(data).hexdigest()
    if got != target.sha256:
        raise ModelFormatError(f"object code hashes to {got}, the metadata says "
                               f"{target.sha256}: refused", file=where, field=field)
    return data
