"""Check that edgeseq's declared requirements (core + the extras named on the command line) are
installed at satisfying versions; with --list, print those requirements one per line instead. `pip check` would do, but it also flags packages installed
with --no-deps on purpose (silero-vad without torch)."""
from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, requires, version

from packaging.requirements import Requirement


def main(args: list[str]) -> int:
    listing = "--list" in args
    extras = [a for a in args if a != "--list"]
    bad = []
    for req in map(Requirement, requires("edgeseq") or []):
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras):
            continue
        if listing:
            print(f"{req.name}{req.specifier}")
            continue
        try:
            have = version(req.name)
        except PackageNotFoundError:
            bad.append(f"{req}: not installed")
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            bad.append(f"{req}: {have} installed")
    for b in bad:
        print(f"unsatisfied requirement of edgeseq: {b}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
