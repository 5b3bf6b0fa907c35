"""Delta-based zero skipping: threshold sweeps with accuracy, MACs saved and wall-clock
speed-up against dense edgeseq, measured in one run.

    .venv/bin/python tools/delta_report.py                 # ~8 min on the shared 2-core box
    .venv/bin/python tools/delta_report.py --quick         # fewer points/repeats (smoke run)
    .venv/bin/python tools/delta_report.py --train-256     # + the 2 x LSTM 256 classifier,
        # trained first by tools/train_classifier.py (fetches the data set; needs torch)
    .venv/bin/python tools/delta_report.py --classifier ONNX:NPZ --aeon-cache DIR  # your own

(a) silero VAD (sequence model, LSTM 128 after a conv front end) on synthesised speech
    (vowels with intonation, tools/silero_frames.py) + silence + white/brown noise at 16 kHz:
    decision agreement (p > 0.5) with the dense model and the speech-probability error;
(b) the demo classifier (edgeseq/data/demo_classifier.onnx: 2 x LSTM 128 on UCI Japanese
    Vowels, 370 real test utterances): accuracy;
(c) a synthetic temporally correlated stream (64 channels of low-pass filtered noise + a
    little white noise) through a random LSTM of 256/512/1024 units: relative RMS error of y.
(a) and (b) also get CALIBRATED thresholds: per-layer (θx, θh) searched greedily
(runtime/delta_calibrate.py) for a MAC budget on calibration data the score never
sees (the classifiers: the TRAINING split of Japanese Vowels, standardised with the stored
train statistics; VAD: a differently seeded synthetic clip), then measured on the test data.
Every point: quality, MACs in the recurrent layers (dense / done), wall-clock speed-up of
the recurrent layer(s) (kernel calls) and of the whole model, at batch 1. Timings: dense and
delta alternate, medians of repeats, warm-up (Numba compilation) excluded; BLAS pinned to
one thread. Writes report.md, delta_tradeoff.png and rows.json into --out (default: a new
folder under the current directory); with --update-docs also docs/delta.md (between the report
markers) and docs/delta_tradeoff.png, which needs the full set (--train-256, not --quick).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

BEGIN, END = "<!-- delta_report:begin -->", "<!-- delta_report:end -->"


def _blas_one_thread():
    try:
        from threadpoolctl import threadpool_limits
        return threadpool_limits(1)
    except ImportError:
        return None


def alternate(fns: list, repeats: int) -> tuple[list[list[float]], list[list[float]]]:
    """Wall-clock and thread CPU seconds of each callable per repeat after a warm-up; the call
    order flips every repeat (A B, B A, ...) so neither side always runs first."""
    for f in fns:
        f()
    ts = [[] for _ in fns]
    cpu = [[] for _ in fns]
    for r in range(repeats):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for k in order:
            c = time.thread_time()
            t = time.perf_counter()
            fns[k]()
            ts[k].append(time.perf_counter() - t)
            cpu[k].append(time.thread_time() - c)
    return ts, cpu


def speedup(dense: callable, delta: callable, repeats: int) -> tuple:
    """(median dense s, median delta s, median of the per-pair wall-clock ratios dense/delta,
    min/min wall-clock ratio, min/min thread-CPU-time ratio): a pair runs back to back, so
    the pair ratio is robust to the load other users put on the shared box; CPU time does
    not count the time this thread waits for a core."""
    (a, b), (ca, cb) = alternate([dense, delta], repeats)
    return (float(np.median(a)), float(np.median(b)),
            float(np.median(np.array(a) / np.array(b))), float(np.min(a) / np.min(b)),
            float(np.min(ca) / max(np.min(cb), 1e-9)))


class Timer:
    """Times one model's recurrent kernels (on captured inputs) and the whole model, over one
    or several feeds (each call runs them all)."""

    def __init__(self, model, feeds: list[dict]) -> None:
        from edgeseq.ops import RECURRENT
        from edgeseq.runtime.delta_runner import DeltaRunner
        self.model, self.feeds = model, feeds
        runner = DeltaRunner.of(model)
        self.rec = []
        for f in feeds:
            env = model._execute(model.check_inputs(f))
            for step in model.plan.steps:
                if step.node.op in RECURRENT:
                    ins = [env.get(x) if k == "v" else x for k, x in step.sources]
                    self.rec.append((step.kernel, runner.kernel(step), ins, step.node.name))

    def layers(self, th) -> callable:
        """th: None (dense), one (θx, θh) for every layer, or {node: (θx, θh)}."""
        if th is None or th == (0.0, 0.0):     # θ = 0 runs the dense kernel (as Model does)
            return lambda: [k(ins) for k, _, ins, _ in self.rec]
        per = [th.get(n, (0.0, 0.0)) if isinstance(th, dict) else th for *_, n in self.rec]
        calls = [(k, None) if t == (0.0, 0.0) else (dk, t)
                 for (k, dk, _, _), t in zip(self.rec, per)]
        ins = [r[2] for r in self.rec]
        return lambda: [k(i) if t is None else k(i, thresholds=t)
                        for (k, t), i in zip(calls, ins)]

    def whole(self, th) -> callable:
        run = self.model.run
        if th is None:
            return lambda: [run(f) for f in self.feeds]
        return lambda: [run(f, delta=th) for f in self.feeds]


def sweep(name: str, model, feeds: dict, thresholds, quality, repeats: int,
          timed: list[dict] | None = None, whole: bool = True) -> list[dict]:
    """quality(outputs, dense outputs) -> dict of metrics; one row per threshold (θ = 0: the
    dense run). Quality and statistics come from `feeds`; timings from `timed` (default:
    feeds), reported per feed."""
    dense = model.run(feeds)
    timed = timed or [feeds]
    timer = Timer(model, timed)
    rows = []
    for th in thresholds:
        out = model.run(feeds, delta=th)
        st = model.last_stats
        t_dense_l, t_delta_l, sp_l, best_l, cpu_l = speedup(
            timer.layers(None), timer.layers((th, th)), repeats)
        sp_w = speedup(timer.whole(None), timer.whole(th), repeats)[2] if whole else float("nan")
        skip_x = np.mean([s.skipped_input for s in st.layers.values()])
        skip_h = np.mean([s.skipped_recurrent for s in st.layers.values()])
        row = {"bench": name, "theta": th, "label": f"{th:g}", **quality(out, dense),
               "skip_x": float(skip_x), "skip_h": float(skip_h),
               "mac_x": st.mac_reduction, "layer_ms": t_delta_l * 1e3 / len(timed),
               "layer_dense_ms": t_dense_l * 1e3 / len(timed), "speedup_layer": sp_l,
               "best_layer": best_l, "cpu_layer": cpu_l, "speedup_model": sp_w}
        rows.append(row)
        print(f"  {name} θ={th:<6g} " + " ".join(
            f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float) and k != "theta"),
            flush=True)
    return rows


def calibrated(name: str, model, feeds: dict, calib: dict, budgets, quality, repeats: int,
               timed: list[dict] | None = None, loss=None) -> list[dict]:
    """Rows for thresholds calibrated on `calib` (never `feeds`) for each MAC budget: one
    greedy search up to the largest budget; a smaller budget takes the first point of its
    path that reaches it (the search is deterministic, so that is what a search for the
    smaller budget would return). Quality, statistics and timings on `feeds`/`timed`."""
    from edgeseq.runtime.delta_calibrate import calibrate, relative_rms
    t0 = time.perf_counter()
    res = calibrate(model, calib, budget=max(budgets), loss=loss or relative_rms)
    print(f"  {name}: calibration to {max(budgets)}x in {time.perf_counter() - t0:.0f} s "
          f"({len(res.history)} moves)", flush=True)
    dense = model.run(feeds)
    timed = timed or [feeds]
    timer = Timer(model, timed)
    rows = []
    for budget in sorted(budgets):
        point = next((h for h in res.history if h["mac_reduction"] >= budget), None)
        if point is None:
            print(f"  {name}: calibration did not reach {budget}x", flush=True)
            continue
        th = point["thresholds"]
        out = model.run(feeds, delta=th)
        st = model.last_stats
        t_dense_l, t_delta_l, sp_l, best_l, cpu_l = speedup(timer.layers(None), timer.layers(th),
                                                     repeats)
        sp_w = speedup(timer.whole(None), timer.whole(th), repeats)[2]
        label = f"cal. {budget:g}x: " + ", ".join(
            f"({a:.3f}, {b:.3f})" for a, b in th.values())
        row = {"bench": name, "theta": float(np.mean(list(th.values()))), "label": label,
               "calibrated": budget, "thresholds": th, "calib_macs": point["mac_reduction"],
               **quality(out, dense),
               "skip_x": float(np.mean([s.skipped_input for s in st.layers.values()])),
               "skip_h": float(np.mean([s.skipped_recurrent for s in st.layers.values()])),
               "mac_x": st.mac_reduction, "layer_ms": t_delta_l * 1e3 / len(timed),
               "layer_dense_ms": t_dense_l * 1e3 / len(timed), "speedup_layer": sp_l,
               "best_layer": best_l, "cpu_layer": cpu_l, "speedup_model": sp_w}
        rows.append(row)
        print(f"  {label} " + " ".join(
            f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float) and k != "theta"),
            flush=True)
    return rows


# ---- (a) silero VAD -----------------------------------------------------------------------

def vad_audio(seed: int = 1) -> np.ndarray:
    """~20 s at 16 kHz: speech-like vowel runs, silences, white and brown noise, then the same
    speech with noise under it; frames [n, 576] as silero's 16 kHz models read them."""
    import silero_frames as sf
    rng = np.random.default_rng(seed)
    sr = sf.SR
    a = [(700, 110, 1.0), (1220, 120, 0.5), (2600, 160, 0.25)]
    i = [(300, 80, 1.0), (2300, 120, 0.4), (3000, 200, 0.2)]
    u = [(350, 80, 1.0), (900, 100, 0.4), (2300, 150, 0.1)]
    e = [(500, 90, 1.0), (1800, 120, 0.5), (2500, 160, 0.2)]

    def word(k):
        vs = [a, i, u, e]
        return np.concatenate([sf._vowel(rng.uniform(0.15, 0.4), rng.uniform(95, 180),
                                         vs[(k + j) % 4]) for j in range(rng.integers(2, 5))])

    def sil(s):
        return np.zeros(int(s * sr))

    def white(s, lvl):
        return lvl * rng.standard_normal(int(s * sr))

    def brown(s, lvl):
        b = np.cumsum(rng.standard_normal(int(s * sr)))
        b -= np.convolve(b, np.ones(400) / 400, mode="same")
        return lvl * b / (np.abs(b).max() + 1e-9)

    parts = []
    for k in range(8):
        parts += [sil(rng.uniform(0.3, 0.8)), word(k)]
        if k % 3 == 1:
            parts.append(white(0.8, 0.02))
        if k % 3 == 2:
            parts.append(brown(0.8, 0.1))
    clean = np.concatenate(parts)
    noisy = np.concatenate([word(k) for k in range(4)])
    noisy = noisy + 0.01 * rng.standard_normal(noisy.size)
    audio = np.concatenate([clean, sil(0.5), noisy, sil(0.7)])
    audio = audio + 0.002 * rng.standard_normal(audio.size)
    padded = np.concatenate([np.zeros(sf.CONTEXT), audio]).astype(np.float32)
    n = audio.size // sf.HOP
    return np.stack([padded[k * sf.HOP:k * sf.HOP + sf.HOP + sf.CONTEXT] for k in range(n)])


