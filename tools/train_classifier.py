"""Train the demo sequence classifier on JapaneseVowels and export it to ONNX.

The data set (UCI Japanese Vowels: 9 speakers, 12 LPC cepstrum channels, 7-29 frames;
train 270 / test 370) ships inside the `aeon` wheel. aeon pins an old numba, so it is never
installed: the wheel is fetched with `pip download --no-deps` into a temp dir and the two
`.ts` files are read straight out of the zip.

Lengths are handled by LEFT padding: every sequence is padded with zeros at the front up to
T = 29, so the last time step is the last valid frame of every sequence. The network is a
plain stack (Transpose -> LSTM -> LSTM -> last step -> Gemm) that needs no sequence_lens,
runs unchanged in onnxruntime on the padded batch, and is trained on exactly that padding.

Writes edgeseq/data/demo_classifier.onnx and edgeseq/data/demo_test.npz
(x [N,T,C] float32 standardised + left-padded, lengths [N] int32, y [N] int64, classes).

    .venv/bin/python tools/train_classifier.py            # ~1 min on one core
"""
from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "edgeseq" / "data"
AEON = "aeon==1.6.0"
TS_DIR = "aeon/datasets/data/JapaneseVowels/"
T_MAX = 29


def fetch_ts(cache: Path | None = None) -> dict[str, str]:
    """Text of JapaneseVowels_{TRAIN,TEST}.ts read out of the aeon wheel."""
    tmp = Path(cache or tempfile.mkdtemp(prefix="edgeseq-aeon-"))
    wheels = sorted(tmp.glob("aeon-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", AEON,
                        "-d", str(tmp)], check=True)
        wheels = sorted(tmp.glob("aeon-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as z:
        return {split: z.read(f"{TS_DIR}JapaneseVowels_{split}.ts").decode()
                for split in ("TRAIN", "TEST")}


def parse_ts(text: str) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Parse the sktime/aeon .ts format (multivariate, unequal length, class label last).

    Each data line is `dim1:dim2:...:dimC:label`, a dim being comma-separated floats.
    Returns per-series arrays [T_i, C], integer labels (index into `classes`), classes.
    """
    classes: list[str] = []
    series, labels = [], []
    in_data = False
    for line in io.StringIO(text):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        low = line.lower()
        if not in_data:
            if low.startswith("@classlabel"):
                classes = line.split()[2:]
            elif low.startswith("@data"):
                in_data = True
            continue
        *dims, label = line.split(":")
        arr = np.array([[float(v) for v in d.split(",")] for d in dims], dtype=np.float64).T
        series.append(arr)
        labels.append(classes.index(label.strip()))
    return series, np.array(labels, dtype=np.int64), classes


def left_pad(series: list[np.ndarray], t_max: int = T_MAX) -> tuple[np.ndarray, np.ndarray]:
    """[N, t_max, C] with each series right-aligned (zeros in front), and lengths."""
    c = series[0].shape[1]
    x = np.zeros((len(series), t_max, c), dtype=np.float32)
    lengths = np.array([len(s) for s in series], dtype=np.int32)
    for k, s in enumerate(series):
        x[k, t_max - len(s):] = s
    return x, lengths


def build_model(n_input: int, hidden: int, layers: int, n_classes: int):
    import torch

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(n_input, hidden, num_layers=layers, batch_first=True)
            self.head = torch.nn.Linear(hidden, n_classes)

        def forward(self, x):
            y, _ = self.lstm(x)
            return self.head(y[:, -1, :])

    return Classifier()


def train(x, y, *, hidden: int, layers: int, epochs: int, seed: int, n_classes: int):
    import torch

    torch.manual_seed(seed)
    model = build_model(x.shape[2], hidden, layers, n_classes)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        for k in range(0, len(xt), 32):
            idx = perm[k:k + 32]
            # NOTE: small Gaussian input noise; the training set has only 270 sequences
            xb = xt[idx] + 0.05 * torch.randn(xt[idx].shape, generator=gen) * (xt[idx] != 0)
            loss = torch.nn.functional.cross_entropy(model(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    return model


def export(model, path: Path, n_input: int) -> None:
    import torch

    dummy = torch.zeros(1, T_MAX, n_input)
    # legacy (TorchScript) exporter: one self-contained file with a fused ONNX LSTM op
    torch.onnx.export(model, (dummy,), str(path), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}}, opset_version=14,
                      dynamo=False)
    drop_zero_initial_states(path)


def drop_zero_initial_states(path: Path) -> None:
    """Replace the exporter's all-zero initial states (ConstantOfShape on the dynamic batch
    size, then Slice) by absent inputs, which ONNX defines as zeros, and drop dead nodes.

    The batch size is symbolic, so that shape arithmetic cannot be folded; without it the
    graph is Transpose -> LSTM -> Squeeze -> LSTM -> Squeeze -> Transpose -> Gather -> Gemm.
    """
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    producer = {o: n for n in g.node for o in n.output}

    def is_zeros(name: str) -> bool:
        n = producer.get(name)
        while n is not None and n.op_type == "Slice":
            n = producer.get(n.input[0])
        if n is None or n.op_type != "ConstantOfShape":
            return False
        val = [a for a in n.attribute if a.name == "value"]
        return not val or not numpy_helper.to_array(val[0].t).any()

    for n in g.node:
        if n.op_type == "LSTM":
            for k in (5, 6):
                if k < len(n.input) and n.input[k] and is_zeros(n.input[k]):
                    n.input[k] = ""
            while n.input and not n.input[-1]:
                n.input.pop()
    live = {o.name for o in g.output}
    keep = []
    for n in reversed(list(g.node)):
        if any(o in live for o in n.output):
            keep.append(n)
            live.update(i for i in n.input if i)
    del g.node[:]
    g.node.extend(reversed(keep))
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DATA / "demo_classifier.onnx")
    ap.add_argument("--test-out", type=Path, default=DATA / "demo_test.npz")
    ap.add_argument("--cache", type=Path, default=None, help="folder holding the aeon wheel")
    args = ap.parse_args(argv)

    import onnxruntime as ort
    import torch

    torch.set_num_threads(1)
    texts = fetch_ts(args.cache)
    tr_s, tr_y, classes = parse_ts(texts["TRAIN"])
    te_s, te_y, _ = parse_ts(texts["TEST"])
    stack = np.concatenate(tr_s)
    mean, std = stack.mean(0), stack.std(0)
    # standardise with train statistics, then pad: padding stays exactly zero
    tr_x, tr_len = left_pad([(s - mean) / std for s in tr_s])
    te_x, te_len = left_pad([(s - mean) / std for s in te_s])
    print(f"train {tr_x.shape} test {te_x.shape} classes {classes} "
          f"lengths {te_len.min()}..{te_len.max()}")

    model = train(tr_x, tr_y, hidden=args.hidden, layers=args.layers, epochs=args.epochs,
                  seed=args.seed, n_classes=len(classes))
    with torch.no_grad():
        logits_pt = model(torch.from_numpy(te_x)).numpy()
    acc_pt = float((logits_pt.argmax(1) == te_y).mean())

    args.out.parent.mkdir(parents=True, exist_ok=True)
    export(model, args.out, tr_x.shape[2])
    sess = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    logits_ort = sess.run(None, {"x": te_x})[0]
    acc_ort = float((logits_ort.argmax(1) == te_y).mean())
    print(f"test accuracy: pytorch {acc_pt:.4f}  onnxruntime {acc_ort:.4f}  "
          f"max|logit diff| {np.abs(logits_pt - logits_ort).max():.2e}  "
          f"model {args.out.stat().st_size} bytes")
    np.savez_compressed(args.test_out, x=te_x, lengths=te_len, y=te_y,
                        classes=np.array(classes), mean=mean.astype(np.float32),
                        std=std.astype(np.float32))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
