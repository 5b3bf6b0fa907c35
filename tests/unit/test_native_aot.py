"""Ahead-of-time compiled artifacts (edgeseq compile, runtime/aot, runtime/native): the demo
classifier compiled once for this machine and for cortex-a72; its native code must match the
float64 reference and the JIT runtime, run in a fresh process without Numba, be used only when
asked for, and refuse tampered or hostile code before anything executes."""
from __future__ import annotations

import json
import platform
import shutil
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import edgeseq
from edgeseq import artifact, reference
from edgeseq.errors import ArtifactError, InputError, ModelFormatError
from edgeseq.runtime.native import elf, store

DATA = Path(edgeseq.__file__).parent / "data"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    from edgeseq import cli
    from edgeseq.converters.onnx import convert
    d = tmp_path_factory.mktemp("aot")
    src = artifact.save(convert(DATA / "demo_classifier.onnx"), d / "demo.eseq")
    out = d / "demo_native.eseq"
    assert cli.main(["compile", str(src), "-o", str(out), "--target", "native",
                     "--target", "x86-64-v3", "--target", "cortex-a72"]) == 0
    return out


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.load(DATA / "demo_test.npz")["x"][:7].astype(np.float32)


def _native(path):
    m = edgeseq.load(path, native_code=True)
    assert type(m).__name__ == "NativeModel", m.describe()
    return m


@pytest.mark.parametrize("batch", [1, 3, 7])
def test_native_matches_reference_and_jit(compiled, x, batch):
    from edgeseq.runtime import Model
    m = _native(compiled)
    xb = x[:batch]
    got = m.run({"x": xb})["logits"]
    want = reference.run(m.graph, {"x": xb.astype(np.float64)})["logits"]
    jit = Model(artifact.load(compiled)).run({"x": xb})["logits"]
    assert got.shape == (batch, 9) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    assert np.abs(got - jit).max() <= 1e-5 * max(1.0, np.abs(jit).max())


def test_stream_in_chunks_equals_one_run(compiled, x):
    m = _native(compiled)
    whole = m.run({"x": x[:3]})["logits"]
    s = m.stream(time_axes={"x": 1})
    for lo, hi in ((0, 10), (10, 11), (11, 29)):
        last = s.push({"x": np.ascontiguousarray(x[:3, lo:hi])})["logits"]
    np.testing.assert_allclose(last, whole, atol=1e-5)


