#!/usr/bin/env bash
# Integer quantization figures (formats-spec/int.md), on MiniLM and on SmolLM2 (its Q4_1
# weights dequantized to f32). For each codec: bits per weight from the written file's size
# (every tensor: vectors too), element-weighted PCC and MAE over the float tensors, from
# `tenpak compress --json`. Beside them, llama.cpp's Q8_0 / Q4_0 / Q4_1 on the same weights
# (the PyPI gguf package's reference quantizers, every tensor whose rows are a multiple of 32
# long, which is all of them here), with their block sizes' bits per weight.
#
# Needs: python3 with numpy and gguf.
source "$(dirname "$0")/figures-setup.sh"
python3 - "$T" "$work" "$M/minilm/model.safetensors" "$SMOL_F32" <<'PY'
import json, os, subprocess, sys
import numpy as np
import gguf
from gguf import quants
T, work, *models = sys.argv[1:]
codecs = ["int8", "int8_row", "int4_g32", "int4_g32_asym", "int4_g64_asym", "int4_opt",
          "int4_residual", "int3_g32", "int3_g16_asym", "int2_g16_asym", "bfp8", "bfp4"]

def load(model):
    if model.endswith(".gguf"):
        r = gguf.GGUFReader(model)
        return {t.name: np.array(t.data, dtype=np.float32).reshape(-1) for t in r.tensors}
    from safetensors.numpy import load_file
    return {k: v.astype(np.float32).reshape(-1) for k, v in load_file(model).items()
            if v.dtype.kind == "f"}

def wmean(rows):
    n = sum(r[0] for r in rows)
    return sum(r[0] * r[1] for r in rows) / n, sum(r[0] * r[2] for r in rows) / n

for model in models:
    name = os.path.basename(model)
    w = load(model)
    params = sum(v.size for v in w.values())
    print(f"\n== {name}: {len(w)} float tensors, {params} weights")
    print(f"{'codec':<18} {'bpw (file)':>10} {'PCC':>10} {'MAE':>10}")
    for c in codecs:
        out = os.path.join(work, "o.tpk")
        r = json.loads(subprocess.run([T, "compress", model, "-o", out, "--codec", c, "--force",
                                       "--json", "-q"], check=True, capture_output=True,
                                      text=True).stdout)
        rows = [(np.prod(t["shape"]), t["metrics"]["pcc"], t["metrics"]["mae"])
                for t in r["tensors"] if t["source_dtype"] in ("F32", "F16", "BF16") or
                t["source_dtype"].startswith("Q")]
        pcc, mae = wmean(rows)
        # File size over every tensor, integer ones included (MiniLM's position ids).
        print(f"{c:<18} {8 * r['file_bytes'] / sum(np.prod(t['shape']) for t in r['tensors']):>10.3f} "
              f"{pcc:>10.6f} {mae:>10.3e}")
    for qt, bpw in [("Q8_0", 8.5), ("Q4_1", 5.0), ("Q4_0", 4.5)]:
        t = getattr(gguf.GGMLQuantizationType, qt)
        rows = []
        for k, v in w.items():
            if v.size % 32:
                continue
            y = quants.dequantize(quants.quantize(v.reshape(-1, 32), t), t).reshape(-1)
            x64, y64 = v.astype(np.float64), y.astype(np.float64)
            sx, sy = x64 - x64.mean(), y64 - y64.mean()
            den = np.sqrt((sx * sx).sum() * (sy * sy).sum())
            pcc = (sx * sy).sum() / den if den > 0 else 1.0
            rows.append((v.size, pcc, np.abs(x64 - y64).mean()))
        pcc, mae = wmean(rows)
        print(f"{'llama.cpp ' + qt:<18} {bpw:>10.3f} {pcc:>10.6f} {mae:>10.3e}")
PY
