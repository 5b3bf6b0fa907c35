"""`compress`: the passes in their one sensible order (lstmp, svd, then fp16/int8) and one
per-layer report against the input graph. `edgeseq convert` calls this."""
from __future__ import annotations

from edgeseq.errors import GraphError
from edgeseq.graph import Graph
from edgeseq.quant import activations as act_pass, calibrate, fp16, int8, lstmp as lstmp_pass, svd
from edgeseq.quant.common import size_rows

WEIGHTS = {"fp32": None, "fp16": fp16.apply, "int8": int8.apply}
REPORT_COLUMNS = ("layer", "op", "weights", "params_before", "params_after", "bytes_before",
                  "bytes_after", "rank", "proj", "error")


def compress(graph: Graph, *, weights: str = "fp32", svd_rank: int | None = None,
             svd_energy: float | None = None, lstmp: int | None = None, calibration=None,
             svd_budget: float | None = None, activations: str | None = None
             ) -> tuple[Graph, list[dict]]:
    """Compressed copy of `graph` and a report: one dict per layer with parameters and bytes
    before/after, rank / projection size, and (with `calibration`, an .npz path or a dict of
    graph inputs) the max abs error of the layer's output against the float graph.

    Every row also carries `output_error` (graph outputs) when calibration data is given.
    `activations` ("int16", "int8" or "int8_asymmetric", `quant.activations`; default int16)
    is the precision the int8 products multiply activations in; with weights="int8", or on a graph whose
    recurrent weights are int8 already (a TFLite hybrid file)."""
    if weights not in WEIGHTS:
        raise GraphError(f"weights must be one of {sorted(WEIGHTS)}, got {weights!r}")
    if sum(v is not None for v in (svd_rank, svd_energy, svd_budget)) > 1:
        raise GraphError("give at most one of svd_rank, svd_energy, svd_budget")
    src = graph.copy().validate()
    # a converted file's own int8 weights (TFLite hybrid) take the option without --weights
    kept_int8 = weights == "fp32" and act_pass.has_int8_products(src)
    if activations is not None and weights != "int8" and not kept_int8:
        raise GraphError(f"activations={activations!r} needs weights='int8' or a model with "
                         f"int8 recurrent weights (got weights={weights!r})")
    calib = calibrate.load(calibration, src) if calibration is not None else None
    g, notes = src, {}

    def merge(rows):
        for r in rows:
            keep = {k: v for k, v in r.items() if k in ("note", "energy", "joint_with",
                                                        "chosen_energy", "budget") and v is not None}
            notes.setdefault(r["layer"], {}).update(keep)

    if lstmp is not None:
        g, rows = lstmp_pass.apply(g, proj=lstmp)
        merge(rows)
    if svd_rank is not None or svd_energy is not None or svd_budget is not None:
        g, rows = svd.apply(g, rank=svd_rank, energy=svd_energy, budget=svd_budget,
                            calibration=calib)
        merge(rows)
    if WEIGHTS[weights] is not None:
        g, _ = WEIGHTS[weights](g)
    if weights == "int8":
        g = act_pass.apply(g, activations or act_pass.DEFAULT)
    elif activations is not None:
        g = act_pass.apply(g, activations)
    report = size_rows(src, g, notes)
    if calib is not None:
        out_err, per_layer = calibrate.errors(src, g, calib)
        for row in report:
            row["error"] = per_layer.get(row["layer"])
            row["output_error"] = out_err
    return g, report


def format_report(report: list[dict]) -> str:
    """The per-layer table `edgeseq convert` prints."""
    head = ["layer", "op", "weights", "params", "bytes before", "bytes after", "ratio",
            "rank", "proj", "error"]
    lines = []
    for r in report:
        ratio = r["bytes_after"] / r["bytes_before"] if r["bytes_before"] else float("nan")
        err = "" if r.get("error") is None else f"{r['error']:.2e}"
        lines.append([r["layer"], r["op"], r["weights"],
                      f"{r['params_before']}->{r['params_after']}", str(r["bytes_before"]),
                      str(r["bytes_after"]), f"{ratio:.3f}", str(r["rank"] or ""),
                      str(r["proj"] or ""), err])
    b0 = sum(r["bytes_before"] for r in report)
    b1 = sum(r["bytes_after"] for r in report)
    lines.append(["total", "", "", "", str(b0), str(b1), f"{b1 / b0:.3f}" if b0 else "", "", "",
                  "" if not report or report[0].get("output_error") is None
                  else f"{report[0]['output_error']:.2e} (outputs)"])
    widths = [max(len(h), *(len(l[k]) for l in lines)) for k, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*head)] + [fmt.format(*l) for l in lines]
    notes = [f"  {r['layer']}: {r['note']}" for r in report if r.get("note")]
    return "\n".join(out + notes)
