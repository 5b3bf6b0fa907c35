"""The .eseq artifact: exact round trips, memory-mapped read-only load, atomic write, and a
specific ArtifactError for every way a REAL saved file can be damaged."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from edgeseq import artifact, reference
from edgeseq.errors import ArtifactError, GraphError
from edgeseq.graph import Graph, Node, Value
from edgeseq.ops import Op
from edgeseq.testing import gru_graph, lstm_graph, lstm_weights, random_inputs, recurrent_graph, \
    rnn_graph


# ---- graphs ---------------------------------------------------------------------------------
def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8 (written here from the spec, independent of quant/)."""
    amax = np.abs(w).max(axis=-1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale[..., None]), -127, 127).astype(np.int8)
    return q, scale


def int8_lstm(rng, n_input=5, hidden=6) -> Graph:
    w = lstm_weights(rng, n_input, hidden, peephole=True)
    for slot in ("w_x", "w_h"):
        w[slot], w[f"{slot}.scale"] = quantize_rows(w[slot])
    return recurrent_graph(Op.LSTM, n_input, {"hidden_size": hidden}, w)


def fp16_gru(rng) -> Graph:
    g = gru_graph(rng, 4, 5, linear_before_reset=True)
    for k in ("gru.w_x", "gru.w_h"):
        g.constants[k] = g.constants[k].astype(np.float16)
    return g.validate()


def glue_graph(rng) -> Graph:
    """LSTM -> Transpose -> Reshape -> MatMul(const) -> Add(const) -> Softmax."""
    g = lstm_graph(rng, 3, 4)
    g.nodes += [
        Node("tr", Op.TRANSPOSE, ["y"], ["yt"], {"perm": (0, 2, 1, 3)}),
        Node("rs", Op.RESHAPE, ["yt"], ["feat"], {"shape": (0, 0, -1)}),
        Node("fc", Op.MATMUL, ["feat", "fc.w"], ["logits0"]),
        Node("bias", Op.ADD, ["logits0", "fc.b"], ["logits"]),
        Node("sm", Op.SOFTMAX, ["logits"], ["probs"], {"axis": -1}),
    ]
    g.constants["fc.w"] = rng.standard_normal((4, 3)).astype(np.float32)
    g.constants["fc.b"] = rng.standard_normal(3).astype(np.float32)
    g.outputs = [Value("probs", "float32", ())]
    g.metadata = {"labels": ["a", "b", "c"], "sample_rate": 16000}
    return g.validate()


GRAPHS = {
    "lstm_all_features": lambda rng: lstm_graph(
        rng, 5, 6, direction="bidirectional", proj_size=3, proj_bias=True, peephole=True,
        coupled_gate="input", layer_norm=True, cell_clip=3.0, proj_clip=2.0, gate_clip=5.0,
        batch_first=True, seq_lens=True, initial_state=True,
        activations=["hard_sigmoid", "tanh", "scaled_tanh"]),
    "gru_fp16": fp16_gru,
    "rnn_reverse": lambda rng: rnn_graph(rng, 3, 4, direction="reverse", activations=["relu"]),
    "lstm_int8": int8_lstm,
    "glue": glue_graph,
}


@pytest.fixture
def saved(tmp_path, rng) -> Path:
    """A real artifact on disk: the all-features LSTM."""
    return artifact.save(GRAPHS["lstm_all_features"](rng), tmp_path / "model.eseq")


def header_of(path: Path) -> tuple[int, dict]:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return n, json.loads(raw[8:8 + n])


def rewrite_header(src: Path, dst: Path, edit) -> Path:
    """Copy `src` to `dst` with `edit(header_dict)` applied; tensor bytes are kept as they are."""
    raw = src.read_bytes()
    n, header = header_of(src)
    edit(header)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    dst.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n:])
    return dst


def reserialize(src: Path, dst: Path, edit_tensors) -> Path:
    """Rewrite `src` through the safetensors library with `edit_tensors(dict)` applied and the
    same metadata (so the file is a well-formed safetensors file that disagrees with its graph)."""
    _, header = header_of(src)
    tensors = {k: np.array(v) for k, v in artifact.load(src, verify=False).constants.items()}
    edit_tensors(tensors)
    safetensors.numpy.save_file(tensors, dst, metadata=header["__metadata__"])
    return dst


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and \
        np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


