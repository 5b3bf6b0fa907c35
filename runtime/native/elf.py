"""A loader of relocatable ELF64 objects (what LLVM emits for a PIC small-code-model module)
into executable memory, in pure Python (ctypes + mmap/mprotect): no LLVM and no linker at run
time, which keeps a board's install to NumPy and safetensors.

Steps: parse and bounds-check every header, section, symbol and relocation (an object read
from a file is untrusted: any inconsistency raises ModelFormatError naming the field, before
anything is mapped); lay the allocated sections out in three page groups (code, read-only,
writable) plus a GOT and call stubs for external symbols (resolved with dlsym in the process,
libm and libgcc_s); apply the relocations in a private image; copy it into an anonymous
mapping and make the code read+execute, the rest read-only or read+write (never writable and
executable at once). .eh_frame and other non-allocated sections are not loaded.

Relocation types: x86-64 64, PC32, PLT32, PC64, GOTPCREL, GOTPCRELX, REX_GOTPCRELX; AArch64
ABS64, PREL32, PREL64, ADR_PREL_PG_HI21, ADD_ABS_LO12_NC, LDST8/16/32/64/128_ABS_LO12_NC,
CALL26, JUMP26, ADR_GOT_PAGE, LD64_GOT_LO12_NC. Any other type is refused by name.
"""
from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

from edgeseq.errors import ModelFormatError
from edgeseq.limits import LIMITS

EM_X86_64, EM_AARCH64 = 62, 183
MACHINES = {EM_X86_64: "x86_64", EM_AARCH64: "aarch64"}
_SHT_PROGBITS, _SHT_SYMTAB, _SHT_STRTAB, _SHT_RELA, _SHT_NOBITS, _SHT_REL = 1, 2, 3, 4, 8, 9
_SHF_WRITE, _SHF_ALLOC, _SHF_EXEC = 1, 2, 4
_SHN_UNDEF, _SHN_ABS, _SHN_COMMON, _SHN_LORESERVE = 0, 0xFFF1, 0xFFF2, 0xFF00
_PAGE = 1 << 16          # covers 4 KiB and 64 KiB page kernels alike
_STUB = 16

_X86 = {1: "R_X86_64_64", 2: "R_X86_64_PC32", 4: "R_X86_64_PLT32", 9: "R_X86_64_GOTPCREL",
        24: "R_X86_64_PC64", 41: "R_X86_64_GOTPCRELX", 42: "R_X86_64_REX_GOTPCRELX"}
_ARM = {257: "R_AARCH64_ABS64", 260: "R_AARCH64_PREL64", 261: "R_AARCH64_PREL32",
        275: "R_AARCH64_ADR_PREL_PG_HI21", 277: "R_AARCH64_ADD_ABS_LO12_NC",
        278: "R_AARCH64_LDST8_ABS_LO12_NC", 282: "R_AARCH64_JUMP26",
        283: "R_AARCH64_CALL26", 284: "R_AARCH64_LDST16_ABS_LO12_NC",
        285: "R_AARCH64_LDST32_ABS_LO12_NC", 286: "R_AARCH64_LDST64_ABS_LO12_NC",
        299: "R_AARCH64_LDST128_ABS_LO12_NC", 311: "R_AARCH64_ADR_GOT_PAGE",
        312: "R_AARCH64_LD64_GOT_LO12_NC"}
_KNOWN = {EM_X86_64: _X86, EM_AARCH64: _ARM}
_GOT_TYPES = {9, 41, 42, 311, 312}
_CALL_TYPES = {4, 282, 283}


@dataclass
class Section:
    index: int
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    align: int
    entsize: int


@dataclass
class Symbol:
    name: str
    bind: int
    type: int
    shndx: int
    value: int


@dataclass
class ElfObject:
    """A parsed, bounds-checked relocatable object."""
    machine: int
    data: bytes
    sections: list
    symbols: list
    relocations: dict        # target section index -> [(offset, type, symbol index, addend)]

    def defined(self, name: str) -> Symbol | None:
        for s in self.symbols:
            if s.name == name and s.shndx not in (_SHN_UNDEF, _SHN_COMMON) \
                    and s.shndx < _SHN_LORESERVE and s.bind != 0:
                return s
        return None


