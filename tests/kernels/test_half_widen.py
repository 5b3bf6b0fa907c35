"""float16 weights widen exactly on every CPU, including x86 without F16C, where LLVM's
`fpext half` would call `__extendhfsf2`, a symbol no Numba JIT links (the process aborted)."""
import os
import subprocess
import sys
import textwrap

import numpy as np

CHECK = textwrap.dedent("""
    import numpy as np
    from numba import njit
    from edgeseq.runtime.kernels.quantized import widen

    @njit
    def widen_all(u):
        out = np.empty(u.shape[0], np.float32)
        for i in range(u.shape[0]):
            out[i] = widen(u[i])
        return out

    u = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    got = widen_all(u)
    want = u.view(np.float16).astype(np.float32)     # numpy's conversion, independent
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))
    print("ok")
""")


def _run(env_extra: dict, tmp_path) -> None:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), **env_extra)
    r = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


def test_every_half_widens_exactly_without_f16c(tmp_path):
    _run({"NUMBA_CPU_NAME": "x86-64", "NUMBA_CPU_FEATURES": "+sse,+sse2,+cx8,+fxsr,+mmx"},
         tmp_path)


def test_every_half_widens_exactly_on_this_cpu(tmp_path):
    _run({}, tmp_path)


def test_numpy_agrees_with_the_bit_layout():
    # the independent side of the check above: 1.0, the smallest subnormal, -inf
    assert np.array([0x3C00, 0x0001, 0xFC00], np.uint16).view(np.float16).astype(
        np.float32).tolist() == [1.0, 2.0 ** -24, -np.inf]
