"""Where a report tool writes: a folder given with --out (default: a new folder under the
current directory), never the tracked docs/ unless --update-docs says so."""
from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def add_arguments(ap: argparse.ArgumentParser, tool: str, docs: str) -> None:
    """--out DIR and --update-docs; `docs` names the tracked files --update-docs rewrites."""
    ap.add_argument("--out", type=Path, default=None, metavar="DIR",
                    help=f"folder for the report, plot and data (default: a new folder "
                         f"./{tool}-YYYYmmdd-HHMMSS)")
    ap.add_argument("--update-docs", action="store_true",
                    help=f"also overwrite the tracked {docs} (maintainers, after a full run)")


def output_dir(out: Path | None, tool: str) -> Path:
    """The --out folder, created; a fresh timestamped one under the CWD when not given."""
    path = out or Path.cwd() / f"{tool}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def can_plot(ap: argparse.ArgumentParser, update_docs: bool) -> bool:
    """Whether matplotlib (the `bench` extra) is there for the plot; --update-docs needs it,
    so that is refused before minutes of measuring, not after."""
    if importlib.util.find_spec("matplotlib") is not None:
        return True
    if update_docs:
        ap.error("--update-docs rewrites a plot and needs matplotlib: pip install -e '.[bench]'")
    print("matplotlib is not installed: tables only, no plot (pip install -e '.[bench]')",
          flush=True)
    return False
