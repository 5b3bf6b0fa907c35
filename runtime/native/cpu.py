"""What the running CPU offers, in the names runtime/native/targets.py requires: on x86-64
the flags of /proc/cpuinfo that the CPUID instruction confirms (qemu-user passes the host's
/proc/cpuinfo through but emulates CPUID for its -cpu; the kernel drops flags the OS does
not enable, e.g. AVX without XSAVE support); on aarch64 the HWCAP bits the kernel passes to
the process (`getauxval(AT_HWCAP)`, which qemu-user sets from QEMU_CPU). Read once per
process."""
from __future__ import annotations

import ctypes
import functools
import platform

# arch/arm64/include/uapi/asm/hwcap.h, bit -> name as /proc/cpuinfo prints it
_HWCAP = ("fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp",
          "asimdhp", "cpuid", "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop", "sha3", "sm3",
          "sm4", "asimddp", "sha512", "sve", "asimdfhm", "dit", "uscat", "ilrcpc", "flagm",
          "ssbs", "sb", "paca", "pacg")
_AT_HWCAP = 16

# /proc/cpuinfo flag -> (CPUID leaf, subleaf, register index eax/ebx/ecx/edx, bit)
_CPUID = {
    "pni": (1, 0, 2, 0), "pclmulqdq": (1, 0, 2, 1), "ssse3": (1, 0, 2, 9),
    "fma": (1, 0, 2, 12), "cx16": (1, 0, 2, 13), "sse4_1": (1, 0, 2, 19),
    "sse4_2": (1, 0, 2, 20), "movbe": (1, 0, 2, 22), "popcnt": (1, 0, 2, 23),
    "aes": (1, 0, 2, 25), "xsave": (1, 0, 2, 26), "avx": (1, 0, 2, 28), "f16c": (1, 0, 2, 29),
    "rdrand": (1, 0, 2, 30), "bmi1": (7, 0, 1, 3), "avx2": (7, 0, 1, 5), "bmi2": (7, 0, 1, 8),
    "avx512f": (7, 0, 1, 16), "avx512dq": (7, 0, 1, 17), "rdseed": (7, 0, 1, 18),
    "adx": (7, 0, 1, 19), "avx512ifma": (7, 0, 1, 21), "avx512cd": (7, 0, 1, 28),
    "sha_ni": (7, 0, 1, 29), "avx512bw": (7, 0, 1, 30), "avx512vl": (7, 0, 1, 31),
    "avx512vbmi": (7, 0, 2, 1), "avx512_vbmi2": (7, 0, 2, 6), "gfni": (7, 0, 2, 8),
    "vaes": (7, 0, 2, 9), "vpclmulqdq": (7, 0, 2, 10), "avx512_vnni": (7, 0, 2, 11),
    "avx512_bitalg": (7, 0, 2, 12), "avx512_vpopcntdq": (7, 0, 2, 14),
    "avx512_fp16": (7, 0, 3, 23), "avx_vnni": (7, 1, 0, 4), "avx512_bf16": (7, 1, 0, 5),
    "lahf_lm": (0x80000001, 0, 2, 0), "abm": (0x80000001, 0, 2, 5),
    "fma4": (0x80000001, 0, 2, 16), "xop": (0x80000001, 0, 2, 11),
}
# int cpuid(int leaf (edi), int subleaf (esi), uint32 out[4] (rdx)): push rbx; mov r8, rdx;
# mov eax, edi; mov ecx, esi; cpuid; mov [r8], eax; mov [r8+4], ebx; mov [r8+8], ecx;
# mov [r8+12], edx; pop rbx; ret
_CPUID_CODE = bytes.fromhex("534989d089f889f10fa2418900418958044189480841895"
                            "00c5bc3")


def machine() -> str:
    """platform.machine() with arm64 spelled aarch64."""
    m = platform.machine()
    return "aarch64" if m == "arm64" else m


@functools.lru_cache(maxsize=None)
def features() -> frozenset:
    """The CPU features of this machine (empty when they cannot be read)."""
    m = machine()
    if m == "aarch64":
        libc = ctypes.CDLL(None)
        libc.getauxval.restype = ctypes.c_ulong
        libc.getauxval.argtypes = (ctypes.c_ulong,)
        bits = libc.getauxval(_AT_HWCAP)
        return frozenset(n for k, n in enumerate(_HWCAP) if bits >> k & 1)
    if m == "x86_64":
        flags: frozenset = frozenset()
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("flags"):
                        flags = frozenset(line.split(":", 1)[1].split())
                        break
        except OSError:
            pass
        confirmed = _cpuid_flags()
        return frozenset(f for f in flags if f not in _CPUID or f in confirmed)
    return frozenset()


def _cpuid_flags() -> frozenset:
    """The _CPUID flags the CPUID instruction reports, run from a 33-byte stub mapped
    read+execute (empty if it cannot be mapped: every CPUID-checked flag then counts as
    absent, so no code needing one is called)."""
    from edgeseq.runtime.native.elf import map_code
    try:
        call = map_code(_CPUID_CODE)
    except OSError:
        return frozenset()
    fn = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32,
                          ctypes.POINTER(ctypes.c_uint32))(call)
    out = (ctypes.c_uint32 * 4)()
    fn(0, 0, out)
    max_leaf = out[0]
    fn(0x80000000, 0, out)
    max_ext = out[0]
    regs: dict = {}
    for leaf, sub in {(lf, sb) for lf, sb, _, _ in _CPUID.values()}:
        if (leaf <= max_leaf) if leaf < 0x80000000 else (leaf <= max_ext):
            fn(leaf, sub, out)
            regs[(leaf, sub)] = tuple(out)
    return frozenset(name for name, (leaf, sub, reg, bit) in _CPUID.items()
                     if (leaf, sub) in regs and regs[(leaf, sub)][reg] >> bit & 1)


def missing(arch: str, requires) -> list:
    """Features of `requires` this CPU lacks (["<arch> CPU"] when the machine differs)."""
    if arch != machine():
        return [f"an {arch} CPU"]
    have = features()
    return [f for f in requires if f not in have]