def bench_vad(thresholds, repeats, budgets=()) -> list[dict]:
    import silero_vad
    from edgeseq.converters.onnx import convert
    from edgeseq.runtime import Model
    path = Path(silero_vad.__file__).parent / "data" / "silero_vad_16k_sequence.onnx"
    model = Model(convert(path))
    frames = vad_audio()
    z = np.zeros((1, 1, 128), np.float32)
    feeds = {"input": frames, "h": z, "c": z}
    p = model.run(feeds)["speech_probs"]
    print(f"(a) silero VAD: {len(frames)} frames ({len(frames) * 0.032:.1f} s), "
          f"speech frames (dense p>0.5): {np.mean(p > 0.5):.1%}", flush=True)

    def quality(out, dense):
        a, b = out["speech_probs"], dense["speech_probs"]
        return {"quality": float(np.mean((a > 0.5) == (b > 0.5)) * 100),
                "err_max": float(np.abs(a - b).max()), "err_mean": float(np.abs(a - b).mean())}
    rows = sweep("vad", model, feeds, thresholds, quality, repeats)
    if budgets:
        # calibration audio: the same recipe, another seed (the scored clip is never seen)
        calib = {"input": vad_audio(seed=2), "h": z, "c": z}

        def loss(out, dense):
            a, b = out["speech_probs"].astype(np.float64), dense["speech_probs"]
            return float(np.sqrt(np.mean((a - b) ** 2)))
        rows += calibrated("vad", model, feeds, calib, budgets, quality, repeats, loss=loss)
    return rows


