"""Benchmark edgeseq's runtime against onnxruntime (same as `edgeseq bench`); see
edgeseq/commands/_benchmark.py. Usage: python tools/bench.py [--quick] [--json PATH]

    python tools/bench.py --variants [--quick] [--json PATH]

runs the variant benchmark instead (tools/variants_bench.py: SRU vs an edgeseq LSTM of the
same width and vs the `sru` package in PyTorch eager mode).

    python tools/bench.py real [--quick] [--only NAME,...]

runs the `real` suite (tools/bench_real.py: whole models at real shapes vs onnxruntime).

    python tools/bench.py int8 [--quick] [--haswell] [--sizes 1024,256] [--json PATH]

runs the int8 section (tools/bench_int8.py: edgeseq int8 LSTM, int8 and int16 activations,
vs onnxruntime DynamicQuantizeLSTM per-tensor/per-channel and fp32; time ratios, max error).

    python tools/bench.py int8-rnn [--quick] [--rounds 3] [--only gru,tflite]

runs its GRU and TFLite rows (tools/bench_int8_rnn.py: GRU 1024 int8 vs onnxruntime fp32;
TFLite hybrid LSTM 256 vs the TFLite interpreter, 1 thread).

    python tools/bench.py delta [--quick] [--budget 5] [--aeon-cache DIR]

runs the delta section (tools/bench_delta.py: the demo classifier with per-layer thresholds
calibrated for a MAC budget, generated delta code vs generated dense code, whole model)."""
import sys

from edgeseq.commands.bench import main

if __name__ == "__main__":
    if sys.argv[1:2] == ["real"]:
        from bench_real import main as real_main            # tools/ is on sys.path here
        sys.exit(real_main(sys.argv[2:]))
    if sys.argv[1:2] == ["int8"]:
        from bench_int8 import main as int8_main            # tools/ is on sys.path here
        sys.exit(int8_main(sys.argv[2:]))
    if sys.argv[1:2] == ["int8-rnn"]:
        from bench_int8_rnn import main as int8_rnn_main    # tools/ is on sys.path here
        sys.exit(int8_rnn_main(sys.argv[2:]))
    if sys.argv[1:2] == ["delta"]:
        from bench_delta import main as delta_main          # tools/ is on sys.path here
        sys.exit(delta_main(sys.argv[2:]))
    if "--variants" in sys.argv[1:]:
        from variants_bench import main as variants_main    # tools/ is on sys.path here
        sys.exit(variants_main([a for a in sys.argv[1:] if a != "--variants"]))
    sys.exit(main())
