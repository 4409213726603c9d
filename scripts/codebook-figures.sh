#!/usr/bin/env bash
# Issue 15's frontiers (rot, grid/nf4, vq, lowrank, tenpakx/pocketllm, int5/int6), from the
# repository root:
#
#   scripts/codebook-figures.sh smollm2 [OUT]   # the issue's codecs at 7-8.5 and 4.3-6 bpw
#   scripts/codebook-figures.sh heads [OUT]     # the same with the tied embedding/head at bfp8
#   scripts/codebook-figures.sh low [OUT]       # SmolLM2 at 2.5-5 bpw, next to int4_opt, nvfp4
#                                               # and the mixed-tile budget configs
#   scripts/codebook-figures.sh minilm [OUT]    # MiniLM embedding drift, every codec
#   scripts/codebook-figures.sh speed           # whole-model compress times and the bench
#
# SmolLM2: full slice (64 windows of 512, KLD over the first 32) against the F32 model, with
# llama.cpp's points on the plot. Data-free: no calibration text is read.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
what=${1:-smollm2}
scripts/fetch-test-models.sh >/dev/null
cargo build --release --quiet
tenpak=./target/release/tenpak
smol=models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
refs=compression_configs/frontier/llama_cpp_smollm2.csv
main="int6_g32_asym,int5_g32_asym,grid:group=32,rot+grid:group=32,nf4,tenpakx,pocketllm,tenpakx:rank=16,group=64,rot+vq:d=2,k=256"
H=";token_embd.weight=bfp8"
heads="int6_g32_asym$H,int5_g32_asym$H,rot+grid:group=32$H,grid:group=32$H,nf4$H,pocketllm$H,tenpakx:rank=16,group=64$H,nvfp4$H,int5_g32$H,int:bits=5,zero=asym,fit=als,group=32$H,int6_g32$H,rot+int5_g32_asym$H,rot+grid:n=32,group=32$H,grid:n=32,group=32$H,rot+int5_g32$H,rot+grid:n=64,group=32$H,grid:n=64,group=32$H,rot+int:bits=6,zero=asym,fit=als,group=64$H,grid:levels=fit,n=64,group=32$H,grid:levels=fit,n=32,group=32$H"
low="int4_opt,nvfp4,rot+nvfp4,rot+int4_g32,rot+int4_g64_asym,rot+int3_g32_asym,rot+grid:group=64,rot+grid:group=40,grid:n=8,group=32,rot+grid:n=8,group=32,rot+vq:d=2,k=256,group=32,rot+vq:d=4,k=256,group=32,vq:d=4,k=256,group=32,tenpakx:rank=0,d=8,k=256,bits=2,group=32,tenpakx:rank=16,d=4,k=256,bits=2,group=32,lowrank:rank=64"
budgets=$(mktemp -d)
trap 'rm -rf "$budgets"' EXIT
cp compression_configs/frontier/compression_config.mixed_tile_budget_4.*bpw.json "$budgets"/
minilm="int4_opt,nvfp4,rot+nvfp4,nf4,grid:group=32,rot+grid:group=32,rot+grid:group=64,grid:levels=fit,group=32,rot+int4_g32,rot+vq:d=2,k=256,group=32,vq:d=4,k=256,group=32,rot+grid:n=8,group=32,tenpakx,pocketllm,tenpakx:rank=16,group=64,int6_g32_asym,int5_g32_asym,lowrank:rank=64"
case $what in
  smollm2)
    time $tenpak --threads 2 eval sweep $smol --codecs "$main" --reference-points $refs -o "${2:-codebooks-smollm2}" ;;
  heads)
    time $tenpak --threads 2 eval sweep $smol --codecs "$heads" --reference-points $refs -o "${2:-codebooks-heads}" ;;
  low)
    time $tenpak --threads 2 eval sweep $smol --codecs "$low" --configs "$budgets" --reference-points $refs -o "${2:-codebooks-low}" ;;
  minilm)
    time $tenpak --threads 2 eval sweep models/minilm --codecs "$minilm" --configs "$budgets" -o "${2:-codebooks-minilm}" ;;
  speed)
    # Whole-model compress, 2 threads, from the same F32 GGUF as llama.cpp's quantizer (Q6_K,
    # Q4_K_M, 2 threads), best of two; tenpak's time includes learning the factors and codebooks,
    # decoding every chunk again to measure the error, and writing the file. Then the
    # single-thread bench (learn+encode and decode throughput per codec).
    source scripts/figures-setup.sh
    python3 - "$T" "$SMOL_F32" "$work" <<'PY'
import ctypes, os, subprocess, sys, time
import llama_cpp
T, src, work = sys.argv[1:4]
def best(f):
    ts = []
    for _ in range(2):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return min(ts)
rows = []
for c in ["tenpakx", "pocketllm", "vq:d=4,k=256", "rot+vq:d=2,k=256,group=32",
          "grid:levels=fit,n=64,group=32", "rot+grid:group=32", "int4_g32_asym"]:
    out = os.path.join(work, "m.tpk")
    t = best(lambda: subprocess.run([T, "--threads", "2", "compress", src, "-o", out, "--codec", c,
                                     "--force", "-q"], check=True, stdout=subprocess.DEVNULL))
    rows.append((f"tenpak {c}", t, os.path.getsize(out)))
llama_cpp.llama_backend_init()
for ftype, name in [(llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K, "Q6_K"), (llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M, "Q4_K_M")]:
    out = os.path.join(work, name + ".gguf")
    def q():
        p = llama_cpp.llama_model_quantize_default_params()
        p.nthread = 2
        p.ftype = ftype
        assert llama_cpp.llama_model_quantize(src.encode(), out.encode(), ctypes.byref(p)) == 0
    t = best(q)
    rows.append((f"llama.cpp {name}", t, os.path.getsize(out)))
print(f"{'quantizer':<42} {'seconds':>8} {'output bytes':>14}")
for name, t, size in rows:
    print(f"{name:<42} {t:8.2f} {size:14d}")
PY
    cargo bench --bench codebooks ;;
  *) echo "usage: $0 smollm2|heads|low|minilm|speed [OUT]" >&2; exit 2 ;;
esac
