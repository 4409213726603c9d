#!/usr/bin/env bash
# The figures of issue 14 (N-lossless KV compression) on SmolLM2, in one run:
#   1. capture fp16 dumps of the full slice (64 windows of 512 tokens, 2 decode steps each);
#   2. lossless: kv compress with each lossless method (all layers), against zstd -19 and -3 on
#      the same .bin files (the zstd command line, one frame per file, as the reference's zstd mode);
#   3. reference parity: kv analyze with the reference's modes (N=2, 10-bit fake quant +
#      gear-delta; block-norm bs128_topk0.02_b10), and, when REF_SCRIPTS points at MNN's
#      exp/n_lossless folder, the reference scripts on the same dumps;
#   4. kv sweep (the reference's grid, extended);
#   5. in the model: eval ppl --kv for the policies below, and llama.cpp's KV cache types
#      (scripts/kv-llamacpp.py; needs python3 with numpy, gguf and llama-cpp-python).
# Usage: scripts/kv-figures.sh [OUT_DIR] (default kv-figures). Takes about 40 minutes on 2 cores.
source "$(dirname "$0")/figures-setup.sh"
out=${1:-kv-figures}
mkdir -p "$out"
dumps=$work/dumps
G=$M/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
C=$M/corpus/cfi-en.txt

"$T" -q kv capture "$G" -o "$dumps" --corpus "$C" --windows 64 --ctx 512 --decode-steps 2 \
  --dtype fp16 --force

echo "== lossless (all 30 layers), payload ratio, one .tpk each" | tee "$out/lossless.txt"
for m in zstd gear gear-delta gear-auto byteplane; do
  "$T" -q kv compress "$dumps" -o "$work/l.tpk" --lossless "$m" --lossless-first-n 99 --force \
    --json > "$work/l.json"
  python3 - "$m" "$work/l.json" <<'PY' | tee -a "$out/lossless.txt"
import json, sys
r = json.load(open(sys.argv[2]))
def ratio(f):
    t = [x for x in r["tensors"] if f(x)]
    return sum(x["raw_bytes"] for x in t) / sum(x["payload_bytes"] for x in t)
print(f'{sys.argv[1]:<11} all {r["payload_ratio"]:.4f}  prefill K {ratio(lambda x: x["which"] == "k" and x["stage"] == "prefill"):.4f}'
      f' V {ratio(lambda x: x["which"] == "v" and x["stage"] == "prefill"):.4f}'
      f'  decode {ratio(lambda x: x["stage"] == "decode"):.4f}  file {r["file_ratio"]:.4f}  {r["seconds"]:.1f} s')
PY
done
for lvl in 3 19; do
  raw=0; comp=0
  while IFS= read -r f; do
    raw=$((raw + $(stat -c %s "$f")))
    comp=$((comp + $(zstd -q -c -$lvl "$f" | wc -c)))
  done < <(find "$dumps" -name '*.bin')
  python3 -c "print(f'zstd -$lvl CLI all {$raw / $comp:.4f}')" | tee -a "$out/lossless.txt"
done

echo "== reference parity" | tee "$out/parity.txt"
"$T" -q kv analyze "$dumps" -o "$out/analyze_q10" --lossy fake-quant:bits=10 --lossless gear-delta --json > /dev/null
"$T" -q kv analyze "$dumps" -o "$out/analyze_bn" --lossy blocknorm-ref:block=128,topk=0.02,bits=10 --json > /dev/null
"$T" -q kv analyze "$dumps" -o "$out/analyze_q10_codes" --lossy quant:bits=10 --lossless gear-auto --json > /dev/null
if [ -n "${REF_SCRIPTS:-}" ]; then
  python3 "$REF_SCRIPTS/analyze_mixed.py" --dump-dir "$dumps" --out-dir "$out/ref_q10" \
    --lossless-first-n 2 --lossy-method quant --lossy-bits 10 --compress-mode gear-delta > /dev/null
  python3 "$REF_SCRIPTS/analyze_blocknorm.py" --dump-dir "$dumps" --out-dir "$out/ref_bn" \
    --block-size 128 --topk-ratio 0.02 --bits 10 > /dev/null
fi
for d in "$out"/analyze_* "$out"/ref_*; do
  [ -d "$d" ] && { echo "-- $d"; cat "$d"/*summary.md; } >> "$out/parity.txt"
done

"$T" -q kv sweep "$dumps" -o "$out/sweep" > "$out/sweep.txt"

echo "== in the model (64 windows), exact f32 cache as the reference" | tee "$out/ppl.txt"
cat > "$work/p45.json" <<'EOF'
{"lossy": "kivi:bits=4,group=64,outliers=0.005",
 "layers": {"1": "kivi:bits=8,group=128",
            "28-29": "kivi:bits=3,group=64,outliers=0.005",
            "5-6": "kivi:bits=3,group=64,outliers=0.005"},
 "sink_tokens": 4}
EOF
run() {
  "$T" -q eval ppl "$G" --corpus "$C" "$@" --json > "$work/p.json"
  python3 - "$*" "$work/p.json" <<'PY' | tee -a "$out/ppl.txt"
import json, sys
r = json.load(open(sys.argv[2])); c = r["comparison"]
print(f'{sys.argv[1]:<70} {r["kv"]["bits_per_value"]:6.3f} bits  dPPL {c["delta_ppl_pct"]:+.3f}% ± {c["delta_ppl_se_pct"]:.3f}'
      f'  KLD {c["kld"]:.5f}  top-1 {c["top1_agree_pct"]:.2f}%')
PY
}
run --kv raw
run --kv kivi:bits=8,group=128
run --kv quant:bits=8
run --kv kivi:bits=4,group=128
run --kv kivi:bits=4,group=64 --kv-sink-tokens 4
run --kv raw --kv-policy "$work/p45.json"
run --kv kivi:bits=3,group=64,outliers=0.005 --kv-sink-tokens 4
run --kv kivi:bits=2,group=32,outliers=0.01 --kv-sink-tokens 4
"$T" -q kv compress "$dumps" -o "$work/p45.tpk" --stage prefill --lossless-first-n 0 \
  --policy "$work/p45.json" --force | tail -1 | sed 's/^/p45 policy on the prefill dumps, from the file: /' | tee -a "$out/ppl.txt"

python3 scripts/kv-llamacpp.py "$SMOL_F32" "$C" 64 > "$out/llamacpp.json"
