"""The targets `edgeseq compile --target` knows, one table: LLVM triple, CPU and features to
compile with, and the CPU features the loader must find on the running machine before it
calls the code (x86: /proc/cpuinfo flag names; aarch64: HWCAP bit names, runtime/native/cpu.py).

`native` is resolved at compile time to the compiling machine's CPU (see `native_target`).
"""
from __future__ import annotations

from dataclasses import dataclass

X86 = "x86_64-unknown-linux-gnu"
ARM64 = "aarch64-unknown-linux-gnu"

_V2 = ("cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3")
_V3 = _V2 + ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave")
_V4 = _V3 + ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")


@dataclass(frozen=True)
class Target:
    """One compilation target."""
    name: str
    triple: str
    cpu: str
    features: str            # LLVM feature string (added to what `cpu` implies)
    requires: tuple          # CPU features the code may use, checked at load

    @property
    def arch(self) -> str:
        """Machine name as platform.machine() says it."""
        return self.triple.split("-")[0]


# NOTE: crypto/aes/sha are turned off on Arm: the Raspberry Pi 4's Cortex-A72 lacks them, and
# float kernels never need them; the a76 code may use dot product, fp16 arithmetic and LSE
# atomics (the MemInfo reference counts), so a Cortex-A72 must refuse it
TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("x86-64-v2", X86, "x86-64-v2", "", _V2),
    Target("x86-64-v3", X86, "x86-64-v3", "", _V3),
    Target("x86-64-v4", X86, "x86-64-v4", "", _V4),
    Target("aarch64", ARM64, "generic", "+neon,+fp-armv8,-crypto,-aes,-sha2", ("fp", "asimd")),
    Target("cortex-a72", ARM64, "cortex-a72", "+neon,+fp-armv8,-crypto,-aes,-sha2",
           ("fp", "asimd")),
    Target("cortex-a76", ARM64, "cortex-a76", "-crypto,-aes,-sha2",
           ("fp", "asimd", "atomics", "fphp", "asimdhp", "asimdrdm", "lrcpc", "dcpop",
            "asimddp")),
)}
NAMES = ("native", *TARGETS)

# LLVM x86 feature names -> /proc/cpuinfo flags, for the instruction-set features a `native`
# build may use (a flag outside this table is a tuning or OS feature, not an instruction)
_X86_FLAGS = {
    "sse3": "pni", "ssse3": "ssse3", "sse4.1": "sse4_1", "sse4.2": "sse4_2", "popcnt": "popcnt",
    "cx16": "cx16", "sahf": "lahf_lm", "avx": "avx", "avx2": "avx2", "bmi": "bmi1",
    "bmi2": "bmi2", "f16c": "f16c", "fma": "fma", "lzcnt": "abm", "movbe": "movbe",
    "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512cd": "avx512cd",
    "avx512dq": "avx512dq", "avx512vl": "avx512vl", "avx512vnni": "avx512_vnni",
    "avx512bf16": "avx512_bf16", "avx512vbmi": "avx512vbmi", "avx512vbmi2": "avx512_vbmi2",
    "avx512ifma": "avx512ifma", "avx512bitalg": "avx512_bitalg",
    "avx512vpopcntdq": "avx512_vpopcntdq", "avx512fp16": "avx512_fp16", "avxvnni": "avx_vnni",
    "fma4": "fma4", "xop": "xop", "aes": "aes", "pclmul": "pclmulqdq", "sha": "sha_ni",
    "vaes": "vaes", "vpclmulqdq": "vpclmulqdq", "gfni": "gfni", "adx": "adx",
    "xsave": "xsave", "rdrnd": "rdrand", "rdseed": "rdseed",
}
# LLVM AArch64 feature names -> HWCAP names
_ARM_FLAGS = {"fp-armv8": "fp", "neon": "asimd", "crc": "crc32", "lse": "atomics",
              "fullfp16": "fphp", "rdm": "asimdrdm", "rcpc": "lrcpc", "dotprod": "asimddp",
              "aes": "aes", "sha2": "sha2", "sve": "sve"}


def native_target() -> Target:
    """The compiling machine's CPU as a Target (needs llvmlite: compile time only)."""
    import platform

    from llvmlite import binding as llvm
    triple = llvm.get_process_triple()
    cpu = llvm.get_host_cpu_name()
    feats = llvm.get_host_cpu_features()
    on = sorted(k for k, v in feats.items() if v)
    table = _X86_FLAGS if platform.machine() == "x86_64" else _ARM_FLAGS
    requires = tuple(sorted({table[f] for f in on if f in table}))
    return Target("native", triple, cpu, feats.flatten(), requires)


def resolve(name: str) -> Target:
    """The Target named `name` (ValueError listing the names when unknown)."""
    if name == "native":
        return native_target()
    t = TARGETS.get(name)
    if t is None:
        raise ValueError(f"unknown target {name!r}; known: {', '.join(NAMES)}")
    return t
