"""Choosing and loading an artifact's ahead-of-time compiled code (no Numba imported here).

Native code in a file is as trusted as a shared library, so it is used only when the caller
asks (`edgeseq.load(path, native_code=True)`, `edgeseq run --native`) or when the artifact's
checksum is listed in the allow-list file `$XDG_CONFIG_HOME/edgeseq/trusted.txt` (default
~/.config/edgeseq/trusted.txt; one "sha256:<hex>" per line, # comments). Among the targets
whose architecture and required CPU features this machine has, the one requiring the most
features is taken; the code's sha256 is checked, the ELF object parsed and bounds-checked,
and only then mapped. Without a usable target the caller falls back to the JIT runtime with
the note this module returns.
"""
from __future__ import annotations

import os
from pathlib import Path

from edgeseq.runtime.native import cpu

_NATIVE_OPTIONS = {"check_finite", "name", "memory_limit"}
_JIT_ONLY = {"warmup", "threads", "codegen"}       # no effect on compiled code


def trusted_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "edgeseq" / "trusted.txt"


def trusted_checksums() -> set:
    try:
        text = trusted_file().read_text()
    except OSError:
        return set()
    return {ln.split("#", 1)[0].strip() for ln in text.splitlines()} - {""}


def choose(targets: list) -> tuple:
    """(the best target this CPU runs, or None; one line per target it cannot run)."""
    usable, why = [], []
    for t in targets:
        lacks = cpu.missing(t.arch, t.requires)
        if lacks:
            why.append(f"{t.name} needs {', '.join(lacks)}")
        else:
            usable.append(t)
    best = max(usable, key=lambda t: len(t.requires), default=None)
    return best, why


def load_native(path, native_code: bool | None, options: dict) -> tuple:
    """(NativeModel or None, note for Model.describe() and a warning, or "").
    native_code: True use it, False never, None only for an artifact on the allow-list."""
    if native_code is False:
        return None, ""
    from edgeseq import artifact
    if native_code is None:
        # NOTE: the allow-list first: without one (the usual case) the file is read once,
        # by the JIT runtime's load
        trusted = trusted_checksums()
        if not trusted:
            return None, ""
        info = artifact.read_info(path)
        if not info.native or info.checksum not in trusted:
            return None, ""
    from edgeseq.runtime.native import elf, store
    art = artifact.read(path)
    where = str(path)
    if not art.native_text:
        return None, (f"native code: {path} carries none (edgeseq compile adds it); the JIT "
                      f"runtime compiles the model")
    if "delta" in options and options["delta"]:
        return None, "native code: not used (delta execution needs the JIT runtime)"
    info = store.parse(art.native_text, where)
    target, why = choose(info.targets)
    if target is None:
        return None, (f"native code: no target for this CPU ({cpu.machine()}): "
                      f"{'; '.join(why) or 'none stored'}; the JIT runtime compiles the model")
    unknown = set(options) - _NATIVE_OPTIONS - _JIT_ONLY - {"delta"}
    if unknown:
        raise TypeError(f"load() got unexpected option(s) {sorted(unknown)}")
    store.check_unit(info.unit, art.graph, where)
    consts = store.check_consts(art.native, where)
    data = store.code_bytes(art.native, target, where)
    obj = elf.parse(data, f"{where} [{target.tensor}]")
    if elf.MACHINES[obj.machine] != target.arch:
        from edgeseq.errors import ModelFormatError
        raise ModelFormatError(f"object code is for {elf.MACHINES[obj.machine]}, the metadata "
                               f"says {target.arch}", file=where, field=target.tensor)
    code = elf.load(obj, f"{where} [{target.tensor}]")
    from edgeseq.runtime.native.model import NativeModel
    kw = {k: v for k, v in options.items() if k in _NATIVE_OPTIONS}
    return NativeModel(art.graph, info.unit, consts, code, target, **kw), ""
