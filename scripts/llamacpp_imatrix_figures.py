#!/usr/bin/env python3
"""llama.cpp's quantizer with an importance matrix, evaluated by llama.cpp, as the calibrated
peer of tenpak's calibrated rows (issue 16).

    python3 scripts/llamacpp_imatrix_figures.py SMOLLM2-F32.gguf CAL.safetensors CORPUS OUTDIR \
        Q4_K_M IQ4_NL ... [plain:Q4_K_M ...]

Each TYPE is quantized from the F32 GGUF by llama_model_quantize (2 threads) with the importance
matrix of CAL (tenpak calibrate's E[x^2] per input channel, measured on the corpus tokens after
the evaluation slice: the same calibration tokens as tenpak's calibrated codecs); `plain:TYPE`
quantizes without one (the anchor against eval.md's reference rows). Every model is then run by
llama.cpp over the procedure of formats-spec/eval.md (64 windows of [BOS] + 511 tokens, F16 KV
cache, NLL in float64 over the full softmax; KLD and top-1 over the first 32 windows) against
the F32 model, in the same process. Prints one JSON document.
"""
import json
import math
import os
import sys
import time

import numpy as np
from llama_cpp import Llama
import llama_cpp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llamacpp_imatrix_quantize import quantize  # noqa: E402


def logprobs(llm, win):
    llm.reset()
    llm.eval(win)
    x = np.array(llm.scores[: len(win)], dtype=np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def main():
    src, cal, corpus, outdir = sys.argv[1:5]
    types = sys.argv[5:]
    os.makedirs(outdir, exist_ok=True)
    made = []
    for t in types:
        plain = t.startswith("plain:")
        name = t.split(":", 1)[1] if plain else t
        dst = os.path.join(outdir, f"{name}{'' if plain else '-imatrix'}.gguf")
        secs = quantize(src, None if plain else cal, dst, name, 2)
        made.append((f"{name}{'' if plain else ' (imatrix)'}", dst, secs))
        print(f"quantized {t}: {secs:.2f} s", file=sys.stderr)
    ctx, nwin, kld_windows = 512, 64, 32
    tok = Llama(model_path=src, vocab_only=True, verbose=False)
    ids = tok.tokenize(open(corpus, encoding="utf-8").read().encode(), add_bos=False, special=False)
    bos = tok.token_bos()
    wins = [[bos] + ids[w * (ctx - 1): (w + 1) * (ctx - 1)] for w in range(nwin)]
    load = lambda p: Llama(model_path=p, n_ctx=ctx, n_batch=ctx, n_ubatch=ctx, logits_all=True,
                           n_threads=2, verbose=False)
    ref = load(src)
    models = [(label, load(p), p, q) for label, p, q in made]
    nll = {label: [] for label, *_ in models}
    base = []
    kl = {label: [0.0, 0, 0] for label, *_ in models}
    for w, win in enumerate(wins):
        r = logprobs(ref, win)
        tgt = np.array(win[1:])
        base.append(-r[np.arange(len(tgt)), tgt].sum())
        for label, m, _, _ in models:
            lp = logprobs(m, win)
            nll[label].append(-lp[np.arange(len(tgt)), tgt].sum())
            if w < kld_windows:
                p = np.exp(r[:-1])
                kl[label][0] += float((p * (r[:-1] - lp[:-1])).sum())
                kl[label][1] += int((r[:-1].argmax(1) == lp[:-1].argmax(1)).sum())
                kl[label][2] += len(tgt)
        print(f"window {w + 1}/{nwin}", file=sys.stderr)
    n_params = 134_515_008
    rows = []
    b = np.array(base) / (ctx - 1)
    for label, _, path, secs in models:
        per = np.array(nll[label]) / (ctx - 1)
        d = per - b
        se = d.std(ddof=1) / math.sqrt(len(d))
        ratio = math.exp(d.mean())
        size = os.path.getsize(path)
        rows.append({
            "label": label, "file_bytes": size, "bits_per_weight": size * 8 / n_params,
            "delta_ppl_pct": (ratio - 1) * 100, "delta_ppl_se_pct": ratio * se * 100,
            "kld": kl[label][0] / kl[label][2], "top1_agree_pct": 100 * kl[label][1] / kl[label][2],
            "quantize_seconds": secs,
        })
    json.dump({"generator": "scripts/llamacpp_imatrix_figures.py", "llama_cpp": llama_cpp.__version__,
               "calibration": cal, "rows": rows}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
