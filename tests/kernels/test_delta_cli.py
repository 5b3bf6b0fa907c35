"""`edgeseq run ART --delta θ`: delta outputs and per-layer statistics from the CLI."""
from __future__ import annotations

import numpy as np

from edgeseq import artifact, testing
from edgeseq.cli import main
from edgeseq.runtime import Model


def test_run_delta_prints_stats_and_writes_delta_outputs(tmp_path, rng, capsys):
    g = testing.gru_graph(rng, 4, 8, linear_before_reset=True)
    art = artifact.save(g, tmp_path / "gru.eseq")
    x = np.cumsum(0.1 * rng.standard_normal((30, 1, 4)), axis=0).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    rc = main(["run", str(art), "--input", f"x={tmp_path / 'x.npy'}", "--delta", "0.05,0.02",
               "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 0
    assert "skip x" in err and "gru" in err and "runtime (delta)" in err
    want = Model(g).run({"x": x}, delta=(0.05, 0.02))["y"]
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "y.npy"), want)


def test_run_delta_bad_value_is_one_line_error(tmp_path, rng, capsys):
    art = artifact.save(testing.rnn_graph(rng, 3, 4), tmp_path / "rnn.eseq")
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 3), np.float32))
    rc = main(["run", str(art), "--input", f"x={tmp_path / 'x.npy'}", "--delta", "fast"])
    assert rc == 2
    assert "--delta expects" in capsys.readouterr().err
    rc = main(["run", str(art), "--input", f"x={tmp_path / 'x.npy'}", "--delta", "0.1",
               "--engine", "reference"])
    assert rc == 2 and "runtime engine" in capsys.readouterr().err