# ---- (b) demo classifier ----------------------------------------------------------------

def train_split(npz: Path, cache: Path | None) -> np.ndarray:
    """The Japanese Vowels TRAINING utterances prepared as the test set was (standardised
    with the train statistics stored in the npz, left-padded to T = 29)."""
    import train_classifier as tc
    d = np.load(npz)
    series, _, _ = tc.parse_ts(tc.fetch_ts(cache)["TRAIN"])
    x, _ = tc.left_pad([(s - d["mean"]) / d["std"] for s in series], d["x"].shape[1])
    return x


def bench_classifier(thresholds, repeats, n_timed: int, onnx: Path, npz: Path,
                     name: str = "classifier", budgets=(), cache: Path | None = None
                     ) -> list[dict]:
    from edgeseq.converters.onnx import convert
    from edgeseq.runtime import Model
    model = Model(convert(onnx))
    d = np.load(npz)
    x, y = d["x"], d["y"]
    units = [n.attrs["hidden_size"] for n in model.graph.recurrent_nodes()]
    print(f"({name}) {onnx.name}: LSTM {units}, {len(y)} test utterances, T={x.shape[1]}",
          flush=True)

    def quality(out, dense):
        return {"quality": float(np.mean(out["logits"].argmax(1) == y) * 100),
                "agree": float(np.mean(out["logits"].argmax(1) == dense["logits"].argmax(1)))}
    # accuracy on the whole test set in one batch (delta state is per batch row, so this
    # equals batch-1 runs); timing at batch 1 over the first n_timed utterances
    timed = [{"x": x[k:k + 1]} for k in range(n_timed)]
    rows = sweep(name, model, {"x": x}, thresholds, quality, repeats, timed)
    if budgets:
        xtr = train_split(npz, cache)
        print(f"  {name}: calibrating on {len(xtr)} training utterances", flush=True)
        rows += calibrated(name, model, {"x": x}, {"x": xtr}, budgets, quality, repeats, timed)
    for r in rows:
        r["units"] = units
    return rows


