"""Export small PyTorch recurrent models to ONNX with both exporters (dynamo and legacy).

    python tools/export_torch_onnx.py OUT_DIR [--exporter dynamo|legacy|both] [--model NAME]

Models (seeded random weights, small sizes so exports take seconds):
- bilstm_head: 2-layer bidirectional LSTM + Linear head over variable-length sequences.
  Lengths: the legacy exporter turns pack_padded_sequence into LSTM `sequence_lens`; the
  dynamo exporter cannot trace packed sequences, so its export runs padded sequences with a
  dynamic time axis (lengths are not part of that graph).
- bilstm_unsorted: the same with pack_padded_sequence(enforce_sorted=False) (legacy only):
  the export sorts the batch by length at run time and unsorts the result.
- gru: 1-layer GRU (PyTorch GRU is ONNX linear_before_reset=1) + Linear.
- conv_lstm: Conv1d front end (stride 2) + ReLU + LSTM + Linear.
- last_step_lstm: batch-first LSTM whose zero initial states are built in forward from the
  batch size, and a Linear head on the last step (dynamic batch and length).
Each export writes NAME.<exporter>.onnx (dynamo also a .onnx.data file when it externalises
weights) and NAME.<exporter>.npz with example inputs. Tests call `export_all(tmp_path)`.
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

IN, HID, OUT, T, N = 6, 8, 3, 7, 3


class BiLSTMHead(nn.Module):
    sorted = True

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(IN, HID, num_layers=2, bidirectional=True)
        self.head = nn.Linear(2 * HID, OUT)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None:
            y, _ = self.lstm(x)
        else:
            # enforce_sorted=True: lengths sorted descending (the caller sorts). With False
            # (bilstm_unsorted) the legacy export sorts the batch with TopK on the lengths and
            # unsorts it with ScatterElements at run time.
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=self.sorted)
            y, _ = self.lstm(packed)
            y, _ = nn.utils.rnn.pad_packed_sequence(y, total_length=x.shape[0])
        return self.head(y)


class BiLSTMUnsorted(BiLSTMHead):
    sorted = False


class GRUHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(IN, HID, batch_first=True)
        self.head = nn.Linear(HID, OUT)

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, h = self.gru(x, h0)
        return self.head(y), h


class ConvLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(IN, 10, kernel_size=3, stride=2, padding=1)
        self.lstm = nn.LSTM(10, HID, batch_first=True)
        self.head = nn.Linear(HID, OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # x [N, C, L]
        f = torch.relu(self.conv(x)).transpose(1, 2)        # [N, L', 10]
        y, _ = self.lstm(f)
        return torch.softmax(self.head(y), dim=-1)


class LastStepLSTM(nn.Module):
    """Zero initial states built in forward from the batch size (torch.zeros(1, N, H)), and a
    head on the last time step: exporters turn these into Shape/Expand/Gather arithmetic."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(IN, HID, batch_first=True)
        self.head = nn.Linear(HID, OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # x [N, T, C]
        h0 = torch.zeros(1, x.size(0), HID)
        c0 = torch.zeros(1, x.size(0), HID)
        y, _ = self.lstm(x, (h0, c0))
        return self.head(y[:, -1, :])


def _examples(name: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if name == "bilstm_unsorted":
        lengths = np.array([4, T, 2][:N], dtype=np.int64)
        return {"x": rng.standard_normal((T, N, IN)).astype(np.float32), "lengths": lengths}
    if name == "bilstm_head":
        lengths = np.array([T, 4, 2][:N], dtype=np.int64)
        return {"x": rng.standard_normal((T, N, IN)).astype(np.float32), "lengths": lengths}
    if name == "gru":
        return {"x": rng.standard_normal((N, T, IN)).astype(np.float32),
                "h0": rng.standard_normal((1, N, HID)).astype(np.float32) * 0.5}
    if name == "last_step_lstm":
        return {"x": rng.standard_normal((N, T, IN)).astype(np.float32)}
    return {"x": rng.standard_normal((N, IN, 2 * T)).astype(np.float32)}


MODELS = {"bilstm_head": BiLSTMHead, "bilstm_unsorted": BiLSTMUnsorted, "gru": GRUHead,
          "conv_lstm": ConvLSTM, "last_step_lstm": LastStepLSTM}
# packed sequences do not trace under torch.export: the dynamo form of bilstm_unsorted would
# be bilstm_head's
LEGACY_ONLY = {"bilstm_unsorted"}
DYNAMIC = {  # input -> {axis: name}, for the legacy exporter's dynamic_axes
    "bilstm_head": {"x": {0: "T", 1: "N"}, "lengths": {0: "N"}},
    "bilstm_unsorted": {"x": {0: "T", 1: "N"}, "lengths": {0: "N"}},
    "gru": {"x": {0: "N", 1: "T"}, "h0": {1: "N"}},
    "conv_lstm": {"x": {0: "N", 2: "L"}},
    "last_step_lstm": {"x": {0: "N", 1: "T"}},
}


def export(name: str, exporter: str, out_dir: Path, seed: int = 0) -> tuple[Path, Path]:
    """Export one model with one exporter; returns (model.onnx, inputs.npz)."""
    torch.manual_seed(seed)
    model = MODELS[name]().eval()
    ex = _examples(name, np.random.default_rng(seed))
    if name == "bilstm_head" and exporter == "dynamo":
        ex = {"x": ex["x"]}      # packed sequences do not trace under torch.export
    args = tuple(torch.from_numpy(v) for v in ex.values())
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.{exporter}.onnx"
    names = list(ex)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "legacy":
            torch.onnx.export(model, args, str(path), dynamo=False, input_names=names,
                              dynamic_axes={k: v for k, v in DYNAMIC[name].items() if k in names},
                              opset_version=17)
        else:
            dims = {"bilstm_head": {"x": {0: torch.export.Dim("T", min=2, max=64)}},
                    "gru": {"x": {1: torch.export.Dim("T", min=2, max=64)}, "h0": None},
                    "conv_lstm": {"x": {2: torch.export.Dim.AUTO}},
                    "last_step_lstm": {"x": {0: torch.export.Dim("N", min=1, max=64),
                                             1: torch.export.Dim("T", min=2, max=64)}}}[name]
            prog = torch.onnx.export(model, args, dynamo=True, input_names=names,
                                     dynamic_shapes=dims, verbose=False)
            prog.save(str(path), external_data=True)
    npz = out_dir / f"{name}.{exporter}.npz"
    np.savez(npz, **ex)
    return path, npz


def export_all(out_dir: Path, exporters=("dynamo", "legacy")) -> list[tuple[str, str, Path, Path]]:
    return [(name, e, *export(name, e, Path(out_dir))) for name in MODELS for e in exporters
            if not (e == "dynamo" and name in LEGACY_ONLY)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--exporter", choices=("dynamo", "legacy", "both"), default="both")
    ap.add_argument("--model", choices=sorted(MODELS), default=None)
    a = ap.parse_args()
    exporters = ("dynamo", "legacy") if a.exporter == "both" else (a.exporter,)
    for name in [a.model] if a.model else MODELS:
        for e in exporters:
            if e == "dynamo" and name in LEGACY_ONLY:
                continue
            p, _ = export(name, e, a.out_dir)
            print(p, p.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
