"""tools/cpuid_mask.py: with the mask installed, the CPUID instruction (edgeseq's own stub,
runtime/native/cpu.py) reports no AVX-512 / VNNI while AVX2 stays, in a fresh process (the
mask is per thread and cannot be taken back safely once libraries have read it)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))
import cpuid_mask  # noqa: E402

sys.path.remove(str(TOOLS))

WHY = cpuid_mask.available()


@pytest.mark.skipif(WHY is not None, reason=f"platform: {WHY} (the mask needs Linux CPUID "
                                             f"faulting on x86-64)")
def test_masked_cpuid_reports_avx2_without_avx512_or_vnni():
    code = (f"import sys; sys.path.insert(0, {str(TOOLS)!r}); import cpuid_mask\n"
            "before = cpuid_mask.leaf7(); cpuid_mask.install(); after = cpuid_mask.leaf7()\n"
            "print(*before, *after, cpuid_mask.handler_installed())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    *vals, ours = out.stdout.split()
    (b0, c0, d0, a0), (b1, c1, d1, a1) = (tuple(map(int, vals[i:i + 4])) for i in (0, 4))
    assert ours == "True"
    assert b1 >> 5 & 1 and b1 >> 5 & 1 == b0 >> 5 & 1            # AVX2 kept
    for reg, (leaf, sub, idx) in zip((b1, c1, d1, a1), ((7, 0, 1), (7, 0, 2), (7, 0, 3),
                                                          (7, 1, 0))):
        assert all(not reg >> bit & 1 for bit in cpuid_mask.MASKED[(leaf, sub, idx)])
    # nothing else changed
    assert b1 == b0 & ~sum(1 << b for b in cpuid_mask.MASKED[(7, 0, 1)])
    assert c1 == c0 & ~sum(1 << b for b in cpuid_mask.MASKED[(7, 0, 2)])
