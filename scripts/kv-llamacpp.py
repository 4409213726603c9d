#!/usr/bin/env python3
"""llama.cpp's own KV-cache types as the peer of `tenpak eval ppl --kv` (issue 14).

The procedure of formats-spec/eval.md on SmolLM2 as an F32 GGUF (scripts/smollm2_f32_gguf.py):
64 windows of [BOS] + 511 corpus tokens (llama.cpp's tokenizer), one batch each from an empty
cache, NLL in float64 over the full softmax; KLD and top-1 over the first 32 windows against the
same model with an F32 cache. Each cache type runs with flash attention (llama.cpp needs it for a
quantized V cache), 2 threads.

    python3 scripts/kv-llamacpp.py SMOLLM2-F32.gguf CORPUS.txt [WINDOWS] > kv-llamacpp.json

Needs numpy and llama-cpp-python. Bits per cached value are the ggml block sizes (q8_0: 34 bytes
per 32 values, q4_1: 20, q4_0: 18, f16: 2 bytes per value).
"""
import json
import math
import sys
import time

import numpy as np
from llama_cpp import Llama
import llama_cpp

TYPES = [
    ("f32", llama_cpp.GGML_TYPE_F32, 32.0),
    ("f16", llama_cpp.GGML_TYPE_F16, 16.0),
    ("q8_0", llama_cpp.GGML_TYPE_Q8_0, 8.5),
    ("q4_1", llama_cpp.GGML_TYPE_Q4_1, 5.0),
    ("q4_0", llama_cpp.GGML_TYPE_Q4_0, 4.5),
]


def logprobs(llm, win):
    llm.reset()
    llm.eval(win)
    x = np.array(llm.scores[: len(win)], dtype=np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def main():
    path, corpus = sys.argv[1], sys.argv[2]
    nwin = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    ctx, kld_windows = 512, 32
    tok = Llama(model_path=path, vocab_only=True, verbose=False)
    ids = tok.tokenize(open(corpus, encoding="utf-8").read().encode(), add_bos=False, special=False)
    bos = tok.token_bos()
    wins = [[bos] + ids[w * (ctx - 1): (w + 1) * (ctx - 1)] for w in range(nwin)]
    models = {
        name: Llama(model_path=path, n_ctx=ctx, n_batch=ctx, n_ubatch=ctx, logits_all=True,
                    type_k=t, type_v=t, flash_attn=True, n_threads=2, verbose=False)
        for name, t, _ in TYPES
    }
    nll = {n: [] for n, _, _ in TYPES}
    kl = {n: [0.0, 0, 0] for n, _, _ in TYPES}
    secs = {n: 0.0 for n, _, _ in TYPES}
    for w, win in enumerate(wins):
        ref = None
        for name, _, _ in TYPES:
            t0 = time.perf_counter()
            lp = logprobs(models[name], win)
            secs[name] += time.perf_counter() - t0
            tgt = np.array(win[1:])
            nll[name].append(-lp[np.arange(len(tgt)), tgt].sum())
            if name == "f32":
                ref = lp
            elif w < kld_windows:
                p = np.exp(ref[:-1])
                kl[name][0] += float((p * (ref[:-1] - lp[:-1])).sum())
                kl[name][1] += int((ref[:-1].argmax(1) == lp[:-1].argmax(1)).sum())
                kl[name][2] += len(tgt)
        print(f"window {w + 1}/{nwin}", file=sys.stderr)
    n_tok = nwin * (ctx - 1)
    base = np.array(nll["f32"]) / (ctx - 1)
    rows = []
    for name, _, bits in TYPES:
        per = np.array(nll[name]) / (ctx - 1)
        ppl = math.exp(sum(nll[name]) / n_tok)
        d = per - base
        se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
        ratio = math.exp(d.mean())
        rows.append({
            "cache": name, "bits_per_value": bits, "ppl": ppl,
            "delta_ppl_pct": (ratio - 1) * 100, "delta_ppl_se_pct": ratio * se * 100,
            "kld": kl[name][0] / kl[name][2] if kl[name][2] else 0.0,
            "top1_agree_pct": 100 * kl[name][1] / kl[name][2] if kl[name][2] else 100.0,
            "seconds": secs[name],
        })
    json.dump({"generator": "scripts/kv-llamacpp.py", "llama_cpp": llama_cpp.__version__,
               "windows": nwin, "ctx": ctx, "rows": rows}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