def parse(data: bytes, where: str = "object") -> ElfObject:
    """Parse and check an ELF64 little-endian relocatable object; ModelFormatError naming
    `where` and the field on anything out of range."""
    def bad(msg: str, field: str):
        return ModelFormatError(msg, file=where, field=field)
    if len(data) > LIMITS.native_code_bytes:
        raise bad(f"object of {len(data)} bytes exceeds the limit of "
                  f"{LIMITS.native_code_bytes} (edgeseq.limits.Limits.native_code_bytes)", "size")
    if len(data) < 64 or data[:4] != b"\x7fELF":
        raise bad("not an ELF object (too short or no ELF magic)", "e_ident")
    if data[4] != 2 or data[5] != 1:
        raise bad("not a 64-bit little-endian ELF object", "e_ident")
    (_, e_type, machine, _, _, _, shoff, _, _, _, _, shentsize, shnum,
     shstrndx) = struct.unpack_from("<16sHHIQQQIHHHHHH", data, 0)
    if e_type != 1:
        raise bad(f"ELF type {e_type} is not a relocatable object (1)", "e_type")
    if machine not in MACHINES:
        raise bad(f"machine {machine} is neither x86-64 nor AArch64", "e_machine")
    if shentsize != 64 or not 0 < shnum <= 65280 or shoff + 64 * shnum > len(data):
        raise bad(f"section table ({shnum} entries of {shentsize} bytes at {shoff}) does not "
                  f"fit the {len(data)}-byte object", "e_shoff")
    raw = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + 64 * k) for k in range(shnum)]
    if shstrndx >= shnum:
        raise bad(f"section name table index {shstrndx} >= {shnum}", "e_shstrndx")

    def span(k: int, off: int, size: int, field: str) -> None:
        if off > len(data) or size > len(data) - off:
            raise bad(f"section {k}: bytes {off}..{off + size} lie outside the "
                      f"{len(data)}-byte object", field)
    names = raw[shstrndx]
    span(shstrndx, names[4], names[5], "sh_offset")

    def cstr(table_off: int, table_size: int, at: int, field: str) -> str:
        if at >= table_size:
            raise bad(f"string offset {at} beyond its table of {table_size} bytes", field)
        end = data.find(b"\0", table_off + at, table_off + table_size)
        if end < 0:
            raise bad("unterminated string", field)
        return data[table_off + at:end].decode("utf-8", "replace")

    sections = []
    for k, (nm, typ, flags, _, off, size, link, info, align, entsize) in enumerate(raw):
        if typ != _SHT_NOBITS:
            span(k, off, size, "sh_size")
        elif size > LIMITS.native_code_bytes:
            raise bad(f"section {k}: {size} zero bytes exceed the limit", "sh_size")
        if align > _PAGE or (align & (align - 1)):
            raise bad(f"section {k}: alignment {align} is not a power of two <= {_PAGE}",
                      "sh_addralign")
        if typ == _SHT_REL:
            raise bad(f"section {k}: REL relocations (without addend) are not used by "
                      f"LLVM's ELF64 output", "sh_type")
        sections.append(Section(k, cstr(names[4], names[5], nm, "sh_name"), typ, flags, off,
                                size, link, info, max(align, 1), entsize))
    symtabs = [s for s in sections if s.type == _SHT_SYMTAB]
    if len(symtabs) != 1:
        raise bad(f"{len(symtabs)} symbol tables (expected 1)", "SHT_SYMTAB")
    st = symtabs[0]
    if st.entsize != 24 or st.size % 24 or st.link >= shnum \
            or sections[st.link].type != _SHT_STRTAB:
        raise bad("malformed symbol table", "SHT_SYMTAB")
    strtab = sections[st.link]
    symbols = []
    for k in range(st.size // 24):
        nm, info, _, shndx, value, _ = struct.unpack_from("<IBBHQQ", data, st.offset + 24 * k)
        if shndx != _SHN_UNDEF and shndx < _SHN_LORESERVE and shndx >= shnum:
            raise bad(f"symbol {k}: section index {shndx} >= {shnum}", "st_shndx")
        if shndx == _SHN_COMMON:
            raise bad(f"symbol {k}: COMMON symbols are not supported", "st_shndx")
        symbols.append(Symbol(cstr(strtab.offset, strtab.size, nm, "st_name") if nm else "",
                              info >> 4, info & 15, shndx, value))
    relocations: dict[int, list] = {}
    known = _KNOWN[machine]
    for s in sections:
        if s.type != _SHT_RELA:
            continue
        if s.entsize != 24 or s.size % 24 or s.info >= shnum or s.link != st.index:
            raise bad(f"relocation section {s.index} ({s.name}) is malformed", "SHT_RELA")
        target = sections[s.info]
        if not target.flags & _SHF_ALLOC:
            continue          # .eh_frame, debug info: not loaded
        relocs = []
        for k in range(s.size // 24):
            off, info, addend = struct.unpack_from("<QQq", data, s.offset + 24 * k)
            typ, sym = info & 0xFFFFFFFF, info >> 32
            if typ not in known:
                raise bad(f"relocation {k} of {target.name}: type {typ} is not one the loader "
                          f"applies (known: {', '.join(sorted(known.values()))})", "r_info")
            width = 8 if typ in (1, 24, 257, 260) else 4
            if off + width > target.size:
                raise bad(f"relocation {k} of {target.name}: offset {off} outside the "
                          f"{target.size}-byte section", "r_offset")
            if sym >= len(symbols):
                raise bad(f"relocation {k} of {target.name}: symbol {sym} >= "
                          f"{len(symbols)}", "r_info")
            relocs.append((off, typ, sym, addend))
        relocations.setdefault(target.index, []).extend(relocs)
    return ElfObject(machine, data, sections, symbols, relocations)


def undefined_symbols(data: bytes) -> set:
    """Names of the symbols the object needs from outside."""
    obj = parse(data)
    used = {sym for relocs in obj.relocations.values() for _, _, sym, _ in relocs}
    return {obj.symbols[k].name for k in used
            if obj.symbols[k].shndx == _SHN_UNDEF and obj.symbols[k].name}


# ---- loading ------------------------------------------------------------------------------
_PROT_READ, _PROT_WRITE, _PROT_EXEC = 1, 2, 4
_MAP_PRIVATE, _MAP_ANONYMOUS = 0x02, 0x20
_LIBS = ("libm.so.6", "libgcc_s.so.1")


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long)
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return libc


def resolve_external(name: str):
    """Address of a C library symbol (the process, libm, libgcc_s), or None."""
    for lib in (None, *_LIBS):
        try:
            handle = ctypes.CDLL(lib)
            return ctypes.cast(getattr(handle, name), ctypes.c_void_p).value
        except (OSError, AttributeError):
            continue
    return None


@dataclass
class LoadedCode:
    """Object code mapped into this process (kept mapped as long as this object lives)."""
    base: int
    size: int
    symbols: dict            # global defined name -> address

    def function(self, name: str, restype, *argtypes):
        return ctypes.CFUNCTYPE(restype, *argtypes)(self.symbols[name])


def load(obj: ElfObject, where: str = "object") -> LoadedCode:
    """Map, relocate and protect a parsed object; ModelFormatError for what cannot be linked
    (an unknown external symbol, a displacement out of range)."""
    def bad(msg: str, field: str):
        return ModelFormatError(msg, file=where, field=field)
    exec_s = [s for s in obj.sections if s.flags & _SHF_ALLOC and s.flags & _SHF_EXEC]
    ro_s = [s for s in obj.sections if s.flags & _SHF_ALLOC
            and not s.flags & (_SHF_EXEC | _SHF_WRITE)]
    rw_s = [s for s in obj.sections if s.flags & _SHF_ALLOC and s.flags & _SHF_WRITE
            and not s.flags & _SHF_EXEC]
    externals: dict[int, int] = {}      # symbol index -> address, for GOT and stubs
    for relocs in obj.relocations.values():
        for _, typ, sym, _ in relocs:
            s = obj.symbols[sym]
            if s.shndx == _SHN_UNDEF and sym not in externals:
                addr = resolve_external(s.name) if s.name else None
                if not addr:
                    raise bad(f"external symbol {s.name!r} is not in the C library, libm or "
                              f"libgcc_s", "symbol")
                externals[sym] = addr
    got_syms = sorted({sym for relocs in obj.relocations.values() for _, typ, sym, _ in relocs
                       if typ in _GOT_TYPES})
    stub_syms = sorted(k for k in externals)
    # layout: [code sections | stubs] [read-only sections | GOT] [writable sections]
    where_of: dict[int, int] = {}
    at = 0

    def place(group: list) -> None:
        nonlocal at
        for s in group:
            at = -(-at // s.align) * s.align
            where_of[s.index] = at
            at += s.size
    place(exec_s)
    stub_at = -(-at // _STUB) * _STUB
    at = stub_at + _STUB * len(stub_syms)
    code_end = at = -(-at // _PAGE) * _PAGE
    place(ro_s)
    got_at = -(-at // 8) * 8
    at = got_at + 8 * len(got_syms)
    ro_end = at = -(-at // _PAGE) * _PAGE
    place(rw_s)
    total = max(-(-at // _PAGE) * _PAGE, _PAGE)
    if total > 4 * LIMITS.native_code_bytes:
        raise bad(f"the loaded image would take {total} bytes", "sh_size")
    libc = _libc()
    base = libc.mmap(None, total, _PROT_READ | _PROT_WRITE, _MAP_PRIVATE | _MAP_ANONYMOUS, -1, 0)
    if base in (None, ctypes.c_void_p(-1).value):
        raise MemoryError(f"{where}: mmap of {total} bytes failed (errno {ctypes.get_errno()})")
    image = bytearray(total)
    for s in exec_s + ro_s + rw_s:
        if s.type != _SHT_NOBITS:
            image[where_of[s.index]:where_of[s.index] + s.size] = \
                obj.data[s.offset:s.offset + s.size]
    stubs = {sym: base + stub_at + _STUB * k for k, sym in enumerate(stub_syms)}
    for sym, addr in stubs.items():
        image[addr - base:addr - base + _STUB] = _stub(obj.machine, externals[sym])
    got = {sym: base + got_at + 8 * k for k, sym in enumerate(got_syms)}

    def address(sym: int) -> int:
        s = obj.symbols[sym]
        if s.shndx == _SHN_UNDEF:
            return externals[sym]
        if s.shndx == _SHN_ABS:
            return s.value
        if s.shndx not in where_of:
            raise bad(f"symbol {s.name!r} lies in section {s.shndx}, which is not loaded",
                      "st_shndx")
        if s.value > obj.sections[s.shndx].size:
            raise bad(f"symbol {s.name!r} at {s.value} beyond its section", "st_value")
        return base + where_of[s.shndx] + s.value
    for sym, slot in got.items():
        struct.pack_into("<Q", image, slot - base, address(sym))
    for sec, relocs in obj.relocations.items():
        if sec not in where_of:
            continue
        for k, (off, typ, sym, addend) in enumerate(relocs):
            p = base + where_of[sec] + off
            target = stubs.get(sym) if typ in _CALL_TYPES and sym in stubs else address(sym)
            try:
                _apply(obj.machine, image, p - base, p, typ, target, addend, got.get(sym))
            except ValueError as e:
                raise bad(f"relocation {k} of {obj.sections[sec].name}: {e}", "r_addend") \
                    from None
    ctypes.memmove(base, bytes(image), total)
    if obj.machine == EM_AARCH64:
        _flush_icache(base, code_end)
    for start, end, prot in ((0, code_end, _PROT_READ | _PROT_EXEC),
                             (code_end, ro_end, _PROT_READ),
                             (ro_end, total, _PROT_READ | _PROT_WRITE)):
        if end > start and libc.mprotect(base + start, end - start, prot) != 0:
            raise OSError(ctypes.get_errno(), f"{where}: mprotect failed")
    symbols = {}
    for s in obj.symbols:
        if s.name and s.bind != 0 and s.shndx in where_of:
            symbols[s.name] = base + where_of[s.shndx] + s.value
    return LoadedCode(base, total, symbols)


def map_code(code: bytes) -> int:
    """Address of `code` copied into a fresh read+execute mapping (kept for the process)."""
    libc = _libc()
    size = max(-(-len(code) // _PAGE) * _PAGE, _PAGE)
    base = libc.mmap(None, size, _PROT_READ | _PROT_WRITE, _MAP_PRIVATE | _MAP_ANONYMOUS, -1, 0)
    if base in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap failed")
    ctypes.memmove(base, code, len(code))
    if libc.mprotect(base, size, _PROT_READ | _PROT_EXEC) != 0:
        raise OSError(ctypes.get_errno(), "mprotect failed")
    return base


def _stub(machine: int, addr: int) -> bytes:
    if machine == EM_X86_64:        # jmp *0(%rip); .quad addr
        return b"\xff\x25\x00\x00\x00\x00" + struct.pack("<Q", addr) + b"\xcc\xcc"
    # ldr x16, #8; br x16; .quad addr
    return struct.pack("<II", 0x58000050, 0xD61F0200) + struct.pack("<Q", addr)


def _fits(v: int, bits: int) -> bool:
    return -(1 << (bits - 1)) <= v < (1 << (bits - 1))


def _apply(machine: int, img: bytearray, at: int, p: int, typ: int, s: int, a: int,
           got: int | None) -> None:
    """Write one relocation at image offset `at` (address p); s: symbol / stub address."""
    def put32(v: int) -> None:
        if not _fits(v, 32):
            raise ValueError(f"displacement {v} does not fit 32 bits")
        struct.pack_into("<i", img, at, v)
    if typ in _GOT_TYPES and got is None:
        raise ValueError("GOT relocation without a GOT entry")
    if machine == EM_X86_64:
        if typ == 1:
            struct.pack_into("<Q", img, at, (s + a) & (2**64 - 1))
        elif typ in (2, 4):
            put32(s + a - p)
        elif typ == 24:
            struct.pack_into("<q", img, at, s + a - p)
        else:
            put32(got + a - p)
        return
    insn = struct.unpack_from("<I", img, at)[0]
    if typ == 257:
        struct.pack_into("<Q", img, at, (s + a) & (2**64 - 1))
        return
    if typ == 260:
        struct.pack_into("<q", img, at, s + a - p)
        return
    if typ == 261:
        put32(s + a - p)
        return
    if typ in (275, 311):
        dest = (s + a) if typ == 275 else got
        page = ((dest & ~0xFFF) - (p & ~0xFFF)) >> 12
        if not _fits(page, 21):
            raise ValueError(f"ADRP page offset {page} does not fit 21 bits")
        insn = (insn & ~0x60FFFFE0) | ((page & 3) << 29) | (((page >> 2) & 0x7FFFF) << 5)
    elif typ in (277, 278, 284, 285, 286, 299, 312):
        val = (got if typ == 312 else s + a) & 0xFFF
        shift = {277: 0, 278: 0, 284: 1, 285: 2, 286: 3, 299: 4, 312: 3}[typ]
        if val & ((1 << shift) - 1):
            raise ValueError(f"low 12 bits {val:#x} not aligned to {1 << shift} bytes")
        insn = (insn & ~(0xFFF << 10)) | ((val >> shift) << 10)
    else:                                 # CALL26 / JUMP26
        off = s + a - p
        if off & 3 or not _fits(off, 28):
            raise ValueError(f"branch offset {off} out of the +-128 MB range")
        insn = (insn & 0xFC000000) | ((off >> 2) & 0x3FFFFFF)
    struct.pack_into("<I", img, at, insn & 0xFFFFFFFF)


def _flush_icache(base: int, size: int) -> None:
    """Make freshly written code visible to instruction fetch (Arm caches are not coherent):
    libgcc's __clear_cache when the process has it; otherwise rely on the kernel, which
    synchronises the caches when mprotect makes the pages executable (arm64
    __sync_icache_dcache)."""
    addr = resolve_external("__clear_cache")
    if addr:
        ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(addr)(base, base + size)
