#!/usr/bin/env bash
# The engine end to end, one thread: `tenpak compress` / `decompress` with byteplane, file to
# file, on SmolLM2 as bf16 safetensors (269 MB; its Q4_1 GGUF dequantized, then rounded to
# bf16 by tenpak), next to the zstd CLI and ZipNN's in-memory Python API in the same run.
#
#   scripts/bench-engine.sh [RUNS]          (default 5; best of RUNS for each row)
#   OLD_TENPAK=/path/to/tenpak scripts/bench-engine.sh   (adds rows for another build: before/after)
#
# MB/s are source megabytes (10^6 bytes of the bf16 safetensors file) per second.
# - tenpak: wall time of the whole command (read the input, encode, decode every chunk again to
#   prove the round trip, CRCs, write, fsync, rename); `sync` is the final fsync alone, reported
#   by the command (--json), and `w/o sync` is the rate with it taken out.
# - zstd -3 -T1: wall time of the CLI, file to file (no fsync).
# - ZipNN (pip install zipnn): compress()/decompress() of the bytes already in memory, one
#   thread; no file I/O, no fsync. Skipped when the package is missing.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
runs=${1:-5}
scripts/fetch-test-models.sh >/dev/null
cargo build --release -q
T=$repo/target/release/tenpak
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
M=${TENPAK_MODELS:-models}
$T compress "$M/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" -o "$work/raw.tpk" --codec raw -q >/dev/null
$T decompress "$work/raw.tpk" -o "$work/bf16.safetensors" --dtype bf16 -q >/dev/null
rm "$work/raw.tpk"
src=$work/bf16.safetensors
bytes=$(stat -c %s "$src")

# best WALL SYNC over $runs runs of a tenpak command printing --json with sync_seconds
best_tenpak() {
  local bw="" bs=""
  for _ in $(seq "$runs"); do
    local s e out
    s=$(date +%s.%N)
    out=$("$@" --json)
    e=$(date +%s.%N)
    read -r w sy < <(python3 -c "import json,sys; print($e-$s, json.loads(sys.argv[1])['sync_seconds'])" "$out")
    if [ -z "$bw" ] || python3 -c "import sys; sys.exit(0 if $w < $bw else 1)"; then bw=$w; bs=$sy; fi
  done
  echo "$bw $bs"
}
best_wall() {
  local b=""
  for _ in $(seq "$runs"); do
    local s e
    s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N)
    b=$(python3 -c "t=$e-$s; b='$b'; print(min(t, float(b)) if b else t)")
  done
  echo "$b"
}
row() { # label seconds sync
  python3 -c "
b=$bytes; t=$2; s=$3
extra = f'  sync {s:6.3f} s  w/o sync {b/1e6/(t-s):7.1f} MB/s' if s >= 0 else ''
print(f'{\"$1\":<40} {t:7.3f} s {b/1e6/t:8.1f} MB/s{extra}')"
}

echo "input: $bytes bytes of bf16 safetensors (SmolLM2-135M), best of $runs, one thread"
tenpak_rows() { # label binary
  local bin=$2
  read -r t s < <(best_tenpak "$bin" --threads 1 compress "$src" -o "$work/b.tpk" --force -q)
  row "$1 compress (byteplane)" "$t" "$s"
  read -r t s < <(best_tenpak "$bin" --threads 1 decompress "$work/b.tpk" -o "$work/back.safetensors" --force -q)
  row "$1 decompress" "$t" "$s"
  # The tensors must come back bit-exact (the header's metadata names the .tpk, so it differs).
  python3 - "$src" "$work/back.safetensors" <<'PY' || { echo "round trip differs" >&2; exit 1; }
import struct, sys
a, b = (open(f, "rb").read() for f in sys.argv[1:])
body = lambda x: x[8 + struct.unpack("<Q", x[:8])[0]:]
sys.exit(0 if body(a) == body(b) else 1)
PY
  echo "$1 ratio: $(python3 -c "import os; print(round($bytes/os.path.getsize('$work/b.tpk'), 4))")x"
}
tenpak_rows "tenpak" "$T"
if [ -n "${OLD_TENPAK:-}" ]; then
  # Builds before the sync_seconds field: wall time only.
  t=$(best_wall "$OLD_TENPAK" --threads 1 compress "$src" -o "$work/o.tpk" --force -q)
  row "before: compress (byteplane)" "$t" -1
  t=$(best_wall "$OLD_TENPAK" --threads 1 decompress "$work/o.tpk" -o "$work/oback.safetensors" --force -q)
  row "before: decompress" "$t" -1
fi
t=$(best_wall zstd -q -f -T1 -3 "$src" -o "$work/z.zst")
row "zstd -3 -T1 compress" "$t" -1
t=$(best_wall zstd -q -f -d -T1 "$work/z.zst" -o "$work/z.out")
row "zstd -3 -T1 decompress" "$t" -1
echo "zstd -3 ratio: $(python3 -c "import os; print(round($bytes/os.path.getsize('$work/z.zst'), 4))")x"
python3 - "$src" "$runs" <<'PY' || echo "ZipNN: not installed (pip install zipnn)"
import sys, time
import zipnn
src, runs = sys.argv[1], int(sys.argv[2])
data = open(src, "rb").read()
z = zipnn.ZipNN(bytearray_dtype="bfloat16", threads=1)
best_c = best_d = float("inf")
for _ in range(runs):
    # ZipNN reorders its input buffer in place: give it a fresh copy (not timed) each run.
    buf = bytearray(data)
    t = time.perf_counter(); c = z.compress(buf); best_c = min(best_c, time.perf_counter() - t)
    t = time.perf_counter(); d = z.decompress(c); best_d = min(best_d, time.perf_counter() - t)
assert bytes(d) == data
n = len(data)
print(f"{'ZipNN (in memory) compress':<40} {best_c:7.3f} s {n/1e6/best_c:8.1f} MB/s")
print(f"{'ZipNN (in memory) decompress':<40} {best_d:7.3f} s {n/1e6/best_d:8.1f} MB/s")
print(f"ZipNN ratio: {round(n/len(c), 4)}x")
PY