def test_fresh_process_runs_without_numba(compiled, x, tmp_path):
    np.save(tmp_path / "x.npy", x[:2])
    code = f"""
import sys, numpy as np, edgeseq
m = edgeseq.load({str(compiled)!r}, native_code=True)
y = m.run({{"x": np.load({str(tmp_path / 'x.npy')!r})}})["logits"]
np.save({str(tmp_path / 'y.npy')!r}, y)
print(sorted(k for k in ("numba", "llvmlite") if k in sys.modules))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    want = _native(compiled).run({"x": x[:2]})["logits"]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), want)


def test_cli_run_native_and_inspect(compiled, x, tmp_path, capsys):
    from edgeseq import cli
    np.save(tmp_path / "x.npy", x[:2])
    assert cli.main(["run", str(compiled), "--native", "--input", f"x={tmp_path / 'x.npy'}",
                     "--output-dir", str(tmp_path)]) == 0
    assert "on the native code" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(tmp_path / "logits.npy"),
                                  _native(compiled).run({"x": x[:2]})["logits"])
    assert cli.main(["inspect", str(compiled)]) == 0
    out = capsys.readouterr().out
    assert "native:" in out and "cortex-a72: aarch64-unknown-linux-gnu cpu cortex-a72" in out


def test_native_code_only_when_asked_or_listed(compiled, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert type(edgeseq.load(compiled)).__name__ == "Model"
    assert type(edgeseq.load(compiled, native_code=False)).__name__ == "Model"
    (tmp_path / "edgeseq").mkdir()
    checksum = artifact.read_info(compiled).checksum
    (tmp_path / "edgeseq" / "trusted.txt").write_text(f"# mine\n{checksum}\n")
    assert type(edgeseq.load(compiled)).__name__ == "NativeModel"


def test_inputs_are_checked_before_the_call(compiled, x):
    m = _native(compiled)
    with pytest.raises(InputError, match="dim 2 must be 12"):
        m.run({"x": np.zeros((2, 29, 11), np.float32)})
    bad = x[:1].copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        m.run({"x": bad})


def _resave(compiled: Path, out: Path, text=None, code=None) -> Path:
    """The compiled artifact written again through artifact.save (a valid checksum) with its
    native metadata text and/or native-target object replaced."""
    art = artifact.read(compiled)
    tensors = dict(art.native)
    if code is not None:
        tensors[f"{store.PREFIX}code/native"] = np.frombuffer(code, np.uint8)
    return artifact.save(art.graph, out, native=(text or art.native_text, tensors))


def _native_code(compiled: Path) -> bytes:
    return artifact.read(compiled).native[f"{store.PREFIX}code/native"].tobytes()


def test_flipped_code_byte_is_refused_by_the_checksum(compiled, tmp_path):
    info = artifact.read_info(compiled)
    raw = bytearray(compiled.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    start = header[f"{store.PREFIX}code/native"]["data_offsets"][0]
    raw[8 + n + start + 100] ^= 0xFF
    bad = tmp_path / "flipped.eseq"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        edgeseq.load(bad, native_code=True)
    assert info.checksum.startswith("sha256:")


def test_edited_native_metadata_is_refused_by_the_checksum(compiled, tmp_path):
    raw = compiled.read_bytes()
    assert raw.count(b"cortex-a72") >= 1
    bad = tmp_path / "edited.eseq"
    bad.write_bytes(raw.replace(b"cortex-a72", b"cortex-a99"))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        edgeseq.load(bad, native_code=True)


def test_code_not_matching_its_own_hash_is_refused(compiled, tmp_path):
    code = bytearray(_native_code(compiled))
    code[200] ^= 0xFF
    bad = _resave(compiled, tmp_path / "rehashed.eseq", code=bytes(code))
    with pytest.raises(ModelFormatError, match="code/native.*|refused") as e:
        edgeseq.load(bad, native_code=True)
    assert str(bad) in str(e.value) and "sha256" in str(e.value)


def _hostile(code: bytes, what: str) -> bytes:
    b = bytearray(code)
    shoff, = struct.unpack_from("<Q", b, 0x28)
    shnum, = struct.unpack_from("<H", b, 0x3C)
    secs = [struct.unpack_from("<IIQQQQIIQQ", b, shoff + 64 * k) for k in range(shnum)]
    if what == "section size":
        k = next(i for i, s in enumerate(secs) if s[2] & 4)        # an executable section
        struct.pack_into("<Q", b, shoff + 64 * k + 0x20, 1 << 60)
    elif what in ("relocation offset", "relocation type"):
        k = next(i for i, s in enumerate(secs) if s[1] == 4 and secs[s[7]][2] & 2)
        off = secs[k][4]
        if what == "relocation offset":
            struct.pack_into("<Q", b, off, 1 << 40)
        else:
            info, = struct.unpack_from("<Q", b, off + 8)
            struct.pack_into("<Q", b, off + 8, (info & ~0xFFFFFFFF) | 37)
    elif what == "truncated":
        return bytes(b[:len(b) // 2])
    return bytes(b)


@pytest.mark.parametrize("what, field", [("section size", "sh_size"),
                                         ("relocation offset", "r_offset"),
                                         ("relocation type", "r_info"),
                                         ("truncated", "e_shoff")])
def test_hostile_object_is_refused_before_anything_runs(compiled, tmp_path, what, field):
    hostile = _hostile(_native_code(compiled), what)
    with pytest.raises(ModelFormatError, match=field):
        elf.parse(hostile, "x.o")
    # the same object with a matching sha256 in a valid artifact: refused by the loader
    art = artifact.read(compiled)
    meta = json.loads(art.native_text)
    for t in meta["targets"]:
        if t["name"] == "native":
            t["sha256"], t["bytes"] = store.code_target(
                type("T", (), {"name": "native", "triple": t["triple"], "cpu": t["cpu"],
                               "features": t["features"], "requires": t["requires"]}),
                hostile).sha256, len(hostile)
    bad = _resave(compiled, tmp_path / "hostile.eseq", text=json.dumps(meta), code=hostile)
    with pytest.raises(ModelFormatError, match=field) as e:
        edgeseq.load(bad, native_code=True)
    assert str(bad) in str(e.value)


def test_missing_cpu_feature_falls_back_to_jit_with_a_note(compiled, tmp_path):
    meta = json.loads(artifact.read(compiled).native_text)
    for t in meta["targets"]:
        t["requires"] = list(t["requires"]) + ["no_such_feature"]
    bad = _resave(compiled, tmp_path / "future_cpu.eseq", text=json.dumps(meta))
    with pytest.warns(UserWarning, match="native code: no target for this CPU"):
        m = edgeseq.load(bad, native_code=True)
    assert type(m).__name__ == "Model"
    assert "native needs no_such_feature" in m.describe()
    assert "cortex-a72 needs an aarch64 CPU" in m.describe()


def test_an_artifact_without_code_falls_back_and_says_so(tmp_path):
    from edgeseq.converters.onnx import convert
    plain = artifact.save(convert(DATA / "demo_classifier.onnx"), tmp_path / "plain.eseq")
    with pytest.warns(UserWarning, match="carries none"):
        m = edgeseq.load(plain, native_code=True)
    assert "carries none" in m.describe()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        edgeseq.load(plain)             # the default: no note, no warning


def test_aarch64_object_relocates(compiled):
    art = artifact.read(compiled)
    code = art.native[f"{store.PREFIX}code/cortex-a72"].tobytes()
    obj = elf.parse(code, "a72.o")
    assert elf.MACHINES[obj.machine] == "aarch64"
    assert elf.undefined_symbols(code) <= {"malloc", "free", "memcpy", "memset", "memmove"}
    loaded = elf.load(obj, "a72.o")       # mapped and relocated, never called on x86
    assert {"edgeseq_entry", "edgeseq_release"} <= set(loaded.symbols)


def _targets(*names):
    from edgeseq.runtime.native.targets import TARGETS
    return [store.CodeTarget(t.name, t.triple, t.cpu, t.features, t.requires, "sha256:0", 1)
            for t in (TARGETS[n] for n in names)]


def test_target_choice_follows_the_cpu_features(monkeypatch):
    from edgeseq.runtime.native import cpu, loader
    from edgeseq.runtime.native.targets import TARGETS
    targets = _targets("x86-64-v2", "x86-64-v3", "x86-64-v4", "cortex-a72", "cortex-a76")
    # an AVX2 machine without AVX-512
    monkeypatch.setattr(cpu, "machine", lambda: "x86_64")
    monkeypatch.setattr(cpu, "features", lambda: frozenset(TARGETS["x86-64-v3"].requires))
    best, why = loader.choose(targets)
    assert best.name == "x86-64-v3"
    assert any(w.startswith("x86-64-v4 needs avx512f") for w in why)
    assert "cortex-a76 needs an aarch64 CPU" in why
    # a Cortex-A72 as its HWCAP says (qemu -cpu cortex-a72): no dot product, no LSE
    monkeypatch.setattr(cpu, "machine", lambda: "aarch64")
    monkeypatch.setattr(cpu, "features", lambda: frozenset(
        {"fp", "asimd", "evtstrm", "crc32", "cpuid"}))
    best, why = loader.choose(targets)
    assert best.name == "cortex-a72"
    assert any(w.startswith("cortex-a76 needs atomics") and "asimddp" in w for w in why)


def test_this_cpu_reports_its_features():
    from edgeseq.runtime.native import cpu
    # x86-64: /proc/cpuinfo flags; aarch64: HWCAP bits (every AArch64 Linux CPU has these)
    want = {"x86_64": {"sse2", "sse4_2"}, "aarch64": {"fp", "asimd"}}[cpu.machine()]
    assert want <= cpu.features()


def test_calling_convention_for_other_inputs_is_refused(compiled, tmp_path):
    meta = json.loads(artifact.read(compiled).native_text)
    meta["unit"]["inputs"][0][0] = "not_x"
    bad = _resave(compiled, tmp_path / "other_inputs.eseq", text=json.dumps(meta))
    with pytest.raises(ModelFormatError, match="edgeseq.native unit"):
        edgeseq.load(bad, native_code=True)


def test_no_usable_code_without_numba_is_one_clear_error(compiled, tmp_path):
    meta = json.loads(artifact.read(compiled).native_text)
    for t in meta["targets"]:
        t["requires"] = list(t["requires"]) + ["no_such_feature"]
    bad = _resave(compiled, tmp_path / "future_cpu.eseq", text=json.dumps(meta))
    code = f"""