# ---- (c) synthetic ------------------------------------------------------------------------

def smooth_stream(rng, t_len: int, n_in: int, tau: float = 40.0, noise: float = 0.01):
    """Unit-variance AR(1) low-pass noise per channel (time constant tau steps) + white."""
    a = np.exp(-1.0 / tau)
    e = rng.standard_normal((t_len, n_in)) * np.sqrt(1 - a * a)
    x = np.empty_like(e)
    x[0] = rng.standard_normal(n_in)
    for t in range(1, t_len):
        x[t] = a * x[t - 1] + e[t]
    return (x + noise * rng.standard_normal(x.shape)).astype(np.float32)[:, None, :]


def bench_synthetic(sizes, thresholds, repeats, t_len: int) -> list[dict]:
    from edgeseq.runtime import Model
    from edgeseq.testing import lstm_graph
    rows = []
    for hidden in sizes:
        rng = np.random.default_rng(hidden)
        # NOTE: weights 2x the PyTorch init so the state has unit-scale dynamics (|h| ~ 0.3)
        g = lstm_graph(rng, 64, hidden, weight_scale=2.0 / np.sqrt(hidden))
        model = Model(g)
        feeds = {"x": smooth_stream(rng, t_len, 64)}
        print(f"(c) synthetic LSTM {hidden}: T={t_len}, 64 inputs", flush=True)

        def quality(out, dense):
            a, b = out["y"].astype(np.float64), dense["y"].astype(np.float64)
            return {"quality": float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b ** 2)) * 100),
                    "err_max": float(np.abs(a - b).max())}
        # one node: the whole model is the layer (its timing is not repeated)
        rs = sweep(f"lstm{hidden}", model, feeds, thresholds, quality, repeats, whole=False)
        # the delta kernel forced at θ = 0 (the model dispatches θ = 0 to the dense kernel)
        tm = Timer(model, [feeds])
        _, dk, ins, _ = tm.rec[0]
        ratio = speedup(tm.layers(None), lambda: dk(ins, thresholds=(0.0, 0.0)), repeats)[2]
        for r in rs:
            r["forced0_ratio"] = 1.0 / ratio
        rows += rs
    return rows


