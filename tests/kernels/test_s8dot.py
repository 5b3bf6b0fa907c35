"""int8-activation products (runtime/kernels/s8dot.py): the bits of the float64 reference's
integer semantics (edgeseq.reference.int8_product), every formulation this CPU can run, the
instructions each formulation compiles to on its targets (AArch64 through llvmlite's cross
back end), and the LSTM with int8 activations against the reference and onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from edgeseq.quant import activations, int8
from edgeseq.reference import INT8_ACTIVATIONS, int8_product, quantize_activations8, run
from edgeseq.runtime import Model
from edgeseq.runtime.kernels import cpu, s8dot
from edgeseq.testing import lstm_graph, random_inputs


def _quantize(v):
    n = v.shape[0]
    xq = np.zeros((n, 4 * -(-v.shape[1] // 4)), np.int8)
    xs = np.empty(n, np.float32)
    s8dot.quantize8(v, np.arange(n), n, xq, xs)
    q = xq[:, :v.shape[1]].view(np.uint8).astype(np.int64) - 128 if s8dot.OFFSET \
        else xq[:, :v.shape[1]].astype(np.int64)
    return xq, xs, q


def _vectors(rng, n, k):
    v = (rng.standard_normal((n, k)) * rng.uniform(0.01, 10, (n, 1))).astype(np.float32)
    v[0, : k // 2] = 0.0
    if n > 2:
        v[2] = 0.0                                   # a zero vector: step 1, q = 0
    return v


def test_quantize8_bits_equal_the_reference(rng):
    v = _vectors(rng, 7, 301)
    v[1, :5] = np.float32(127.5) * np.float32(0.01) * np.arange(5)      # rounding ties
    xq, xs, q = _quantize(v)
    want_q, want_s = quantize_activations8(v)
    assert np.array_equal(q, want_q) and np.array_equal(xs, want_s[:, 0])
    assert np.abs(q).max() == 127 and xs[2] == 1.0


@pytest.mark.parametrize("k_len", [6, 64, 100, 1030])
@pytest.mark.parametrize("rows,n_vec", [(1, 1), (13, 1), (70, 1), (9, 6), (39, 5)])
def test_products8_bits_equal_the_reference_in_both_row_orders(rng, k_len, rows, n_vec):
    w = rng.integers(-127, 128, (rows, k_len)).astype(np.int8)
    sc = rng.uniform(0.001, 0.1, rows).astype(np.float32)
    v = _vectors(rng, n_vec, k_len)
    p = s8dot.packed8(w, sc)
    xq, xs, _ = _quantize(v)
    want = int8_product(v, w, sc).astype(np.float32)
    for backward in (False, True):
        for accumulate in (False, True):
            out = np.full((n_vec, p.scale.shape[0]), 0.5, np.float32)
            s8dot.products8(p.blocks, p.scale, p.sums, p.groups, xq, xs, n_vec, out,
                            np.arange(n_vec), accumulate, backward)
            expect = (want + np.float32(0.5)) if accumulate else want
            assert np.array_equal(out[:, :rows], expect), (backward, accumulate)


def test_products8_extreme_operands_stay_exact():
    """|w| = |q| = 127 everywhere over 65536 columns (the packing limit): every lane and the
    total stay in int32; the avx2 pair sums stay below the int16 saturation."""
    k = s8dot.MAX_COLS
    w = np.full((3, k), 127, np.int8)
    w[1] = -127
    v = np.ones((2, k), np.float32)
    v[1] = -1.0
    p = s8dot.packed8(w, np.ones(3, np.float32))
    xq, xs, _ = _quantize(v)
    out = np.zeros((2, p.scale.shape[0]), np.float32)
    s8dot.products8(p.blocks, p.scale, p.sums, p.groups, xq, xs, 2, out, np.arange(2), False)
    assert np.array_equal(out[:, :3], int8_product(v, w, np.ones(3, np.float32)))
    assert out[0, 0] == np.float32(np.float32(127 * 127 * k) * xs[0])
    with pytest.raises(ValueError, match="at most"):
        s8dot.pack8(np.zeros((1, k + 1), np.int8))


# ---- formulations ------------------------------------------------------------------------
HOST = cpu.numba_target()
RUNNABLE = [f for f in s8dot.FORMULATIONS if f.usable(HOST) and f.max_q >= 127]   # int8 q


@pytest.mark.parametrize("form", RUNNABLE, ids=lambda f: f.name)
def test_every_runnable_formulation_gives_the_same_bits(rng, form):
    """Each formulation this CPU can execute (a fresh uncached compile of its tiles, offset
    applied the way that formulation expects) against the reference bits; w and q at ±127
    included (vpmaddubsw saturation)."""
    t41, t11 = s8dot.make_tile(form, 4, 1), s8dot.make_tile(form, 1, 1)

    @njit(cache=False)
    def run_tiles(bp, groups, xq, dst, out, scale, wsum, xs):
        t41(bp, 0, groups, xq, 0, dst, out, scale, wsum, xs, False, 0)
        t11(bp, 4, groups, xq, 0, dst, out, scale, wsum, xs, False, 0)

    w = rng.integers(-127, 128, (80, 200)).astype(np.int8)
    w[0] = 127
    w[1] = -127
    sc = rng.uniform(0.01, 0.1, 80).astype(np.float32)
    v = _vectors(rng, 1, 200)
    v[0, :] = np.abs(v[0]) + 1
    v[0, 7] = -v[0].max()
    q, step = quantize_activations8(v)
    xq = np.zeros((1, 200), np.int8)
    xq[0] = (q[0] + form.offset).astype(np.uint8).view(np.int8)
    p = s8dot.packed8(w, sc)
    out = np.zeros((1, p.scale.shape[0]), np.float32)
    run_tiles(p.blocks, p.groups, xq, np.zeros(1, np.int64), out, p.scale, p.sums,
              step[:, 0].astype(np.float32))
    assert np.array_equal(out[0, :80], int8_product(v, w, sc)[0].astype(np.float32))
    if form.instructions:                   # what this formulation must compile to
        asm = run_tiles.inspect_asm(run_tiles.signatures[0])
        assert all(i in asm for i in form.instructions), form.name


def _block_asm(form, triple, cpu_name, features=""):
    import llvmlite.binding as llvm
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    mod = llvm.parse_assembly(s8dot.block_ir(form))
    tm = llvm.Target.from_triple(triple).create_target_machine(cpu=cpu_name, features=features,
                                                               opt=3)
    mod.triple = triple
    return tm.emit_assembly(mod)


X86, ARM = "x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"
# (formulation, triple, cpu, features, instructions that must appear, that must not)
ASM_CASES = [
    ("avx512vnni", X86, "znver4", "", ("vpdpbusd", "zmm"), ("vpmaddwd",)),
    ("avxvnni", X86, "alderlake", "", ("vpdpbusd", "ymm"), ("zmm",)),
    ("avx2", X86, "haswell", "", ("vpabsb", "vpxor", "vpmaddubsw", "vpmaddwd"),
     ("vpsignb", "vpdpbusd")),
    ("neon-dotprod", ARM, "cortex-a76", "+dotprod", ("sdot",), ("smull",)),
    ("neon", ARM, "cortex-a72", "", ("smull", "sadalp"), ("sdot",)),
]


@pytest.mark.parametrize("name,triple,cpu_name,features,want,absent", ASM_CASES,
                         ids=[c[0] for c in ASM_CASES])
def test_formulation_compiles_to_its_instructions(name, triple, cpu_name, features, want,
                                                  absent):
    form = s8dot.BY_NAME[name]
    asm = _block_asm(form, triple, cpu_name, features)
    ins = " ".join(line.split()[0] if line.split()[0] != "{vex}" else line.split()[1]
                   for line in asm.splitlines() if line.startswith("\t") and
                   not line.strip().startswith(("."))) + " " + asm
    assert all(w in ins for w in want), (name, asm)
    assert not any(a in ins for a in absent), (name, asm)
    assert s8dot.choose(cpu.Target(triple, cpu_name, cpu.parse_features(
        features or _implied(cpu_name)))) is form


def _implied(cpu_name):
    """The features the chooser sees for each named CPU (as NUMBA_CPU_FEATURES would give)."""
    return {"znver4": "+avx2,+avx512f,+avx512bw,+avx512vl,+avx512vnni",
            "alderlake": "+avx2,+avxvnni", "haswell": "+avx2,+fma",
            "cortex-a76": "+neon,+dotprod", "cortex-a72": "+neon"}[cpu_name]


def test_the_host_choice_follows_numba_cpu_features(monkeypatch):
    from numba.core import config
    monkeypatch.setattr(config, "CPU_NAME", "haswell")
    monkeypatch.setattr(config, "CPU_FEATURES", "+avx2,+fma,-avx512f,-avx512vnni")
    t = cpu.numba_target()
    assert t.cpu == "haswell" and "avx512vnni" not in t.features
    if t.triple.startswith("x86_64"):
        assert s8dot.choose(t).name == "avx2"


# ---- the LSTM with int8 activations --------------------------------------------------------
def _int8_act(g):
    return activations.apply(int8.apply(g)[0], "int8")


FEATURES = [
    dict(),
    dict(direction="bidirectional", peephole=True, seq_lens=True),
    dict(direction="reverse", proj_size=7, proj_bias=True, layer_norm=True, batch_first=True),
    dict(coupled_gate="forget", cell_clip=0.5, initial_state=True),
]


@pytest.mark.parametrize("feat", FEATURES, ids=lambda f: "-".join(f) or "plain")
def test_int8_activation_lstm_matches_the_reference(rng, feat):
    """Runtime vs the reference's integer semantics: every product is bit-identical given the
    same h; the float32 cell vs float64 leaves ~1e-7, and an activation moved across a
    rounding boundary by that difference (probability ~1e-5 per element; none on these
    seeds) would show as ~1e-3. 1e-5 is met; int16 products (the wrong semantics) are not."""
    g = _int8_act(lstm_graph(rng, 6, 13, **feat))
    model = Model(g)
    assert "int8 activations for w_x/w_h" in model.describe() and s8dot.CHOSEN.name in \
        model.describe()
    for n in (1, 6):
        x = random_inputs(g, rng, 8, n)
        ref = run(g, x)
        got = model.run(x)
        assert max(float(np.max(np.abs(ref[k] - got[k]))) for k in ref) <= 1e-5
    g16 = activations.apply(g, "int16")
    err16 = max(float(np.max(np.abs(ref[k] - Model(g16).run(x)[k]))) for k in ref)
    assert err16 > 1e-4


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_int8_one_pass_path_gives_the_general_paths_bits(rng, direction):
    """Rows of one length take the one-pass int8 sequence (`quantized._plain_sequence8`);
    rows of different lengths the general step loop. Quantisation is per vector, so a row
    run alone (one-pass) has the same bits as inside a batch of mixed lengths (general)."""
    g = _int8_act(lstm_graph(rng, 6, 13, direction=direction, seq_lens=True))
    model = Model(g)
    x = random_inputs(g, rng, 8, 2)
    names = [v.name for v in g.inputs]
    xname, lname = names[0], next(n for n in names if x[n].dtype.kind == "i")
    x[lname] = np.array([8, 5], x[lname].dtype)
    mixed = model.run(x)
    for b, length in enumerate((8, 5)):
        alone = model.run({xname: x[xname][:, b:b + 1], lname: x[lname][b:b + 1]})
        for k in mixed:
            axis = 2 if k == "y" else 1
            np.testing.assert_array_equal(np.take(alone[k], [0], axis=axis),
                                          np.take(mixed[k], [b], axis=axis), err_msg=k)


def test_int8_activations_survive_the_artifact_and_the_cli(tmp_path, rng):
    from edgeseq import artifact
    from edgeseq.quant.pipeline import compress
    from edgeseq.errors import GraphError

    g, _ = compress(lstm_graph(rng, 5, 8), weights="int8", activations="int8")
    path = artifact.save(g, tmp_path / "a.eseq")
    back = artifact.load(path)
    assert back.metadata[INT8_ACTIVATIONS] == "int8"
    x = random_inputs(back, rng, 4, 1)
    np.testing.assert_array_equal(Model(back).run(x)["y"], Model(g).run(x)["y"])
    assert compress(lstm_graph(rng, 5, 8), weights="int8")[0].metadata[INT8_ACTIVATIONS] \
        == "int16"
    with pytest.raises(GraphError, match="needs weights='int8'"):
        compress(lstm_graph(rng, 5, 8), weights="fp16", activations="int8")
    with pytest.raises(GraphError, match="activations must be one of"):
        activations.apply(g, "int4")


def test_convert_cli_takes_the_activations_option(tmp_path, capsys):
    """`edgeseq convert --weights int8 --activations int8` writes an artifact whose LSTMs run
    the int8-activation kernels; --activations without --weights int8 is refused."""
    from importlib.resources import files

    from edgeseq import artifact
    from edgeseq.cli import main

    src = str(files("edgeseq") / "data" / "demo_classifier.onnx")
    out = tmp_path / "c.eseq"
    assert main(["convert", src, "-o", str(out), "--weights", "int8",
                 "--activations", "int8"]) == 0
    g = artifact.load(out)
    assert g.metadata[INT8_ACTIVATIONS] == "int8"
    assert "int8 activations for w_x/w_h" in Model(g).describe()
    capsys.readouterr()
    assert main(["convert", src, "-o", str(tmp_path / "d.eseq"), "--activations", "int8"]) == 2
    assert "needs weights='int8'" in capsys.readouterr().err


def test_int8_activation_lstm_error_is_within_onnxruntimes(tmp_path):
    """Same LSTM (64 inputs, 128 units, T = 50, N(0,1) inputs) through onnxruntime's
    quantize_dynamic (DynamicQuantizeLSTM, per-tensor and per-channel) and edgeseq int8 with
    int8 activations: edgeseq's max error vs the float model is ≤ onnxruntime's."""
    pytest.importorskip("onnxruntime")
    import logging

    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(3)
    g = lstm_graph(rng, 64, 128)
    src = _onnx_lstm(g, tmp_path / "f.onnx")
    x = rng.standard_normal((50, 1, 64)).astype(np.float32)

    def ort_run(path):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]) \
            .run(None, {"x": x})[0][:, 0]

    ref = ort_run(src)
    logging.getLogger().setLevel(logging.ERROR)
    ort_errs = []
    for per_channel in (False, True):
        q = tmp_path / f"q{per_channel}.onnx"
        quantize_dynamic(str(src), str(q), weight_type=QuantType.QInt8, per_channel=per_channel)
        ort_errs.append(float(np.abs(ort_run(q) - ref).max()))
    ours = float(np.abs(Model(_int8_act(g)).run({"x": x})["y"][:, 0] - ref).max())
    assert ours <= min(ort_errs), (ours, ort_errs)


def _onnx_lstm(graph, path):
    """The one-node LSTM graph as an ONNX LSTM (gate order i,f,c,o -> ONNX i,o,f,c)."""
    import onnx
    from onnx import helper, numpy_helper

    from edgeseq.testing import onnx_model, onnx_value

    node = graph.nodes[0]
    h = node.attrs["hidden_size"]
    order = np.concatenate([np.arange(k * h, (k + 1) * h) for k in (0, 3, 1, 2)])
    w = graph.constants[node.weights["w_x"]][:, order]
    r = graph.constants[node.weights["w_h"]][:, order]
    b = graph.constants[node.weights["b"]][:, order]
    b = np.concatenate([b, np.zeros_like(b)], axis=1)
    inits = [numpy_helper.from_array(a.astype(np.float32), n)
             for a, n in ((w, "W"), (r, "R"), (b, "B"))]
    lstm = helper.make_node("LSTM", ["x", "W", "R", "B"], ["y"], hidden_size=h)
    onnx.save(onnx_model([lstm], [onnx_value("x", ["T", 1, w.shape[-1]])],
                         [onnx_value("y", None)], inits, opset=14), str(path))
    return path