# ---- round trip -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(GRAPHS))
def test_round_trip_is_exact(kind, tmp_path, rng):
    g = GRAPHS[kind](rng)
    path = artifact.save(g, tmp_path / f"{kind}.eseq", producer="unit-test", source="sha256:abc")
    art = artifact.read(path)
    h = art.graph
    assert h.to_json() == g.to_json()
    assert set(h.constants) == set(g.constants)
    for k in g.constants:
        assert same_bits(h.constants[k], g.constants[k]), k
    assert art.info.producer == "unit-test" and art.info.source == "sha256:abc"
    assert art.info.version == "1.0" and art.info.verified
    # the loaded (read-only, memory-mapped) graph computes exactly what the original does
    inputs = random_inputs(g, rng, T=4, N=2, dims={"rs:2": 4})
    want, got = reference.run(g, inputs), reference.run(h, inputs)
    assert set(want) == set(got)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_fp16_and_int8_tensors_keep_their_dtype_and_bits(tmp_path, rng):
    g = int8_lstm(rng)
    g.constants["extra.f16"] = np.array([np.inf, -0.0, 65504, 6e-8, np.nan], np.float16)
    h = artifact.load(artifact.save(g, tmp_path / "q.eseq"))
    assert h.constants["lstm.w_x"].dtype == np.int8
    assert h.constants["lstm.w_x.scale"].dtype == np.float32
    assert h.constants["lstm.w_x.scale"].shape == (1, 24)
    for k in g.constants:
        assert same_bits(h.constants[k], g.constants[k]), k


def test_load_maps_without_copying(tmp_path, rng):
    """Constants are read-only views into one memory map of the file (no copy, even 8 MiB)."""
    g = lstm_graph(rng, 64, 512)   # w_h: 4*512*512 float32 = 4 MiB
    path = artifact.save(g, tmp_path / "big.eseq")
    h = artifact.load(path)
    n, header = header_of(path)
    w = h.constants["lstm.w_h"]
    assert not w.flags.writeable and not w.flags.owndata
    with pytest.raises(ValueError):
        w[0, 0, 0] = 1.0
    base = w
    while isinstance(base, np.ndarray):
        base = base.base
    mm = base.obj                                  # memoryview -> the mmap object itself
    assert type(mm).__name__ == "mmap" and len(mm) == path.stat().st_size
    mm_addr = np.frombuffer(mm, np.uint8).ctypes.data
    start = header["lstm.w_h"]["data_offsets"][0]
    assert w.ctypes.data - mm_addr == 8 + n + start
    assert all(c.flags.aligned for c in h.constants.values())


def test_load_is_o_header_and_verification_stays_fast(tmp_path, rng):
    """20 MiB of weights: without verification load reads only the header; with it, sha256
    over the data must stay well under the 50 ms budget (asserted loosely: shared CPUs)."""
    g = lstm_graph(rng, 256, 1024)   # (4096*256 + 4096*1024 + 4096) * 4 B ≈ 20 MiB
    path = artifact.save(g, tmp_path / "20mb.eseq")
    assert path.stat().st_size > 20e6

    def best(verify: bool) -> float:
        ts = []
        for _ in range(3):
            t = time.perf_counter()
            artifact.load(path, verify=verify)
            ts.append(time.perf_counter() - t)
        return min(ts)

    fast, checked = best(False), best(True)
    assert fast < 0.02, f"load without verify took {fast * 1e3:.1f} ms: not O(header)"
    assert checked < 0.25, f"load with verify took {checked * 1e3:.1f} ms"


def test_checksum_covers_data_and_source_hash_covers_the_model(tmp_path, rng):
    src = tmp_path / "model.onnx"
    src.write_bytes(b"pretend onnx bytes")
    g = rnn_graph(rng, 3, 4)
    path = artifact.save(g, tmp_path / "r.eseq", source=src)
    info = artifact.read_info(path)
    import hashlib
    assert info.source == "sha256:" + hashlib.sha256(b"pretend onnx bytes").hexdigest()
    h = hashlib.sha256(g.dumps().encode())
    for k in sorted(g.constants):
        h.update(np.ascontiguousarray(g.constants[k]).tobytes())
    assert info.checksum == "sha256:" + h.hexdigest()
    assert info.tensors["rnn.w_x"] == ("float32", (1, 4, 3))