# ---- output -------------------------------------------------------------------------------

def markdown(rows: list[dict], cmd: str, env: str) -> str:
    out = [f"Measured by `{cmd}` ({env}).", ""]
    heads = {"vad": ("VAD decisions unchanged %", "max / mean abs Δp"),
             "classifier": ("accuracy %", "decisions = dense"),
             "lstm": ("rel. RMS error of y %", "max abs Δy")}
    for bench in dict.fromkeys(r["bench"] for r in rows):
        rs = [r for r in rows if r["bench"] == bench]
        kind = _kind(bench)
        q, e = heads[kind]
        if kind == "vad":
            title = "(a) silero VAD, LSTM 128 (batch 1)"
        elif kind == "classifier":
            u = rs[0]["units"]
            title = (f"(b) {'demo classifier' if bench == 'classifier' else bench}, "
                     f"{len(u)} x LSTM {u[0]}, 370 real test utterances (batch 1 timing)")
        else:
            title = f"(c) synthetic stream, LSTM {bench[4:]} units, 64 inputs (batch 1)"
        out += [f"**{title}**", "",
                f"| θ | {q} | {e} | skipped x / h cols | MACs fewer | layer ms (dense ms) | "
                f"layer speed-up (min/min wall, min/min CPU) | model speed-up |",
                "|---|---|---|---|---|---|---|---|"]
        for r in rs:
            if kind == "vad":
                ev = f"{r['err_max']:.3f} / {r['err_mean']:.4f}"
            elif kind == "classifier":
                ev = f"{r['agree']:.1%}"
            else:
                ev = f"{r['err_max']:.3g}"
            out.append(f"| {r['label']} | {r['quality']:.2f} | {ev} | "
                       f"{r['skip_x']:.0%} / {r['skip_h']:.0%} | {r['mac_x']:.2f}x | "
                       f"{r['layer_ms']:.2f} ({r['layer_dense_ms']:.2f}) | "
                       f"{r['speedup_layer']:.2f}x ({r['best_layer']:.2f}x, "
                       f"{r['cpu_layer']:.2f}x) | "
                       f"{_x(r['speedup_model'])} |")
        if any("calibrated" in r for r in rs):
            out.append("\n\"cal. Bx\": per-layer (θx, θh), one pair per recurrent layer in "
                       "order, calibrated for >= B x fewer MACs on data not scored here "
                       + ("(the training split)." if kind == "classifier"
                          else "(another synthetic clip)."))
        if "forced0_ratio" in rs[0]:
            out.append(f"\nDelta kernel forced at θ = 0: {rs[0]['forced0_ratio']:.2f}x the dense "
                       f"kernel's time (θ = 0 dispatches to the dense kernel).")
        out.append("")
    out += targets(rows)
    return "\n".join(out)


def _kind(bench: str) -> str:
    return "lstm" if bench.startswith("lstm") else ("vad" if bench == "vad" else "classifier")


