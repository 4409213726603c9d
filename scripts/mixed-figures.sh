#!/usr/bin/env bash
# Mixed-tile assignment figures (formats-spec/mixed.md): on MiniLM and on SmolLM2 (its Q4_1
# weights dequantized to f32), for per-tensor PCC >= 0.99, 0.999 and 0.9999, the payload bytes of
# every float matrix under each mixed-tile algorithm, against the best single format per tensor
# that meets the same PCC and against all-bfp8; then the 4.5 bpw budget against plain bfp4
# (PCC element-weighted over the matrices), with and without mxfp4 and nvfp4 as candidates.
# Candidates: bf16, bfp8, bfp4, bfp2, fp0 (greedy starts from bf16). Greedy and random use seed 1.
# Sizes are real payload bytes from `tenpak analyze` (the same encoder as compress).
#
# Needs: python3 with numpy and gguf (for the SmolLM2 f32 GGUF).
source "$(dirname "$0")/figures-setup.sh"
python3 - "$T" "$work" "$M/minilm/model.safetensors" "$SMOL_F32" <<'PY'
import json, subprocess, sys, time, os
T, work, *models = sys.argv[1:]
fmts = ["bf16", "bfp8", "bfp4", "bfp2", "fp0"]

def analyze(model, args):
    t = time.perf_counter()
    out = subprocess.run([T, "analyze", model, "--no-files", "--json", "-q"] + args,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out), time.perf_counter() - t

def cfg(name, alg, params, seed=None):
    c = {"algorithm": alg, "params": dict(params, formats=fmts)}
    if seed is not None:
        c["seed"] = seed
    p = os.path.join(work, name + ".json")
    json.dump(c, open(p, "w"))
    return p

for model in models:
    name = os.path.basename(model)
    base, _ = analyze(model, sum([["-c", f] for f in fmts], []) + ["--no-tile-vectors"])
    rows = {}
    for r in base["rows"]:
        if len(r["shape"]) >= 2:
            rows.setdefault(r["tensor"], {})[r["format"]] = r
    n = sum(next(iter(v.values()))["numel"] for v in rows.values())
    bfp8 = sum(v["bfp8"]["encoded_bytes"] for v in rows.values())
    print(f"\n== {name}: {len(rows)} float matrices, {n} weights; all-bfp8 {bfp8} B "
          f"({8*bfp8/n:.3f} bpw)")
    print(f"{'PCC >=':>7} {'algorithm':<22} {'bytes':>11} {'bpw':>6} {'vs bfp8':>8} "
          f"{'vs best single':>14} {'min PCC':>10} {'seconds':>8}")
    for t in [0.99, 0.999, 0.9999]:
        best = 0
        for v in rows.values():
            ok = [v[f]["encoded_bytes"] for f in fmts if (v[f]["pcc"] or 0) >= t]
            best += min(ok) if ok else v["bf16"]["encoded_bytes"]
        print(f"{t:>7} {'best single format':<22} {best:>11} {8*best/n:>6.3f} "
              f"{100*(best/bfp8-1):>+7.1f}% {'':>14} {'':>10} {'':>8}")
        for alg, extra, seed in [("mixed-tile-threshold", {}, None), ("mixed-tile-greedy", {}, 1),
                                 ("mixed-tile-random", {"iters": 50}, 1),
                                 ("mixed-tile-optimal", {}, None)]:
            c = cfg(f"{alg}-{t}", alg, dict(extra, metric="pcc", threshold=t), seed)
            r, secs = analyze(model, ["-c", "bfp8", "--config", c, "--no-tile-vectors"])
            mixed = [x for x in r["rows"] if x["format"] == "MIXED"]
            b = sum(x["encoded_bytes"] for x in mixed)
            mn = min(x["pcc"] for x in mixed)
            print(f"{t:>7} {alg:<22} {b:>11} {8*b/n:>6.3f} {100*(b/bfp8-1):>+7.1f}% "
                  f"{100*(b/best-1):>+13.1f}% {mn:>10.6f} {secs:>8.1f}")
    for label, cands in [("bf16..fp0", fmts), ("+mxfp4,nvfp4", fmts + ["mxfp4", "nvfp4"])]:
        for scope in ["tensor", "model"]:
            c = cfg(f"budget-{scope}", "mixed-tile-optimal",
                    {"target_bpw": 4.5, "scope": scope})
            spec = json.load(open(c)); spec["params"]["formats"] = cands; json.dump(spec, open(c, "w"))
            r, secs = analyze(model, ["-c", "bfp4", "--config", c, "--no-tile-vectors"])
            agg = {}
            for x in r["rows"]:
                if x["tensor"] in rows:
                    a = agg.setdefault(x["format"], [0, 0, 0.0, 1.0])
                    p = x["pcc"] if x["pcc"] is not None else 0.0
                    a[0] += x["encoded_bytes"]; a[1] += x["numel"]; a[2] += p * x["numel"]
                    a[3] = min(a[3], p)
            (mb, mn_, mp, mmin), (bb, bn, bp, bmin) = agg["MIXED"], agg["bfp4"]
            print(f"budget 4.5 bpw, {label}, {scope} scope: MIXED {8*mb/mn_:.3f} bpw "
                  f"PCC {mp/mn_:.6f} (min {mmin:.4f}); bfp4 {8*bb/bn:.3f} bpw PCC {bp/bn:.6f} "
                  f"(min {bmin:.4f}); {secs:.1f} s")
PY
