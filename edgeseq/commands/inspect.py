"""`edgeseq inspect ART [--json]`: layers, features, parameters and I/O of an artifact."""
from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact", metavar="ART", help="an .eseq artifact")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the checksum of the tensor data (faster on big files)")


def run(args: argparse.Namespace) -> int:
    from edgeseq import artifact
    from edgeseq.summary import format_summary, summarize

    art = artifact.read(args.artifact, verify=not args.no_verify)
    s = summarize(art.graph)
    s["artifact"] = art.info.to_json()
    print(json.dumps(s, indent=2) if args.json else format_summary(s))
    return 0
