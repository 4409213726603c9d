#!/usr/bin/env bash
# Pruning and delta figures (formats-spec/sparse.md, delta.md).
# 1. Pruning: payload bytes of every float matrix, dense vs 50% / 90% magnitude pruning, with
#    f16 and int8_g64 values, on MiniLM and SmolLM2 (f32 from its Q4_1 GGUF); element-weighted
#    PCC against the unpruned weights.
# 2. Delta: a synthetic fine-tune of MiniLM (noise of std 1e-3 on every query matrix, a rank-8
#    update of 1e-3 on one MLP matrix, one new tensor; numpy seed 0) against MiniLM: file size
#    of the full model vs the delta (xor + byteplane, lossless; f32 difference + int8_g64 / f16).
#
# Needs: python3 with numpy, safetensors and gguf.
source "$(dirname "$0")/figures-setup.sh"
python3 - "$T" "$work" "$M/minilm/model.safetensors" "$SMOL_F32" <<'PY'
import json, math, os, subprocess, sys
import numpy as np
from safetensors.numpy import load_file, save_file
T, work, minilm, smol = sys.argv[1:]
out = os.path.join(work, "o.tpk")

def compress(model, *args):
    r = subprocess.run([T, "compress", model, "-o", out, "--force", "-q", "--json", *args],
                       check=True, capture_output=True, text=True).stdout
    return json.loads(r)

print("pruning (float matrices only; vectors stay dense)")
print(f"{'model':<20} {'values':<9} {'rule':<14} {'dense B':>11} {'pruned B':>11} {'ratio':>7} {'bpw':>6} {'PCC':>9}")
for model in [minilm, smol]:
    for codec in ["f16", "int8_g64"]:
        mats = lambda r: [t for t in r["tensors"] if len(t["shape"]) >= 2]
        dense = sum(t["encoded_bytes"] for t in mats(compress(model, "--codec", codec)))
        for rule in ["magnitude:0.5", "magnitude:0.9"]:
            ts = mats(compress(model, "--codec", codec, "--prune", rule))
            b = sum(t["encoded_bytes"] for t in ts)
            n = sum(math.prod(t["shape"]) for t in ts)
            pcc = sum(t["metrics"]["pcc"] * math.prod(t["shape"]) for t in ts) / n
            print(f"{os.path.basename(model):<20} {codec:<9} {rule:<14} {dense:>11} {b:>11} "
                  f"{dense / b:>7.3f} {8 * b / n:>6.3f} {pcc:>9.6f}")

w = load_file(minilm)
rng = np.random.default_rng(0)
ft = {}
for k, v in w.items():
    v = v.copy()
    if k.endswith("attention.self.query.weight"):
        v += (rng.standard_normal(v.shape) * 1e-3).astype(v.dtype)
    if k == "encoder.layer.3.intermediate.dense.weight":
        a = rng.standard_normal((v.shape[0], 8)).astype(np.float32)
        b = rng.standard_normal((8, v.shape[1])).astype(np.float32)
        v += 1e-3 * a @ b
    ft[k] = v
ft["extra.head.weight"] = rng.standard_normal((8, 384)).astype(np.float32)
ftp = os.path.join(work, "ft.safetensors")
save_file(ft, ftp)
print("\ndelta: synthetic MiniLM fine-tune against MiniLM")
full = compress(ftp)["file_bytes"]
print(f"{'full model, byteplane':<40} {full:>11} B")
for codec in ["byteplane", "zstd", "int8_g64", "f16"]:
    r = compress(ftp, "--base", minilm, "--codec", codec)
    changed = [t for t in r["tensors"] if t.get("delta") == "sub"]
    worst = min((t["metrics"]["pcc"] for t in changed), default=1.0)
    print(f"{'delta, --codec ' + codec:<40} {r['file_bytes']:>11} B  {full / r['file_bytes']:>6.2f}x smaller"
          f"  (lowest PCC of a changed tensor {worst:.9f})")
PY