def targets(rows: list[dict]) -> list[str]:
    """The design targets at the largest θ that keeps quality (VAD: >= 99 % decisions
    unchanged; classifier: accuracy loss <= 0.5 point)."""
    out = ["**Targets** (at a θ keeping quality, >= 5x fewer MACs in the recurrent "
           "layers and >= 2x wall-clock over dense edgeseq at batch 1 for >= 256 units)", "",
           "| benchmark | units | largest θ / budget with quality kept up to it | quality | "
           "MACs fewer | "
           "layer speed-up (min/min CPU) | model speed-up |", "|---|---|---|---|---|---|---|"]
    for bench in dict.fromkeys(r["bench"] for r in rows):
        kind = _kind(bench)
        if kind == "lstm":
            continue
        uniform = [r for r in rows if r["bench"] == bench and "calibrated" not in r]
        base = uniform[0]["quality"]
        cal = [r for r in rows if r["bench"] == bench and "calibrated" in r]
        for rs, how in ((uniform, "θ"), (cal, "calibrated budget")):
            if not rs:
                continue
            # the largest θ (budget) up to which EVERY point keeps quality (quality is not
            # monotone: a lucky point past a failing one is not a setting to recommend)
            r = rs[0] if how == "θ" else None
            for cand in rs:
                if not (cand["quality"] >= 99.0 if kind == "vad"
                        else cand["quality"] >= base - 0.5):
                    break
                r = cand
            if r is None:
                continue
            units = "128" if kind == "vad" else "/".join(str(u) for u in r["units"])
            qual = f"{r['quality']:.2f} %" + ("" if kind == "vad" else f" (dense {base:.2f} %)")
            out.append(f"| {bench} | {units} | {how} {r['label']} | {qual} | "
                       f"{r['mac_x']:.2f}x | {r['speedup_layer']:.2f}x "
                       f"({r['cpu_layer']:.2f}x) | {_x(r['speedup_model'])} |")
    out.append("")
    return out


def _x(v: float) -> str:
    return "(= layer)" if v != v else f"{v:.2f}x"


def _sp(r: dict) -> float:
    """The plotted speed-up: min/min thread CPU time (on the shared box the wall-clock pair
    ratios swing with other users' load; CPU time does not count waiting for a core)."""
    return r.get("cpu_layer", r["speedup_layer"])


