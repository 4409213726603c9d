#!/usr/bin/env bash
# Lossless figures on MiniLM, one thread, in one run: tenpak byteplane vs the zstd CLI at
# levels 3 and 19, on the weights as f32 (the original file) and as bf16 (converted by tenpak).
# Ratios are file sizes; MB/s are source megabytes (10^6 bytes) per second of wall time, best of
# three runs. tenpak's compress time includes what `tenpak compress` always does: decoding every
# chunk again for the metrics and the bit-exactness check.
#
#   scripts/bench-lossless.sh            (needs: zstd, python3; fetches the model if missing)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
scripts/fetch-test-models.sh >/dev/null
cargo build --release -q
T=target/release/tenpak
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "${TENPAK_MODELS:-models}/minilm/model.safetensors" "$work/f32.safetensors"
$T compress "$work/f32.safetensors" -o "$work/raw.tpk" --codec raw -q >/dev/null
$T decompress "$work/raw.tpk" -o "$work/bf16.safetensors" --dtype bf16 -q >/dev/null

best() { # best wall time of 3 runs of "$@", in seconds
  local b=""
  for _ in 1 2 3; do
    local s e
    s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N)
    b=$(python3 -c "import sys; t=$e-$s; b='$b'; print(min(t, float(b)) if b else t)")
  done
  echo "$b"
}
size() { stat -c %s "$1"; }
row() { # name source_file compressed_file t_compress t_decompress
  python3 - "$@" <<'PY'
import os, sys
name, src, comp, tc, td = sys.argv[1:]
s, c = os.path.getsize(src), os.path.getsize(comp)
print(f"{name:<28} {s/c:7.4f}x  {s/1e6/float(tc):8.1f} MB/s  {s/1e6/float(td):8.1f} MB/s")
PY
}
printf '%-28s %8s  %13s  %13s\n' "codec / input" "ratio" "compress" "decompress"
for dt in f32 bf16; do
  src="$work/$dt.safetensors"
  tc=$(best $T --threads 1 compress "$src" -o "$work/$dt.tpk" --force -q)
  td=$(best $T --threads 1 decompress "$work/$dt.tpk" -o "$work/$dt.back.safetensors" --force -q)
  row "tenpak byteplane, $dt" "$src" "$work/$dt.tpk" "$tc" "$td"
  for lvl in 3 19; do
    tc=$(best zstd -q -f -T1 -$lvl "$src" -o "$work/$dt.$lvl.zst")
    td=$(best zstd -q -f -d -T1 "$work/$dt.$lvl.zst" -o "$work/$dt.$lvl.out")
    row "zstd -$lvl, $dt" "$src" "$work/$dt.$lvl.zst" "$tc" "$td"
  done
done
