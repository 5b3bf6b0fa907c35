"""The README's shell and Python snippets, pasted in order as a newcomer would, must work.

Every ```bash and ```python block of README.md runs, in README order, as one bash script in a
fresh folder that has the repository's `tools/` and `edgeseq/` (for the paths the README
uses) and `.venv/bin` first on PATH. Lines that install, build the venv or run for minutes
are left out, each by a rule below that says why; a rule that matches nothing fails the test
(the README changed, the rule is stale). The outputs are then checked for what the README
says they show."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

# line prefix -> why the test does not run it
NOT_RUN = {
    "make demo": "creates .venv and runs the demo: the acceptance check of a fresh clone",
    "make test": "the suite itself",
    "make bench": "minutes of benchmarking",
    "pip install": "installs packages",
    "python tools/bench.py": "minutes of benchmarking",
    "python tools/quant_report.py": "minutes; needs espeak-ng",
    "python tools/delta_report.py": "~10 minutes, trains a classifier",
    ".venv/bin/python -m pytest": "the suite itself",
}


def readme_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block with a language tag, in order."""
    return [(m[1], m[2]) for m in re.finditer(r"^```(\w+)\n(.*?)^```", text, re.M | re.S)]


def shell_lines(code: str) -> list[str]:
    """Commands of a shell block: comment-only lines and blanks dropped."""
    return [ln for ln in code.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def build_script(blocks: list[tuple[str, str]], workdir: Path) -> tuple[str, dict[str, int]]:
    """A bash script running the blocks in order, and how often each NOT_RUN rule matched."""
    used = {k: 0 for k in NOT_RUN}
    out = ["set -euo pipefail"]
    for k, (lang, code) in enumerate(blocks):
        if lang == "python":
            path = workdir / f"readme_block_{k}.py"
            path.write_text(code)
            out.append(f"echo '### python block {k}'")
            # edgeseq's input warnings ("model '...': ...") fail a block: the README's own
            # snippets must pass every state input, in float32
            out.append(f"python -W \"error:model ':UserWarning\" {path.name}")
        elif lang in ("bash", "sh"):
            for line in shell_lines(code):
                rule = next((r for r in NOT_RUN if line.startswith(r)), None)
                if rule:
                    used[rule] += 1
                    continue
                out.append(f"echo '### {line.split('#')[0].strip()}'")
                out.append(line)
    return "\n".join(out) + "\n", used


def test_readme_blocks_parse():
    blocks = readme_blocks(README.read_text())
    langs = [lang for lang, _ in blocks]
    assert langs.count("python") >= 3 and langs.count("bash") >= 5, langs


@pytest.mark.slow
def test_readme_snippets_run_in_order(tmp_path):
    blocks = readme_blocks(README.read_text())
    script, used = build_script(blocks, tmp_path)
    stale = [r for r, n in used.items() if n == 0]
    assert not stale, f"NOT_RUN rules that match no README line (update the test): {stale}"
    for name in ("tools", "edgeseq"):
        (tmp_path / name).symlink_to(ROOT / name)
    bindir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""))
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=1500)
    log = r.stdout + r.stderr
    assert r.returncode == 0, f"README snippet failed:\n{log[-4000:]}"
    # what the README says each step shows
    n_convert = sum(line.startswith("edgeseq convert") for _, c in blocks for line in
                    shell_lines(c))
    assert len(re.findall(r"^converted ", r.stdout, re.M)) == n_convert, r.stdout[-3000:]
    assert r.stdout.count("OK: every output within max rel err") == 2, r.stdout[-3000:]
    assert "LSTM" in r.stdout.split("### edgeseq inspect")[1].split("###")[0]
    run_out = r.stdout.split("### edgeseq run")[1].split("###")[0]
    assert re.search(r"speech_probs: shape \(93,\) float32 -> out/run/speech_probs\.npy",
                     run_out), run_out
    assert (tmp_path / "out" / "run" / "speech_probs.npy").is_file()
    for art in ("silero", "vad", "full", "tagger-pt2", "tagger-sd", "small", "tiny", "svd",
                "classifier"):
        assert (tmp_path / "out" / f"{art}.eseq").is_file(), art
    # the Python API block printed the compression report's layers
    py_out = r.stdout.split("### python block")
    assert any("lstm" in part.lower() for part in py_out[1:]), r.stdout[-3000:]