import importlib.abc, sys
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("numba", "llvmlite"):
            raise ModuleNotFoundError(f"No module named '{{name}}'", name=name)
sys.meta_path.insert(0, NotInstalled())
import edgeseq
try:
    edgeseq.load({str(bad)!r}, native_code=True)
except edgeseq.UnsupportedModelError as e:
    print(e)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    assert "native needs no_such_feature" in r.stdout and "which is not installed" in r.stdout


QEMU_X86 = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")


@pytest.mark.skipif(QEMU_X86 is None or platform.machine() != "x86_64",
                    reason="needs qemu-x86_64 (user mode) on an x86-64 host")
def test_emulated_avx2_cpu_takes_the_v3_code(compiled, x, tmp_path):
    """qemu-user -cpu Haswell shows the host's /proc/cpuinfo (AVX-512 here) but emulates
    CPUID without AVX-512: the loader must take x86-64-v3, never this host's native code."""
    np.save(tmp_path / "x.npy", x[:2])
    code = f"""
import numpy as np, edgeseq
m = edgeseq.load({str(compiled)!r}, native_code=True)
np.save({str(tmp_path / 'y.npy')!r}, m.run({{"x": np.load({str(tmp_path / 'x.npy')!r})}})["logits"])
print(m.target.name)
"""
    r = subprocess.run([QEMU_X86, "-cpu", "Haswell", sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    native_needs = {t.name: t.requires for t in store.parse(
        artifact.read(compiled).native_text, "x").targets}["native"]
    if "avx512f" in native_needs:
        assert r.stdout.split()[-1] == "x86-64-v3"
    want = reference.run(artifact.load(compiled), {"x": x[:2].astype(np.float64)})["logits"]
    assert np.abs(np.load(tmp_path / "y.npy") - want).max() <= 1e-4


@pytest.mark.parametrize("inputs", [
    {}, {"x": np.zeros((2, 29, 12), np.float32), "y": np.zeros(1)},
    {"x": np.zeros((29, 12), np.float32)}, {"x": np.zeros((2, 28, 12), np.float32)},
    {"x": np.zeros((2, 29, 12), np.int32)}, {"x": np.full((1, 29, 12), np.inf, np.float32)},
    {"x": "abc"}], ids=["missing", "unknown", "rank", "dim", "dtype", "inf", "string"])
def test_bad_inputs_get_the_runtime_message(compiled, inputs):
    """runtime/native/inputs.py repeats Model.check_inputs' policy: the messages must agree."""
    from edgeseq.runtime import Model
    with pytest.raises(InputError) as jit:
        Model(artifact.load(compiled), name="m").run(inputs)
    m = edgeseq.load(compiled, native_code=True, name="m")
    with pytest.raises(InputError) as native:
        m.run(inputs)
    assert str(native.value) == str(jit.value)
