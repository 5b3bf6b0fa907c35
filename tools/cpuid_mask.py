"""Make this process see an AVX2-only x86 CPU: CPUID reports no AVX-512, no AVX512-VNNI, no
AVX-VNNI and no AMX, so libraries that dispatch on CPUID (onnxruntime's MLAS, LLVM's host
detection, edgeseq's own `runtime/native/cpu.py`) pick their AVX2 code.

    import cpuid_mask; cpuid_mask.install()     # before importing onnxruntime

How: Linux CPUID faulting (`cpuid_fault` in /proc/cpuinfo). `arch_prctl(ARCH_SET_CPUID, 0)`
makes the CPUID instruction raise SIGSEGV in this thread and in the threads and processes it
creates later (execve resets it). A native SIGSEGV handler (LLVM IR with inline asm,
compiled by llvmlite's MCJIT: no C compiler needed; a Python handler cannot resume a
synchronous fault) sees the 0F A2 opcode at RIP, turns CPUID back on, executes it with the
faulting EAX/ECX, turns it off again, clears the feature bits of `MASKED`, writes EAX..EDX
into the saved context and steps RIP over the instruction. Any other SIGSEGV resets the
default action and returns, so the fault repeats and kills the process as it would have.

Threads that already exist keep the real CPUID: install before anything starts threads.
A benchmark tool, not a runtime feature (edgeseq itself never imports it).
"""
from __future__ import annotations

import ctypes
import signal

ARCH_SET_CPUID = 0x1012
SYS_ARCH_PRCTL = 158
SYS_RT_SIGACTION = 13
SA_SIGINFO = 4

# (leaf, subleaf, register index eax/ebx/ecx/edx) -> bits CPUID stops reporting
MASKED = {
    # AVX512 F DQ IFMA PF ER CD BW VL
    (7, 0, 1): (16, 17, 21, 26, 27, 28, 30, 31),
    # AVX512 VBMI VBMI2 VNNI BITALG VPOPCNTDQ
    (7, 0, 2): (1, 6, 11, 12, 14),
    # AVX512 4VNNIW 4FMAPS VP2INTERSECT, AMX-BF16, AVX512-FP16, AMX-TILE, AMX-INT8
    (7, 0, 3): (2, 3, 8, 22, 23, 24, 25),
    # AVX-VNNI, AVX512-BF16, AMX-FP16, AVX-IFMA
    (7, 1, 0): (4, 5, 21, 23),
    # AVX-VNNI-INT8, AVX-NE-CONVERT, AMX-COMPLEX, AVX-VNNI-INT16, AVX10
    (7, 1, 3): (4, 5, 8, 10, 19),
}

# ucontext_t on x86-64 Linux: uc_flags, uc_link, uc_stack (24 bytes), then mcontext gregs[]
_GREGS = 40
_REG = {"rbx": 11, "rdx": 12, "rax": 13, "rcx": 14, "rip": 16}


def _handler_ir() -> str:
    """LLVM IR of `void handler(i32 sig, i8* info, i8* ucontext)`."""
    def greg(name: str) -> str:
        return f"%{name}.p = getelementptr i8, i8* %uc, i64 {_GREGS + 8 * _REG[name]}\n" \
               f"  %{name}.q = bitcast i8* %{name}.p to i64*\n"

    masks = []
    for reg, name in enumerate(("a", "b", "c", "d")):
        lines = []
        for sub in (0, 1):
            keep = ~sum(1 << b for b in MASKED.get((7, sub, reg), ())) & 0xFFFFFFFF
            lines.append(f"  %{name}.s{sub} = select i1 %is7.{sub}, i32 {keep}, i32 -1")
        masks.append("\n".join(lines) + f"\n  %{name}.k = and i32 %{name}.s0, %{name}.s1\n"
                     f"  %{name}.m = and i32 %{name}.r, %{name}.k\n"
                     f"  %{name}.z = zext i32 %{name}.m to i64\n"
                     f"  store i64 %{name}.z, i64* %r{name}x.q\n")
    toggle = ('call i64 asm sideeffect "syscall", "={{ax}},{{ax}},{{di}},{{si}},~{{rcx}},'
              '~{{r11}},~{{memory}}"(i64 ' + str(SYS_ARCH_PRCTL) + ', i64 ' +
              str(ARCH_SET_CPUID) + ', i64 {})')
    return f"""
define void @handler(i32 %sig, i8* %info, i8* %uc) {{
entry:
  {greg("rip")}  %rip = load i64, i64* %rip.q
  %op = inttoptr i64 %rip to i16*
  %opcode = load volatile i16, i16* %op, align 1
  %is_cpuid = icmp eq i16 %opcode, 41487
  br i1 %is_cpuid, label %emulate, label %other
other:
  %act = alloca [4 x i64]
  %actp = bitcast [4 x i64]* %act to i8*
  call void @llvm.memset.p0i8.i64(i8* %actp, i8 0, i64 32, i1 false)
  %acti = ptrtoint [4 x i64]* %act to i64
  %ignored = call i64 asm sideeffect "syscall", "={{ax}},{{ax}},{{di}},{{si}},{{dx}},{{r10}},~{{rcx}},~{{r11}},~{{memory}}"(i64 {SYS_RT_SIGACTION}, i64 {int(signal.SIGSEGV)}, i64 %acti, i64 0, i64 8)
  ret void
emulate:
  {greg("rax")}  {greg("rbx")}  {greg("rcx")}  {greg("rdx")}  %eax64 = load i64, i64* %rax.q
  %ecx64 = load i64, i64* %rcx.q
  %leaf = trunc i64 %eax64 to i32
  %subleaf = trunc i64 %ecx64 to i32
  %on = {toggle.format(1)}
  %r = call {{i32, i32, i32, i32}} asm sideeffect "cpuid", "={{ax}},={{bx}},={{cx}},={{dx}},{{ax}},{{cx}}"(i32 %leaf, i32 %subleaf)
  %off = {toggle.format(0)}
  %a.r = extractvalue {{i32, i32, i32, i32}} %r, 0
  %b.r = extractvalue {{i32, i32, i32, i32}} %r, 1
  %c.r = extractvalue {{i32, i32, i32, i32}} %r, 2
  %d.r = extractvalue {{i32, i32, i32, i32}} %r, 3
  %is7 = icmp eq i32 %leaf, 7
  %sub0 = icmp eq i32 %subleaf, 0
  %sub1 = icmp eq i32 %subleaf, 1
  %is7.0 = and i1 %is7, %sub0
  %is7.1 = and i1 %is7, %sub1
{"".join(masks)}  %next = add i64 %rip, 2
  store i64 %next, i64* %rip.q
  ret void
}}
declare void @llvm.memset.p0i8.i64(i8*, i8, i64, i1)
"""


