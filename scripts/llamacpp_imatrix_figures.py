#!/usr/bin/env python3
"""llama.cpp's quantizer with and without an importance matrix: the calibrated peer of tenpak's
calibrated rows (issue 16). Quantizes only; the figures script evaluates every output with
`tenpak eval ppl` on the slice of formats-spec/eval.md (llama.cpp's own inference of quantized
types stops with an illegal instruction on the project's VM, so both sides are evaluated by the
same f32 forward pass: the GGUF's blocks dequantized, no activation quantization).

    python3 scripts/llamacpp_imatrix_figures.py SMOLLM2-F32.gguf CAL.safetensors OUTDIR TYPE...

Each TYPE is made twice from the F32 GGUF by llama_model_quantize (2 threads): without an
importance matrix, and with the E[x^2] that `tenpak calibrate` measured on the corpus tokens
after the evaluation slice (the same calibration tokens as tenpak's calibrated codecs). Prints
one line per file: label, path, seconds.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llamacpp_imatrix_quantize import quantize  # noqa: E402


def main():
    src, cal, outdir = sys.argv[1:4]
    os.makedirs(outdir, exist_ok=True)
    for t in sys.argv[4:]:
        for label, c in [(t, None), (f"{t} (imatrix)", cal)]:
            dst = os.path.join(outdir, f"{t}{'' if c is None else '-imatrix'}.gguf")
            secs = quantize(src, c, dst, t, 2)
            print(f"{label}\t{dst}\t{secs:.2f}", flush=True)


if __name__ == "__main__":
    main()
