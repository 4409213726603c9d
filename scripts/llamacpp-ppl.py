#!/usr/bin/env python3
"""Perplexity of a GGUF in llama.cpp (llama-cpp-python), by formats-spec/eval.md's procedure:
windows of [BOS] + 511 corpus tokens (llama.cpp's tokenizer), each one batch from an empty cache,
NLL in float64 over the full softmax. Used by tenpak-py/tests to check that a GGUF written by
`tenpak decompress -o model.gguf` loads in llama.cpp and scores as tenpak's own `eval ppl`.

    python3 scripts/llamacpp-ppl.py MODEL.gguf CORPUS.txt [WINDOWS]   # prints JSON

Needs numpy and llama-cpp-python.
"""
import json
import math
import sys

import numpy as np


def ppl(path, corpus, windows, ctx=512, threads=2):
    """(PPL over every scored token, tokens scored) of the first `windows` windows."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=ctx, n_batch=ctx, n_ubatch=ctx, logits_all=True,
                n_threads=threads, verbose=False)
    with open(corpus, encoding="utf-8") as f:
        ids = llm.tokenize(f.read().encode(), add_bos=False, special=False)
    bos = llm.token_bos()
    nll, n = 0.0, 0
    for w in range(windows):
        win = [bos] + ids[w * (ctx - 1): (w + 1) * (ctx - 1)]
        llm.reset()
        llm.eval(win)
        x = np.array(llm.scores[: len(win)], dtype=np.float64)
        m = x.max(axis=1, keepdims=True)
        lp = x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))
        for i in range(len(win) - 1):
            nll -= lp[i, win[i + 1]]
            n += 1
    llm.close()
    return math.exp(nll / n), n


if __name__ == "__main__":
    windows = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    p, n = ppl(sys.argv[1], sys.argv[2], windows)
    print(json.dumps({"model": sys.argv[1], "windows": windows, "tokens": n, "ppl": p}))