class _Sigaction(ctypes.Structure):             # glibc's struct sigaction on x86-64
    _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16),
                ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]


_KEEP: list = []                                # the JIT engine must outlive the handler


def available() -> str | None:
    """None when CPUID faulting can be used here, else why not."""
    import platform
    if platform.machine() != "x86_64":
        return f"CPUID faulting is x86-64 only (this is {platform.machine()})"
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")),
                         [])
    except OSError as e:
        return f"cannot read /proc/cpuinfo: {e}"
    if "cpuid_fault" not in flags:
        return "this CPU/kernel offers no CPUID faulting (no cpuid_fault in /proc/cpuinfo)"
    return None


def install() -> None:
    """Install the SIGSEGV handler and turn CPUID faulting on for this thread (and the
    threads it creates from now on). Raises OSError where that is impossible."""
    why = available()
    if why:
        raise OSError(why)
    import llvmlite.binding as llvm
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    llvm.initialize_native_asmparser()         # the inline asm
    mod = llvm.parse_assembly(_handler_ir())
    mod.verify()
    tm = llvm.Target.from_default_triple().create_target_machine(codemodel="default")
    engine = llvm.create_mcjit_compiler(mod, tm)
    engine.finalize_object()
    _KEEP.append((engine, mod))
    libc = ctypes.CDLL(None, use_errno=True)
    act = _Sigaction(handler=engine.get_function_address("handler"), flags=SA_SIGINFO)
    if libc.sigaction(int(signal.SIGSEGV), ctypes.byref(act), None) != 0:
        raise OSError(ctypes.get_errno(), "sigaction(SIGSEGV) failed")
    libc.syscall.restype = ctypes.c_long
    if libc.syscall(ctypes.c_long(SYS_ARCH_PRCTL), ctypes.c_long(ARCH_SET_CPUID),
                    ctypes.c_long(0)) != 0:
        raise OSError(ctypes.get_errno(), "arch_prctl(ARCH_SET_CPUID, 0) failed")


def handler_installed() -> bool:
    """Whether SIGSEGV still goes to this module's handler (a library imported later may
    have replaced it: CPUID would then crash the process instead of being masked)."""
    if not _KEEP:
        return False
    libc = ctypes.CDLL(None)
    old = _Sigaction()
    libc.sigaction(int(signal.SIGSEGV), None, ctypes.byref(old))
    return old.handler == _KEEP[0][0].get_function_address("handler")


def leaf7() -> tuple:
    """(EBX, ECX, EDX of leaf 7 subleaf 0, EAX of subleaf 1) as the CPUID instruction reports
    them in this thread (masked once `install` ran)."""
    from edgeseq.runtime.native.cpu import _CPUID_CODE
    from edgeseq.runtime.native.elf import map_code
    fn = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32,
                          ctypes.POINTER(ctypes.c_uint32))(map_code(_CPUID_CODE))
    out = (ctypes.c_uint32 * 4)()
    fn(7, 0, out)
    b, c, d = out[1], out[2], out[3]
    fn(7, 1, out)
    return b, c, d, out[0]


if __name__ == "__main__":
    before = leaf7()
    install()
    after = leaf7()
    print("leaf 7: ebx ecx edx, leaf 7.1 eax")
    print("real  ", " ".join(f"{v:08x}" for v in before))
    print("masked", " ".join(f"{v:08x}" for v in after))
