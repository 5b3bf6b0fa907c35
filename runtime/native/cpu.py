"""What the running CPU offers, in the names runtime/native/targets.py requires: on x86-64
the flags of /proc/cpuinfo; on aarch64 the HWCAP bits the kernel passes to the process
(`getauxval(AT_HWCAP)`, which qemu-user sets from QEMU_CPU, whereas its /proc/cpuinfo shows
the host's). Read once per process."""
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
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("flags"):
                        return frozenset(line.split(":", 1)[1].split())
        except OSError:
            pass
    return frozenset()


def missing(arch: str, requires) -> list:
    """Features of `requires` this CPU lacks (["<arch> CPU"] when the machine differs)."""
    if arch != machine():
        return [f"an {arch} CPU"]
    have = features()
    return [f for f in requires if f not in have]