def test_newer_minor_version_is_read(saved, tmp_path):
    def minor(h):
        h["__metadata__"]["edgeseq.version"] = "1.7"
    g = artifact.load(rewrite_header(saved, tmp_path / "minor.eseq", minor))
    assert g.nodes[0].op is Op.LSTM


def test_graph_without_constants_round_trips(tmp_path):
    g = Graph("id", [Value("x", "float32", ("T", 3))], [Value("y", "float32", ())],
              [Node("n", Op.RELU, ["x"], ["y"])]).validate()
    h = artifact.load(artifact.save(g, tmp_path / "empty.eseq"))
    assert h.to_json() == g.to_json() and h.constants == {}


def test_scalar_constant_keeps_its_0d_shape(tmp_path):
    # converters emit scalar operands (e.g. Mul by 2.0); a (1,) on disk would be refused at load
    g = Graph("scalar", [Value("x", "float32", ("N", 3))], [Value("y", "float32", ())],
              [Node("m", Op.MUL, ["x", "s"], ["y"])], {"s": np.array(2.0, np.float32)})
    back = artifact.load(artifact.save(g, tmp_path / "s.eseq"))
    assert back.constants["s"].shape == ()
    x = np.ones((2, 3), np.float32)
    assert np.array_equal(reference.run(back, {"x": x})["y"], 2 * x)


def test_overwrite_a_file_while_its_constants_are_mapped(saved):
    """Load, then save over the same path: the old mapping stays valid (os.replace swaps the
    directory entry, the mapped inode lives on) and the new file loads."""
    g = artifact.load(saved)
    before = {k: np.array(v) for k, v in g.constants.items()}
    g.metadata["note"] = "rewritten"
    artifact.save(g, saved)
    for k, v in before.items():
        assert same_bits(g.constants[k], v)
    h = artifact.load(saved)
    assert h.metadata["note"] == "rewritten"
    for k, v in before.items():
        assert same_bits(h.constants[k], v)


# ---- atomic write ---------------------------------------------------------------------------
@pytest.mark.parametrize("fail_in", ["writer", "replace"])
def test_failed_write_leaves_old_file_and_no_debris(fail_in, saved, monkeypatch, rng):
    before = saved.read_bytes()

    def broken_writer(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half an artifact")
        raise OSError("disk full (simulated)")

    def broken_replace(a, b):
        raise OSError("crash before rename (simulated)")

    if fail_in == "writer":
        monkeypatch.setattr(safetensors.numpy, "save_file", broken_writer)
    else:
        monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated"):
        artifact.save(rnn_graph(rng, 2, 3), saved)
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]


def test_save_refuses_an_invalid_graph(tmp_path, rng):
    g = lstm_graph(rng, 3, 4)
    g.constants["lstm.w_h"] = np.zeros((1, 16, 5), np.float32)
    with pytest.raises(Exception, match="w_h.*expected shape \\(1, 16, 4\\)"):
        artifact.save(g, tmp_path / "bad.eseq")
    assert not (tmp_path / "bad.eseq").exists()


def test_save_refuses_a_dtype_safetensors_cannot_hold(tmp_path, rng):
    g = rnn_graph(rng, 2, 3)
    g.constants["k"] = np.zeros(3, np.complex64)
    with pytest.raises((ArtifactError, GraphError), match="complex64"):
        artifact.save(g, tmp_path / "c.eseq")


# ---- corruption: each case gets its own message -----------------------------------------------
def _truncate(saved: Path, dst: Path, at: int) -> Path:
    dst.write_bytes(saved.read_bytes()[:at])
    return dst


