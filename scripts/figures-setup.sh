# Sourced by the figure scripts: fetch the test models, build tenpak, make a scratch folder
# (removed on exit) holding SmolLM2 as an f32 GGUF (its Q4_1 weights dequantized).
# Sets: repo, T (the tenpak binary), work, M (the models folder), SMOL_F32.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
scripts/fetch-test-models.sh >/dev/null
cargo build --release -q
T=$repo/target/release/tenpak
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
M=${TENPAK_MODELS:-models}
SMOL_F32=$work/smollm2-f32.gguf
python3 scripts/smollm2_f32_gguf.py "$M/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$SMOL_F32"
