#!/usr/bin/env bash
# Peak memory of compress / decompress against model size (issue 17 §1): synthetic models with
# one large tensor (f32 safetensors of 0.1 / 1 / 4 GiB; a Q8_0 GGUF of 2 GiB, 7.5 GiB as f32),
# each codec at 1 and 2 threads. Peak RSS is /usr/bin/time's maximum resident set (file pages
# mapped by the process included). zstd -3 on the same file is the streaming peer, for scale.
#
#   scripts/memory-bench.sh [SIZES...]     default: 0.1 1 4 (GiB) and the 2 GiB GGUF
#
# Needs python3 with numpy, /usr/bin/time, zstd; about 2 x the largest size free on disk in
# $TMPDIR. Target: peak <= 512 MiB + 64 MiB per thread, whatever the size.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p tenpak-cli
W="${TMPDIR:-/tmp}/tenpak-memory-bench"
mkdir -p "$W"
trap 'rm -rf "$W"' EXIT
# A copy of the binary: a rebuild while the benchmark runs cannot change what it measures.
cp target/release/tenpak "$W/tenpak"
T="$W/tenpak"
echo "tenpak $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores"
sizes=("${@:-0.1 1 4}")
read -r -a sizes <<<"${sizes[*]}"
cat >"$W/mixed.json" <<'JSON'
{"algorithm": "mixed-tile-optimal", "params": {"target_bpw": 4.5, "formats": ["bfp8", "bfp4", "nvfp4", "bfp2"]}}
JSON
peak() { # label, command...: prints "label  peak-MiB  seconds"
    local label="$1"
    shift
    /usr/bin/time -f "%M %e" -o "$W/time" "$@" >/dev/null
    read -r kb s <"$W/time"
    printf '%-44s %8.0f MiB %8.2f s\n' "$label" "$(echo "$kb / 1024" | bc -l)" "$s"
}
run() { # model file, size label
    local m="$1" size="$2"
    for codec in byteplane bfp4 int4_g32 mixed; do
        local args=(--codec "$codec")
        [ "$codec" = mixed ] && args=(--config "$W/mixed.json")
        for t in 1 2; do
            peak "$size compress $codec -t$t" "$T" compress "$m" -o "$W/o.tpk" "${args[@]}" --threads "$t" --force -q
            peak "$size decompress $codec -t$t" "$T" decompress "$W/o.tpk" -o "$W/o.safetensors" --threads "$t" --force -q
        done
        if [ "$codec" = byteplane ] && [ "${m##*.}" = safetensors ]; then
            # Lossless: the decompressed tensor data must equal the input's, byte for byte.
            python3 - "$m" "$W/o.safetensors" <<'PY'
import hashlib, json, struct, sys
def data_hash(p):
    with open(p, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        f.seek(8 + n)
        h = hashlib.sha256()
        for b in iter(lambda: f.read(1 << 24), b""):
            h.update(b)
    return h.hexdigest()
a, b = data_hash(sys.argv[1]), data_hash(sys.argv[2])
print(f"{'':44} byteplane round trip: {'bit-exact' if a == b else 'DIFFERENT'}")
sys.exit(a != b)
PY
        fi
        rm -f "$W/o.tpk" "$W/o.safetensors"
    done
    peak "$size zstd -3 -T1 (peer, whole file)" zstd -3 -T1 -f -q "$m" -o "$W/o.zst"
    rm -f "$W/o.zst"
}
printf '%-44s %12s %10s\n' "model / step" "peak RSS" "time"
for g in "${sizes[@]}"; do
    python3 scripts/make_big_model.py safetensors "$W/m.safetensors" "$g"
    run "$W/m.safetensors" "f32 ${g} GiB"
    rm -f "$W/m.safetensors"
done
# eval ppl: the weights decoded into the model's own f32 buffers; target <= 1.3x the f32 model.
if [ -f models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf ]; then
    S=models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    "$T" compress "$S" -o "$W/s.tpk" --codec bfp8 --force -q >/dev/null
    printf '%-44s %8.0f MiB\n' "SmolLM2 f32 model (134,515,008 x 4 bytes)" "$(echo "134515008 * 4 / 1048576" | bc -l)"
    peak "SmolLM2 eval ppl GGUF (1 window of 64)" "$T" eval ppl "$S" --windows 1 --ctx 64 --kld-windows 0 -q
    peak "SmolLM2 eval ppl .tpk bfp8 (1 window of 64)" "$T" eval ppl "$W/s.tpk" --windows 1 --ctx 64 --kld-windows 0 -q
    rm -f "$W/s.tpk"
fi
if [ $# -eq 0 ]; then
    python3 scripts/make_big_model.py gguf "$W/m.gguf" 2
    run "$W/m.gguf" "Q8_0 2 GiB"
    rm -f "$W/m.gguf"
fi