def truncation_cases(saved: Path) -> list[tuple[int, str]]:
    n, _ = header_of(saved)
    size = saved.stat().st_size
    return [
        (0, "empty file \\(0 bytes\\)"),
        (5, "truncated: file is 5 bytes, shorter than the 8-byte header length"),
        (8, f"truncated: header length {n} bytes goes beyond the file size \\(8 bytes\\)"),
        (9, "truncated: header length .* beyond the file size \\(9 bytes\\)"),
        (8 + n // 2, "truncated: header length .* beyond the file size"),
        (8 + n, "data region truncated: the header describes \\d+ bytes of tensor data, the file holds 0"),
        (8 + n + 13, "data region truncated: .* the file holds 13"),
        (size - 1, "data region truncated"),
    ]


def test_truncated_files_say_truncated(saved, tmp_path):
    for at, msg in truncation_cases(saved):
        bad = _truncate(saved, tmp_path / f"cut{at}.eseq", at)
        with pytest.raises(ArtifactError, match=msg) as e:
            artifact.load(bad)
        assert str(bad) in str(e.value)


def _flip_data_byte(saved: Path, dst: Path) -> Path:
    raw = bytearray(saved.read_bytes())
    raw[-7] ^= 0x10
    dst.write_bytes(bytes(raw))
    return dst


def _version(v):
    def edit(h):
        h["__metadata__"]["edgeseq.version"] = v
    return edit


def _graph_edit(fn):
    def edit(h):
        g = json.loads(h["__metadata__"]["edgeseq.graph"])
        fn(g)
        h["__metadata__"]["edgeseq.graph"] = json.dumps(g)
    return edit


def _onnx_file(dst: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper
    node = helper.make_node("Relu", ["x"], ["y"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    onnx.save(helper.make_model(g), dst)
    return dst


def _set_hidden(g):
    g["nodes"][0]["attrs"]["hidden_size"] = 7


def _set_cell_clip(g):
    g["nodes"][0]["attrs"]["cell_clip"] = 7.0


# name -> (make the bad file from the saved one, the message it must give)
CORRUPTIONS = {
    "flipped_data_byte": (lambda s, d: _flip_data_byte(s, d), "checksum mismatch: graph or tensor data is corrupt"),
    "version_2": (lambda s, d: rewrite_header(s, d, _version("2.0")),
                  "newer major version 2.0: this edgeseq reads format 1.x"),
    "version_garbage": (lambda s, d: rewrite_header(s, d, _version("one")),
                        "unreadable edgeseq.version 'one'"),
    "tensor_deleted": (lambda s, d: reserialize(s, d, lambda t: t.pop("lstm.peephole")),
                       "tensor 'lstm.peephole' of the graph's constant table is missing"),
    "shape_changed": (lambda s, d: reserialize(
        s, d, lambda t: t.__setitem__("lstm.b", t["lstm.b"].reshape(48, 1))),
        "tensor 'lstm.b': the graph expects float32 \\(2, 24\\), the file holds float32 \\(48, 1\\)"),
    "dtype_changed": (lambda s, d: reserialize(
        s, d, lambda t: t.__setitem__("lstm.b", t["lstm.b"].astype(np.float16))),
        "tensor 'lstm.b': the graph expects float32 \\(2, 24\\), the file holds float16 \\(2, 24\\)"),
    "extra_tensor": (lambda s, d: reserialize(
        s, d, lambda t: t.__setitem__("stowaway", np.zeros(3, np.float32))),
        "tensor\\(s\\) \\['stowaway'\\] in the file are not constants of the graph"),
    "graph_edited": (lambda s, d: rewrite_header(s, d, _graph_edit(_set_cell_clip)),
                     "checksum mismatch: graph or tensor data is corrupt"),
    "checksum_missing": (lambda s, d: rewrite_header(
        s, d, lambda h: h["__metadata__"].pop("edgeseq.checksum")),
        "checksum mismatch: .*header says nothing"),
    "graph_not_json": (lambda s, d: rewrite_header(
        s, d, lambda h: h["__metadata__"].__setitem__("edgeseq.graph", "{oops")),
        "'edgeseq.graph' is not JSON"),
    "header_not_json": (lambda s, d: d.write_bytes(
        s.read_bytes()[:9] + b"\xff" + s.read_bytes()[10:]), "header is not JSON"),
    "plain_safetensors": (lambda s, d: safetensors.numpy.save_file(
        {"w": np.ones((2, 2), np.float32)}, d) or d,
        "a safetensors file without edgeseq metadata \\('edgeseq.format' is None\\)"),
    "other_format_name": (lambda s, d: rewrite_header(
        s, d, lambda h: h["__metadata__"].__setitem__("edgeseq.format", "gguf")),
        "without edgeseq metadata \\('edgeseq.format' is 'gguf'\\)"),
    "onnx_model": (lambda s, d: _onnx_file(d), "no safetensors JSON header \\(is it an ONNX"),
    "random_bytes": (lambda s, d: d.write_bytes(np.random.default_rng(7).bytes(4096)) or d,
                     "no safetensors JSON header"),
    "trailing_garbage": (lambda s, d: d.write_bytes(s.read_bytes() + b"junk") or d,
                         "4 unexpected bytes after the tensor data"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_file_gets_its_specific_error(case, saved, tmp_path):
    make, msg = CORRUPTIONS[case]
    bad = tmp_path / f"{case}.eseq"
    make(saved, bad)
    with pytest.raises(ArtifactError, match=msg) as e:
        artifact.load(bad)
    assert str(bad) in str(e.value)


def test_flipped_byte_loads_only_when_verification_is_off(saved, tmp_path):
    bad = _flip_data_byte(saved, tmp_path / "flip.eseq")
    g = artifact.load(bad, verify=False)        # the documented escape hatch
    assert g.nodes[0].op is Op.LSTM


def test_inconsistent_graph_is_refused_even_without_checksum(saved, tmp_path):
    bad = rewrite_header(saved, tmp_path / "h7.eseq", _graph_edit(_set_hidden))
    with pytest.raises(ArtifactError, match="the stored graph is invalid: ShapeError: "
                                            "node 'lstm' \\(LSTM\\): weight 'w_x'"):
        artifact.load(bad, verify=False)


def test_no_damage_crashes_or_loads_silently_changed(saved, tmp_path):
    """Truncation at many offsets and single-bit flips anywhere: either an ArtifactError comes
    out, or (a flip in a free-text field such as the producer) the graph and every constant
    are exactly the original; never another exception, never a silently different model."""
    original = artifact.load(saved)
    raw = saved.read_bytes()
    rng = np.random.default_rng(11)
    bad = tmp_path / "fuzz.eseq"
    n, _ = header_of(saved)
    positions = list(range(0, 8 + n, max(1, (8 + n) // 120))) + \
        list(rng.integers(8 + n, len(raw), size=20))
    outcomes = {"loaded": 0, "refused": 0}
    for pos in positions:
        for data in (raw[:pos], raw[:pos] + bytes([raw[pos] ^ (1 << int(rng.integers(8)))]) + raw[pos + 1:]):
            bad.write_bytes(data)
            try:
                g = artifact.load(bad)
                assert g.to_json() == original.to_json(), f"silent change at byte {pos}"
                for k, c in original.constants.items():
                    assert same_bits(g.constants[k], c), f"silent change of {k} at byte {pos}"
                outcomes["loaded"] += 1
            except ArtifactError as e:
                assert str(bad) in str(e)
                outcomes["refused"] += 1
    assert outcomes["refused"] > len(positions)   # every truncation at least


# ---- the runtime runs straight from the read-only memory map ------------------------------------
@pytest.mark.parametrize("kind", ["lstm_all_features", "gru_fp16", "lstm_int8", "glue"])
def test_runtime_runs_a_loaded_artifact(kind, tmp_path, rng, tol):
    import edgeseq
    g = GRAPHS[kind](rng)
    path = artifact.save(g, tmp_path / f"{kind}.eseq")
    model = edgeseq.load(path)
    inputs = random_inputs(g, rng, T=5, N=2, dims={"rs:2": 4})
    want, got = reference.run(g, inputs), model.run(inputs)
    assert set(got) == set(want)
    for k in want:
        err = float(np.max(np.abs(got[k].astype(np.float64) - want[k])))
        assert err <= tol["float32"], f"{k}: max abs error {err:.2e}"