def plot(rows: list[dict], path: Path) -> None:
    """Top: quality vs MACs saved (points labelled with θ); bottom: speed-up of the
    recurrent layers vs MACs saved (the diagonal: time proportional to MACs)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    panels = [("vad", "(a) silero VAD", "VAD decisions unchanged (%)"),
              ("classifier", "(b) classifiers (Japanese Vowels)", "accuracy (%)"),
              ("lstm", "(c) synthetic stream", "relative RMS error of y (%)")]
    for col, (key, title, ylabel) in enumerate(panels):
        top, bottom = axes[0, col], axes[1, col]
        for bench in dict.fromkeys(r["bench"] for r in rows if _kind(r["bench"]) == key):
            rs = [r for r in rows if r["bench"] == bench and "calibrated" not in r]
            mx = [r["mac_x"] for r in rs]
            top.plot(mx, [r["quality"] for r in rs], "o-", label=bench)
            for r in rs:
                top.annotate(f"{r['theta']:g}", (r["mac_x"], r["quality"]), fontsize=7,
                             textcoords="offset points", xytext=(3, 3))
            bottom.plot(mx, [_sp(r) for r in rs], "o-", label=bench)
            cal = [r for r in rows if r["bench"] == bench and "calibrated" in r]
            if cal:
                mx = [r["mac_x"] for r in cal]
                top.plot(mx, [r["quality"] for r in cal], "s--",
                         label=f"{bench} calibrated per layer")
                for r in cal:
                    top.annotate(f"{r['calibrated']:g}x", (r["mac_x"], r["quality"]),
                                 fontsize=7, textcoords="offset points", xytext=(3, -9))
                bottom.plot(mx, [_sp(r) for r in cal], "s--",
                            label=f"{bench} calibrated")
        hi = max([r["mac_x"] for r in rows if _kind(r["bench"]) == key] + [2])
        bottom.plot([1, hi], [1, hi], "k:", lw=0.8, label="time ∝ MACs")
        if key == "classifier":
            # the quality-keeping region; larger θ (accuracy below 94 %) is in the table
            top.set_ylim(94, 99.5)
        top.set_title(title)
        top.set_ylabel(ylabel + ", labels: θ")
        bottom.set_ylabel("recurrent-layer speed-up (x, min/min thread CPU time)")
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.set_xlabel("MACs fewer than dense (x)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        bottom.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_doc(doc: Path, table: str) -> None:
    text = doc.read_text() if doc.exists() else f"{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def train_256(out: Path, cache: Path) -> str:
    """Train the 2 x LSTM 256 classifier (the demo's recipe, wider) into `out`; ONNX:NPZ."""
    import subprocess
    onnx, npz = out / "classifier256.onnx", out / "test256.npz"
    if not (onnx.exists() and npz.exists()):
        print(f"training the 2 x LSTM 256 classifier into {out} (~2 min) ...", flush=True)
        subprocess.run([sys.executable, str(ROOT / "tools" / "train_classifier.py"),
                        "--hidden", "256", "--out", str(onnx), "--test-out", str(npz),
                        "--cache", str(cache)], check=True)
    return f"{onnx}:{npz}"


def main(argv: list[str] | None = None) -> int:
    import report_out
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer thresholds and repeats")
    report_out.add_arguments(ap, "delta_report", "docs/delta.md and docs/delta_tradeoff.png")
    ap.add_argument("--train-256", action="store_true",
                    help="also train and measure the 2 x LSTM 256 classifier (the README's "
                         "numbers; needs torch, fetches the data set with pip)")
    ap.add_argument("--classifier", action="append", default=[], metavar="ONNX:NPZ",
                    help="another classifier + test set in the demo's format (repeatable), "
                         "e.g. tools/train_classifier.py --hidden 256 output")
    ap.add_argument("--aeon-cache", type=Path, default=None,
                    help="folder holding (or receiving) the aeon wheel with the Japanese Vowels "
                         "training split, as tools/train_classifier.py --cache")
    args = ap.parse_args(argv)
    if args.update_docs and (args.quick or not (args.train_256 or args.classifier)):
        ap.error("--update-docs rewrites the table docs/delta.md and the README quote; it "
                 "needs the full run with the 256-unit classifier: --train-256, no --quick")
    out = report_out.output_dir(args.out, "delta_report")
    plots = report_out.can_plot(ap, args.update_docs)
    if args.train_256:
        args.aeon_cache = args.aeon_cache or out
        args.classifier.insert(0, train_256(out, args.aeon_cache))
    limits = _blas_one_thread()     # noqa: F841  (held for the whole run)
    if args.quick:
        th_real, th_syn, reps, sizes, t_len = [0.0, 0.05, 0.2], [0.0, 0.05], 3, [256], 200
        budgets = [5.0]
    else:
        th_real = [0.0, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3]
        th_syn = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2]
        reps, sizes, t_len = 9, [256, 512, 1024], 500
        budgets = [4.0, 5.0, 6.0, 8.0]
    rows = bench_vad(th_real, 3 * reps, budgets)     # short calls: more repeats are cheap
    data = ROOT / "edgeseq" / "data"
    rows += bench_classifier(th_real, reps, 40, data / "demo_classifier.onnx",
                             data / "demo_test.npz", budgets=budgets, cache=args.aeon_cache)
    for k, spec in enumerate(args.classifier):
        onnx, npz = spec.split(":")
        rows += bench_classifier(th_real, reps, 40, Path(onnx), Path(npz), f"classifier{k + 2}",
                                 budgets=budgets, cache=args.aeon_cache)
    rows += bench_synthetic(sizes, th_syn, reps, t_len)
    cmd = ("python tools/delta_report.py --train-256" if args.train_256 and len(args.classifier) == 1
           else "python tools/delta_report.py" + "".join(
               f" --classifier {c}" for c in args.classifier) + (
               f" --aeon-cache {args.aeon_cache}" if args.aeon_cache else "")) + (
        " --quick" if args.quick else "")
    env = (f"{os.cpu_count()} CPUs shared, numpy {np.__version__}, "
           f"{time.strftime('%Y-%m-%d', time.gmtime())}")
    table = markdown(rows, cmd, env)
    print(table)
    (out / "rows.json").write_text(json.dumps(rows, indent=1, default=str))
    (out / "report.md").write_text(table + "\n")
    if plots:
        plot(rows, out / "delta_tradeoff.png")
    print(f"wrote report.md, {'delta_tradeoff.png, ' if plots else ''}rows.json into {out}")
    if args.update_docs:
        write_doc(report_out.DOCS / "delta.md", table)
        plot(rows, report_out.DOCS / "delta_tradeoff.png")
        print("updated docs/delta.md and docs/delta_tradeoff.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
