"""`edgeseq inspect ART [--json] [--code]`: layers, features, parameters and I/O of an
artifact; --code prints the source the runtime's whole-graph compiler generates for it."""
from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact", metavar="ART", help="an .eseq artifact")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the checksum of the tensor data (faster on big files)")
    p.add_argument("--code", action="store_true",
                   help="print the generated whole-graph function (or, when the runtime "
                        "falls back to its per-node interpreter, which nodes and why)")


def run(args: argparse.Namespace) -> int:
    from edgeseq import artifact
    from edgeseq.summary import format_summary, summarize

    art = artifact.read(args.artifact, verify=not args.no_verify)
    if args.code:
        from edgeseq.runtime import Model
        model = Model(art.graph, codegen=True, warmup=False)
        print(model.source() or model.describe())
        return 0
    s = summarize(art.graph)
    s["artifact"] = art.info.to_json()
    targets = _native_targets(art)
    if args.json:
        s["native_targets"] = targets
        print(json.dumps(s, indent=2))
        return 0
    print(format_summary(s))
    print("\nnative code: " + ("none (edgeseq compile adds it)" if not targets else "".join(
        f"\n  {t['name']}: {t['triple']} cpu {t['cpu']}, {t['bytes']} bytes, requires "
        f"{','.join(t['requires']) or '-'}, {t['sha256']}" for t in targets)))
    return 0


def _native_targets(art) -> list:
    """The compiled targets an artifact carries (runtime/native/store.py), as dicts."""
    if not art.native_text:
        return []
    from dataclasses import asdict

    from edgeseq.runtime.native import store
    return [asdict(t) for t in store.parse(art.native_text, str(art.info.path)).targets]
